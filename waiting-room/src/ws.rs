//! The WebSocket at `GET /wr/{q}/ws`, on the proxy's own port so the visitor
//! cookie applies.
//!
//! The handshake is answered inside `request_filter`; the downstream HTTP/1.1
//! stream is then taken out of Pingora's session (a placeholder session is left
//! behind for Pingora to finish) and handed to a task of its own, so a waiting
//! visitor costs one small task, not a whole proxy request.
//!
//! Protocol: the server sends a JSON [`StatusMessage`](crate::standing::StatusMessage)
//! on connect and after every change; READY carries the token, after which the
//! socket closes normally. The server pings every `server.ws_ping_interval`
//! (15 s by default, at most 20 s) and closes peers silent for two intervals. Client text frames up to 4 KiB are accepted
//! and ignored; larger frames, binary frames and anything unexpected close the
//! socket with 1008 (policy violation); bytes that are not a valid client
//! frame (garbage, unmasked frames) close it with 1002 (protocol error).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use pingora::protocols::Stream;
use pingora::protocols::http::ServerSession;
use pingora::proxy::Session;
use shared::visitor::VisitorId;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::client::ClientKey;
use crate::clock::now_ms;
use crate::drain::Tracked;
use crate::join::Refusal;
use crate::limits::{HeldGuard, Refused};
use crate::metrics::METRICS;
use crate::problem::{Failure, unknown_queue};
use crate::reply::{Reply, header_str};
use crate::sockets::{Registration, Slot};
use crate::standing::{QueueStatus, StatusMessage};
use crate::store::Standing;

/// Reason of the 1001 close sent when this instance shuts down; the queue
/// page reconnects on it (to any instance) and keeps its place.
pub const RESTARTING: &str = "server restarting; reconnect";

/// Largest client frame or message accepted.
pub const MAX_CLIENT_FRAME: usize = 4096;

/// Why an upgrade request was refused.
pub fn check_upgrade(session: &Session) -> Result<String, Reply> {
    let req = session.req_header();
    let needs = || Failure::NotAnUpgrade.reply();
    if req.method != http::Method::GET {
        return Err(Reply::error(405, "the WebSocket endpoint accepts GET only").header("allow", "GET"));
    }
    if session.is_http2() {
        return Err(needs());
    }
    let has_token = |name: &str, token: &str| {
        req.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err(needs());
    }
    if header_str(session, "sec-websocket-version") != Some("13") {
        return Err(needs().header("sec-websocket-version", "13"));
    }
    match header_str(session, "sec-websocket-key") {
        Some(key) if !key.is_empty() && key.len() <= 64 => Ok(derive_accept_key(key.as_bytes())),
        _ => Err(Failure::BadHandshake.reply()),
    }
}

/// A finished placeholder request Pingora can wind down in place of the
/// session whose stream was taken.
async fn placeholder() -> Box<ServerSession> {
    let raw = b"GET / HTTP/1.1\r\nHost: placeholder\r\nConnection: close\r\n\r\n".to_vec();
    let mut s = ServerSession::new_http1(Box::new(std::io::Cursor::new(raw)));
    // Reading from an in-memory request cannot fail; if it did, Pingora would
    // just log a failed request.
    let _ = s.read_request().await;
    Box::new(s)
}

/// Write the 101 and take the raw stream out of the session. Bytes a client
/// sent before reading the 101 stay in Pingora's request buffer and are
/// dropped; RFC 6455 §4.1 requires clients to wait for the response first.
pub async fn take_over(session: &mut Session, accept: &str, set_cookies: Vec<String>) -> Option<Stream> {
    if !matches!(&*session.downstream_session, ServerSession::H1(_)) {
        return None;
    }
    let real = std::mem::replace(&mut session.downstream_session, placeholder().await);
    let ServerSession::H1(h1) = *real else { return None };
    let mut stream = h1.into_inner();
    let mut head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    for c in set_cookies {
        head.push_str(&format!("Set-Cookie: {c}\r\n"));
    }
    head.push_str("\r\n");
    use tokio::io::AsyncWriteExt;
    stream.write_all(head.as_bytes()).await.ok()?;
    stream.flush().await.ok()?;
    Some(stream)
}

fn config() -> WebSocketConfig {
    // Small buffers: a waiting visitor should cost a few KiB, not hundreds.
    WebSocketConfig::default()
        .read_buffer_size(2048)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(MAX_CLIENT_FRAME))
        .max_frame_size(Some(MAX_CLIENT_FRAME))
}

fn close(code: CloseCode, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: reason.into() }))
}

/// What a connection holds until it closes: its place in the hub and its
/// share of the client's WebSocket budget.
pub struct Held {
    registration: Registration,
    budget: Option<HeldGuard>,
    tracked: Tracked,
    draining: tokio::sync::watch::Receiver<bool>,
}

/// Serve one connection until it closes.
pub async fn serve(stream: Stream, held: Held, mut slot: Slot, initial: StatusMessage, ping_every: Duration) {
    let mut ws = WebSocketStream::from_raw_socket(stream, Role::Server, Some(config())).await;
    let Held { registration, budget, tracked, mut draining } = held;
    let _held = (registration, budget, tracked);
    let initial_json = serde_json::to_string(&initial).unwrap_or_default();
    if ws.send(Message::text(initial_json)).await.is_err() {
        return;
    }
    METRICS.ws_messages.inc();
    if initial.entry.is_some() {
        let _ = ws.send(close(CloseCode::Normal, "admitted")).await;
        return;
    }
    if *draining.borrow_and_update() {
        let _ = ws.send(close(CloseCode::Away, RESTARTING)).await;
        return;
    }
    let mut last_position = initial.position.unwrap_or(u64::MAX);
    let mut heard = Instant::now();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    loop {
        tokio::select! {
            changed = slot.changed() => {
                if changed.is_err() {
                    // The queue was deleted (its last update, CLOSED, was sent).
                    let _ = ws.send(close(CloseCode::Normal, "the queue was closed")).await;
                    break;
                }
                let Some(update) = slot.borrow_and_update().clone() else { continue };
                // While waiting, a position never goes up: an update computed
                // before a newer one already sent is dropped.
                if let Some(p) = update.position {
                    if p > last_position {
                        continue;
                    }
                    last_position = p;
                }
                if ws.send(Message::text(update.json.clone())).await.is_err() {
                    break;
                }
                METRICS.ws_messages.inc();
                METRICS.push_delay.observe(((now_ms() - update.tick_ms).max(0) as f64) / 1000.0);
                if update.ready {
                    let _ = ws.send(close(CloseCode::Normal, "admitted")).await;
                    break;
                }
            }
            frame = ws.next() => {
                match frame {
                    Some(Ok(Message::Text(t))) if t.len() <= MAX_CLIENT_FRAME => heard = Instant::now(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => heard = Instant::now(),
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Ok(Message::Binary(_))) => {
                        let _ = ws.send(close(CloseCode::Policy, "binary frames are not accepted")).await;
                        break;
                    }
                    Some(Ok(_)) | Some(Err(WsError::Capacity(_))) => {
                        let _ = ws.send(close(CloseCode::Policy, "frames are limited to 4 KiB")).await;
                        break;
                    }
                    Some(Err(WsError::Protocol(_))) => {
                        let _ = ws.send(close(CloseCode::Protocol, "not a valid WebSocket frame")).await;
                        break;
                    }
                    Some(Err(_)) => break,
                }
            }
            changed = draining.changed() => {
                if changed.is_ok() && !*draining.borrow_and_update() {
                    continue;
                }
                // A deploy: this instance goes away, the place does not.
                let _ = ws.send(close(CloseCode::Away, RESTARTING)).await;
                break;
            }
            _ = ping.tick() => {
                if heard.elapsed() > ping_every * 2 {
                    let _ = ws.send(close(CloseCode::Away, "no answer to pings")).await;
                    break;
                }
                if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// Spawn the connection task.
pub fn spawn(stream: Stream, held: Held, slot: Slot, initial: StatusMessage, ping_every: Duration) {
    tokio::spawn(serve(stream, held, slot, initial, ping_every));
}

/// Shared entry point from the proxy: validate, register, join, answer 101,
/// take over. Returns the reply to send instead when the upgrade is refused.
pub async fn handle(state: &Arc<crate::state::State>, session: &mut Session, queue_id: &str) -> Result<(), Reply> {
    let accept = check_upgrade(session)?;
    let Some(queue) = state.queues.by_id(queue_id) else {
        return Err(unknown_queue(&state.queues, queue_id));
    };
    if !state.policy.origin(header_str(session, "origin"), header_str(session, "host")) {
        Refused::Origin.count();
        return Err(Reply::error(
            403,
            "this page's origin may not open the queue WebSocket; open the queue page on this site instead",
        ));
    }
    let client = ClientKey::from(state.client_of(session));
    let Some(budget) = state.limits.websockets.acquire(client) else {
        Refused::ClientWebsockets.count();
        return Err(Reply::error(
            429,
            format!(
                "too many queue WebSockets are open from your address (limit {}); close one, or poll /wr/{queue_id}/status",
                state.limits.config.max_websockets_per_client
            ),
        )
        .header("retry-after", "5"));
    };
    let Some(store) = state.store() else {
        return Err(Failure::StoreDown.reply());
    };
    let prepared = match crate::join::prepare(state, session, &queue, None) {
        Ok(prepared) => prepared,
        Err(Refusal::Challenge { challenge, .. }) => {
            return challenge_socket(state, session, &queue, &accept, &challenge, budget).await;
        }
        Err(Refusal::Schedule(m)) => {
            let reason = match m.status {
                QueueStatus::Closed => "the sale is closed",
                QueueStatus::Unavailable => "the queue is not available",
                QueueStatus::SoldOut => "sold out",
                _ => "the queue is not open yet",
            };
            return one_message(session, &accept, &m, reason, budget).await;
        }
        Err(refusal) => return Err(refusal.reply(queue.id())),
    };
    // Register before joining: a tick between the two still reaches this socket.
    let Some((registration, slot)) = state.hub.register(queue.id(), prepared.visitor) else {
        return Err(unknown_queue(&state.queues, queue_id));
    };
    let joined = match prepared.join(state, &queue, store.as_ref()).await {
        Ok(joined) => joined,
        Err(Refusal::Challenge { challenge, .. }) => {
            drop(registration);
            return challenge_socket(state, session, &queue, &accept, &challenge, budget).await;
        }
        Err(refusal) => return Err(refusal.reply(queue.id())),
    };
    let mut initial = crate::standing::message(&state.keys.signer, &queue, joined.visitor, joined.standing, now_ms());
    initial.ticket = joined.ticket.clone();
    match take_over(session, &accept, joined.set_cookies(queue.id(), state.cookie_secure)).await {
        Some(stream) => {
            let held = Held { registration, budget, tracked: state.drain.track(), draining: state.drain.watch() };
            spawn(stream, held, slot, initial, state.ws_ping_interval);
            Ok(())
        }
        None => Err(Reply::error(400, "WebSockets need HTTP/1.1")),
    }
}

/// A visitor without a place on a queue that asks for a proof of work: one
/// NOT_IN_QUEUE message carrying the challenge, then a normal close (a
/// WebSocket cannot carry the answer; the page posts it to `join` and
/// connects again). A refused handshake would hide the reason from a
/// browser's script.
async fn challenge_socket(
    state: &crate::state::State,
    session: &mut Session,
    queue: &crate::queues::Queue,
    accept: &str,
    challenge: &crate::challenge::Challenge,
    budget: Option<HeldGuard>,
) -> Result<(), Reply> {
    let mut m = crate::standing::message(
        &state.keys.signer,
        queue,
        VisitorId::from_bytes([0; 16]),
        Standing::NotInQueue,
        now_ms(),
    );
    m.challenge = Some(challenge.into());
    one_message(session, accept, &m, "solve the challenge, then join", budget).await
}

/// Accept the upgrade, send `m`, close normally with `reason`: for a
/// visitor the socket cannot serve yet (a challenge to solve, a queue not
/// open or closed), who should still hear why (a refused handshake would
/// hide the reason from a browser's script).
async fn one_message(
    session: &mut Session,
    accept: &str,
    m: &StatusMessage,
    reason: &'static str,
    budget: Option<HeldGuard>,
) -> Result<(), Reply> {
    let Some(stream) = take_over(session, accept, Vec::new()).await else {
        return Err(Reply::error(400, "WebSockets need HTTP/1.1"));
    };
    let text = serde_json::to_string(m).unwrap_or_default();
    tokio::spawn(async move {
        let _budget = budget;
        let mut ws = WebSocketStream::from_raw_socket(stream, Role::Server, Some(config())).await;
        if ws.send(Message::text(text)).await.is_ok() {
            METRICS.ws_messages.inc();
            let _ = ws.send(close(CloseCode::Normal, reason)).await;
            // Wait (briefly) for the client's close so the close handshake completes.
            let _ = tokio::time::timeout(Duration::from_secs(5), async { while ws.next().await.is_some() {} }).await;
        }
    });
    Ok(())
}
