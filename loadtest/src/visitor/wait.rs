//! Waiting in line until READY: on the WebSocket, or by polling `/status`.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::join::{join, retry_after};
use super::{Failed, Plan, Shared, call};
use crate::metrics::{Live, Step};
use crate::record::VisitorRecord;

/// How waiting ended.
pub(super) enum Waited {
    /// The READY message.
    Ready(Value),
    /// The visitor left on purpose.
    Left,
    /// Told SOLD_OUT: nothing left to wait for.
    SoldOut,
    /// `--max-wait` passed.
    TimedOut,
    /// The socket could not be used: poll from here (the last standing seen).
    Fallback(Value),
}

/// Sleep until `at` (or forever).
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Wait on `/wr/{q}/ws` until READY.
pub(super) async fn wait_on_socket(
    ctx: &Shared,
    plan: &Plan,
    rec: &mut VisitorRecord,
    cookie: &str,
    joined: Instant,
    deadline: Instant,
    leave_at: Option<Instant>,
) -> Waited {
    let url = ctx.url(&format!("/wr/{}/ws", ctx.args.queue)).replacen("http://", "ws://", 1);
    let mut socket = match ctx.net.websocket(plan.index, &url, cookie).await {
        Ok(s) => s,
        Err(e) => {
            ctx.metrics.error(Step::WsFirst, &e.kind(), None);
            return Waited::Fallback(Value::Null);
        }
    };
    Live::inc(&ctx.metrics.live.sockets);
    rec.on_socket = true;
    let mut first = true;
    let mut last = Value::Null;
    let outcome = loop {
        let message = tokio::select! {
            m = socket.next() => m,
            _ = until(leave_at) => break Waited::Left,
            _ = tokio::time::sleep_until(deadline.into()) => break Waited::TimedOut,
        };
        let text = match message {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | None => {
                ctx.metrics.error(
                    Step::WsFirst,
                    if first { "closed_before_first" } else { "closed_before_ready" },
                    None,
                );
                break Waited::Fallback(last);
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) => {
                ctx.metrics.error(Step::WsFirst, "socket_error", None);
                break Waited::Fallback(last);
            }
        };
        let m: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
        if first {
            ctx.metrics.record(Step::WsFirst, joined.elapsed(), m["status"].as_str().unwrap_or("not_json"));
            first = false;
        }
        match m["status"].as_str() {
            Some("READY") => break Waited::Ready(m),
            // The line, the pre-queue, or a queue not available for now: the
            // socket brings the next standing.
            Some("WAITING" | "PREQUEUE" | "UNAVAILABLE") => {
                rec.saw_standing(&m);
                last = m;
            }
            Some("SOLD_OUT") => {
                rec.sold_out_ns = Some(ctx.ns(Instant::now()));
                rec.sold_out_on_socket = true;
                break Waited::SoldOut;
            }
            // NOT_IN_QUEUE (the place lapsed, or the store lost the line) or
            // garbage: polling rejoins, with the queue ticket.
            _ => break Waited::Fallback(m),
        }
    };
    Live::dec(&ctx.metrics.live.sockets);
    rec.on_socket = false;
    // Let the normal close (after READY) finish without holding up the booking.
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
    });
    outcome
}

/// Poll `/wr/{q}/status` until READY, honouring `retry_after_seconds`.
pub(super) async fn wait_polling(
    ctx: &Shared,
    plan: &Plan,
    rec: &mut VisitorRecord,
    cookie: &str,
    mut standing: Value,
    deadline: Instant,
    leave_at: Option<Instant>,
) -> Result<Waited, Failed> {
    let client = ctx.net.client(plan.index);
    let url = ctx.url(&format!("/wr/{}/status", ctx.args.queue));
    let mut cookie = cookie.to_owned();
    loop {
        match standing["status"].as_str() {
            Some("READY") => return Ok(Waited::Ready(standing)),
            Some("WAITING" | "PREQUEUE" | "UNAVAILABLE") => {}
            Some("CLOSED") => return Err("wait:closed".into()),
            Some("SOLD_OUT") => {
                rec.sold_out_ns = Some(ctx.ns(Instant::now()));
                return Ok(Waited::SoldOut);
            }
            // Not open yet: join again once it opens (the answer says when).
            Some("SCHEDULED") => {
                let wait = Duration::from_secs(standing["retry_after_seconds"].as_u64().unwrap_or(2).max(1));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = until(leave_at) => return Ok(Waited::Left),
                    _ = tokio::time::sleep_until(deadline.into()) => return Ok(Waited::TimedOut),
                }
                let (m, c) = join(ctx, plan, rec, Instant::now(), &cookie).await?;
                cookie = c;
                standing = m;
                continue;
            }
            _ => {
                // Lost the place (or never had one): join again, at the back.
                rec.rejoined = true;
                rec.last_position = None;
                let (m, c) = join(ctx, plan, rec, Instant::now(), &cookie).await?;
                cookie = c;
                standing = m;
                continue;
            }
        }
        let wait = Duration::from_secs(standing["retry_after_seconds"].as_u64().unwrap_or(2).max(1));
        let next = Instant::now() + wait;
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = until(leave_at) => return Ok(Waited::Left),
            _ = tokio::time::sleep_until(deadline.into()) => return Ok(Waited::TimedOut),
        }
        let a = call(ctx, Step::Poll, client.get(&url).header("cookie", &cookie), next, &[200, 503]).await?;
        if a.status == 503 {
            // The queue's store did not answer in time: ask again after
            // its Retry-After, as the page does; the place is kept meanwhile.
            ctx.metrics.count(Step::Poll, "retried_503");
            tokio::select! {
                _ = tokio::time::sleep(retry_after(&a)) => {}
                _ = until(leave_at) => return Ok(Waited::Left),
                _ = tokio::time::sleep_until(deadline.into()) => return Ok(Waited::TimedOut),
            }
            continue;
        }
        standing = a.json();
        rec.saw_standing(&standing);
    }
}
