//! The join: `POST /wr/{q}/join`, its challenges and retries, and the cookies it leaves.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Failed, Plan, Shared, call};
use crate::metrics::Step;
use crate::net::Answer;
use crate::record::{JoinObs, VisitorRecord};

/// Answers to a join the harness works through before it gives up: a 428
/// (solve, answer), a 429 or a 503 (wait `Retry-After`) each.
const JOIN_ATTEMPTS: u32 = 8;
/// The longest `Retry-After` the harness waits out.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// `POST /wr/{q}/join` with the visitor's cookies so far (`""` for a new
/// visitor); returns the answer and the cookies after it (`wr_visitor` and
/// the queue ticket, which puts the visitor back at their place should the
/// queue's store lose the line). A 428 is answered with the solved challenge,
/// a 429 waited out, as a browser does; so is a 503 (the queue's store did
/// not answer in time: the page tries again), counted as `retried_503`.
pub(super) async fn join(
    ctx: &Shared,
    plan: &Plan,
    rec: &mut VisitorRecord,
    intended: Instant,
    cookies: &str,
) -> Result<(Value, String), Failed> {
    let client = ctx.net.client(plan.index);
    let url = ctx.url(&format!("/wr/{}/join", ctx.args.queue));
    let mut intended = intended;
    let mut body: Option<Value> = None;
    let mut attempts = 0;
    let (a, sent) = loop {
        let sent = Instant::now();
        let mut request = client.post(&url);
        if !cookies.is_empty() {
            request = request.header("cookie", cookies);
        }
        if let Some(b) = &body {
            request = request.json(b);
        }
        let a = call(ctx, Step::Join, request, intended, &[200, 428, 429, 503]).await?;
        attempts += 1;
        match a.status.as_u16() {
            200 => break (a, sent),
            _ if attempts >= JOIN_ATTEMPTS => {
                ctx.metrics.error(Step::Join, "gave_up", None);
                return Err("join:gave_up".into());
            }
            428 => {
                let started = Instant::now();
                let solved = crate::challenge::answer(&a.json()).await.map_err(|kind| {
                    ctx.metrics.error(Step::Challenge, kind, None);
                    format!("challenge:{kind}")
                })?;
                ctx.metrics.record(Step::Challenge, started.elapsed(), &format!("bits:{}", solved.difficulty));
                rec.challenges += 1;
                rec.hashes += solved.hashes;
                body = Some(solved.body);
            }
            503 => {
                // The wait is the visitor's: the join's latency keeps
                // counting from the first attempt.
                ctx.metrics.count(Step::Join, "retried_503");
                tokio::time::sleep(retry_after(&a)).await;
                continue;
            }
            _ => tokio::time::sleep(retry_after(&a)).await,
        }
        intended = Instant::now();
    };
    let received = Instant::now();
    let cookie = merge_cookies(cookies, a.headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()));
    let m = a.json();
    match m["status"].as_str() {
        // Waiting in some form: in line, in a pre-queue, not open yet, or the
        // queue not available for now (the wait loops handle each).
        Some("READY" | "WAITING" | "PREQUEUE" | "SCHEDULED" | "UNAVAILABLE") => {}
        Some("CLOSED") => {
            ctx.metrics.error(Step::Join, "answer:CLOSED", None);
            return Err("join:closed".into());
        }
        // Nothing left to sell: this visitor is done (the sale's outcome, not
        // a failure of the room; the caller stops).
        Some("SOLD_OUT") => {}
        other => {
            ctx.metrics.error(Step::Join, &format!("answer:{}", other.unwrap_or("not_json")), None);
            return Err("join:unexpected_answer".into());
        }
    }
    if !cookie.split("; ").any(|c| c.starts_with("wr_visitor=")) && m["status"] == "WAITING" {
        ctx.metrics.error(Step::Join, "no_visitor_cookie", None);
        return Err("join:no_visitor_cookie".into());
    }
    let position = m["position"].as_u64();
    if rec.join.is_none() {
        rec.join = Some(JoinObs { sent_ns: ctx.ns(sent), received_ns: ctx.ns(received), position });
    }
    rec.saw_standing(&m);
    Ok((m, cookie))
}

/// How long an answer asks to wait (`Retry-After` in seconds; 1 s if it
/// does not say), at most [`MAX_RETRY_AFTER`].
pub(super) fn retry_after(a: &Answer) -> Duration {
    a.headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs)
        .min(MAX_RETRY_AFTER)
}

/// The `Cookie` header after a join: `sent` with the visitor and ticket
/// cookies of the answer's `Set-Cookie` values replacing theirs.
pub(super) fn merge_cookies<'a>(sent: &str, set: impl Iterator<Item = &'a str>) -> String {
    let mut pairs: Vec<(String, String)> =
        sent.split(';').filter_map(|p| p.trim().split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    for value in set {
        let Some((k, v)) = value.split(';').next().and_then(|p| p.trim().split_once('=')) else { continue };
        if k == "wr_visitor" || k.starts_with("wr_ticket_") {
            pairs.retain(|(name, _)| name != k);
            pairs.push((k.to_owned(), v.to_owned()));
        }
    }
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
}
