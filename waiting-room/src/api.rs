//! The queue API under the reserved prefix `/wr`:
//!
//! ```text
//! GET  /wr/healthz          200 when the store answers, 503 otherwise
//! GET  /wr/{q}              the queue page
//! POST /wr/{q}/join         join (idempotent) -> WAITING or READY
//! GET  /wr/{q}/status       where the visitor stands (polling fallback)
//! GET  /wr/{q}/ws           WebSocket pushing the same messages
//! ```
//!
//! Every error is `application/problem+json` with a `detail` a person can act
//! on; a malformed visitor cookie is ignored, never an error.

use pingora::prelude::Session;
use serde::Serialize;
use shared::problem::Problem;
use shared::visitor::VisitorId;

use crate::http::{Reply, header_str, query_param, set_cookie};
use crate::identity;
use crate::metrics::METRICS;
use crate::page;
use crate::queues::Queue;
use crate::state::{State, now_ms};
use crate::store::{JoinKind, Standing};
use crate::tokens::Issued;

/// Largest request body the queue API accepts (it expects none).
pub const MAX_BODY: usize = 4096;

/// A route under `/wr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/wr/healthz`
    Health,
    /// `/wr/{q}`
    Page(&'a str),
    /// `/wr/{q}/join`
    Join(&'a str),
    /// `/wr/{q}/status`
    Status(&'a str),
    /// `/wr/{q}/ws`
    Socket(&'a str),
    /// Anything else under `/wr`.
    Unknown,
}

impl Route<'_> {
    /// Label for metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Route::Health => "healthz",
            Route::Page(_) => "page",
            Route::Join(_) => "join",
            Route::Status(_) => "status",
            Route::Socket(_) => "ws",
            Route::Unknown => "unknown",
        }
    }
}

/// Parse a path under `/wr`.
pub fn route(path: &str) -> Route<'_> {
    let rest = path.strip_prefix("/wr").unwrap_or("").trim_end_matches('/');
    let mut parts = rest.strip_prefix('/').unwrap_or(rest).split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("healthz"), None, None) => Route::Health,
        (Some(q), None, None) if !q.is_empty() => Route::Page(q),
        (Some(q), Some("join"), None) => Route::Join(q),
        (Some(q), Some("status"), None) => Route::Status(q),
        (Some(q), Some("ws"), None) => Route::Socket(q),
        _ => Route::Unknown,
    }
}

/// What the queue API and the WebSocket tell a visitor about their standing.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatusMessage {
    /// `WAITING`, `READY` or `NOT_IN_QUEUE`.
    pub status: &'static str,
    /// Queue id.
    pub queue: String,
    /// 1 + visitors ahead (WAITING).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// Visitors in line (WAITING).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_length: Option<u64>,
    /// Estimated seconds until admission (WAITING).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<u64>,
    /// How long a polling client should wait before asking again (WAITING).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
    /// Releases are paused by the operator (WAITING).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// The entry token and its times (READY).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub entry: Option<Issued>,
    /// Where to join (NOT_IN_QUEUE).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_url: Option<String>,
}

/// Polling interval for a visitor `eta` seconds from the front: every 2 s near
/// the front, growing to 30 s for visitors far back.
pub fn retry_after(eta: u64) -> u64 {
    (eta / 10).clamp(2, 30)
}

/// The message for a standing (signing the token when READY).
pub fn message(state: &State, queue: &Queue, visitor: VisitorId, standing: Standing, now_ms: i64) -> StatusMessage {
    let mut m = StatusMessage {
        status: "NOT_IN_QUEUE",
        queue: queue.id().to_owned(),
        position: None,
        queue_length: None,
        eta_seconds: None,
        retry_after_seconds: None,
        paused: false,
        entry: None,
        join_url: None,
    };
    match standing {
        Standing::Waiting { position, waiting } => {
            let eta = queue.eta_seconds(position, now_ms);
            m.status = "WAITING";
            m.position = Some(position);
            m.queue_length = Some(waiting);
            m.eta_seconds = Some(eta);
            m.retry_after_seconds = Some(retry_after(eta));
            m.paused = queue.paused();
        }
        Standing::Ready { .. } => match state.issue(queue, visitor, standing, now_ms) {
            Some(issued) => {
                m.status = "READY";
                m.entry = Some(issued);
            }
            None => m.join_url = Some(join_url(queue.id())),
        },
        Standing::NotInQueue => m.join_url = Some(join_url(queue.id())),
    }
    m
}

/// Where to join `queue`.
pub fn join_url(queue: &str) -> String {
    format!("/wr/{queue}/join")
}

fn method_not_allowed(allow: &'static str) -> Reply {
    Reply::error(405, format!("this endpoint accepts {allow} only")).header("allow", allow)
}

fn store_down() -> Reply {
    Reply::error(503, "the queue store is not answering; retry in a few seconds").header("retry-after", "2")
}

/// Reply to a standing: the message as JSON, plus the entry cookie when READY.
fn standing_reply(state: &State, queue: &Queue, visitor: VisitorId, standing: Standing) -> Reply {
    let m = message(state, queue, visitor, standing, now_ms());
    let cookie =
        m.entry.as_ref().map(|e| set_cookie(shared::ENTRY_COOKIE, &e.token, Some(e.max_age), state.cookie_secure));
    let mut reply = Reply::json(200, &m).no_store();
    if let Some(c) = cookie {
        reply = reply.header("set-cookie", c);
    }
    reply
}

/// Read (and discard) a request body, refusing more than [`MAX_BODY`] bytes.
async fn drain_body(session: &mut Session) -> Result<(), Reply> {
    let too_big =
        || Reply::error(400, format!("request body too large: this endpoint takes no body (limit {MAX_BODY} bytes)"));
    if header_str(session, "content-length").and_then(|v| v.trim().parse::<usize>().ok()).is_some_and(|n| n > MAX_BODY)
    {
        return Err(too_big());
    }
    let mut read = 0usize;
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                read += chunk.len();
                if read > MAX_BODY {
                    return Err(too_big());
                }
            }
            Ok(None) => return Ok(()),
            Err(_) => return Err(Reply::error(400, "malformed request body")),
        }
    }
}

/// Answer a request under `/wr` (all routes but the WebSocket).
pub async fn handle(state: &State, session: &mut Session, route: Route<'_>) -> Reply {
    let method = session.req_header().method.clone();
    let is_get = method == http::Method::GET || method == http::Method::HEAD;
    let queue = match route {
        Route::Health => {
            if !is_get {
                return method_not_allowed("GET, HEAD");
            }
            return match state.store() {
                Some(s) if s.ping().await.is_ok() => Reply::json(200, &serde_json::json!({"status": "ok"})).no_store(),
                _ => Reply::problem(Problem::new(503, "the queue store is not answering")).no_store(),
            };
        }
        Route::Unknown => {
            return Reply::error(
                404,
                "no such waiting-room endpoint; use /wr/{queue}, /wr/{queue}/join, /wr/{queue}/status or /wr/{queue}/ws",
            );
        }
        Route::Page(q) | Route::Join(q) | Route::Status(q) | Route::Socket(q) => match state.queues.by_id(q) {
            Some(queue) => queue.clone(),
            None => {
                let known: Vec<&str> = state.queues.all().iter().map(|q| q.id()).collect();
                return Reply::problem(
                    Problem::new(404, format!("there is no queue named {q:?}; known queues: {}", known.join(", ")))
                        .with("queue", q),
                );
            }
        },
    };
    if let Err(reply) = drain_body(session).await {
        session.set_keepalive(None);
        return reply;
    }
    let Some(store) = state.store() else { return store_down() };
    let params = queue.params();
    match route {
        Route::Join(_) => {
            if method != http::Method::POST {
                return method_not_allowed("POST");
            }
            let who = identity::identify(session, &state.keys.cookies, state.cookie_secure);
            match store.join(queue.id(), who.visitor, &params).await {
                Ok((standing, kind)) => {
                    let outcome = match kind {
                        JoinKind::Joined => "waiting",
                        JoinKind::FreeEntry => "free_entry",
                        JoinKind::Existing => "existing",
                        JoinKind::Rejoined => "rejoined",
                    };
                    METRICS.joins.with_label_values(&[queue.id(), outcome]).inc();
                    if kind == JoinKind::FreeEntry {
                        METRICS.admissions.with_label_values(&[queue.id(), "free_entry"]).inc();
                    }
                    let reply = standing_reply(state, &queue, who.visitor, standing);
                    match who.set_cookie {
                        Some(c) => reply.header("set-cookie", c),
                        None => reply,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, queue = queue.id(), "join failed");
                    METRICS.store_errors.with_label_values(&["join"]).inc();
                    store_down()
                }
            }
        }
        Route::Status(_) => {
            if !is_get {
                return method_not_allowed("GET, HEAD");
            }
            let Some(visitor) = identity::existing(session, &state.keys.cookies) else {
                return standing_reply(state, &queue, VisitorId::from_bytes([0; 16]), Standing::NotInQueue);
            };
            match store.status(queue.id(), visitor, &params).await {
                Ok(standing) => standing_reply(state, &queue, visitor, standing),
                Err(e) => {
                    tracing::warn!(error = %e, queue = queue.id(), "status failed");
                    METRICS.store_errors.with_label_values(&["status"]).inc();
                    store_down()
                }
            }
        }
        Route::Page(_) => {
            if !is_get {
                return method_not_allowed("GET, HEAD");
            }
            let return_to = page::safe_return_to(query_param(session.req_header().uri.query(), "return_to").as_deref());
            let who = identity::identify(session, &state.keys.cookies, state.cookie_secure);
            // The page joins the visitor: arriving at the queue page is asking for a place.
            let standing = match store.join(queue.id(), who.visitor, &params).await {
                Ok((standing, kind)) => {
                    if kind == JoinKind::FreeEntry {
                        METRICS.admissions.with_label_values(&[queue.id(), "free_entry"]).inc();
                    }
                    standing
                }
                Err(e) => {
                    tracing::warn!(error = %e, queue = queue.id(), "join from page failed");
                    return store_down();
                }
            };
            let m = message(state, &queue, who.visitor, standing, now_ms());
            let mut reply = Reply::html(200, page::render(&queue, &m, &return_to)).no_store();
            if let Some(e) = &m.entry {
                reply = reply.header(
                    "set-cookie",
                    set_cookie(shared::ENTRY_COOKIE, &e.token, Some(e.max_age), state.cookie_secure),
                );
            }
            if let Some(c) = who.set_cookie {
                reply = reply.header("set-cookie", c);
            }
            reply
        }
        Route::Socket(_) => Reply::error(426, "this endpoint is a WebSocket: send GET with Upgrade: websocket")
            .header("upgrade", "websocket"),
        Route::Health | Route::Unknown => Reply::error(404, "not found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_and_unknown_paths_are_unknown() {
        assert_eq!(route("/wr/healthz"), Route::Health);
        assert_eq!(route("/wr/q1"), Route::Page("q1"));
        assert_eq!(route("/wr/q1/"), Route::Page("q1"));
        assert_eq!(route("/wr/q1/join"), Route::Join("q1"));
        assert_eq!(route("/wr/q1/status"), Route::Status("q1"));
        assert_eq!(route("/wr/q1/ws"), Route::Socket("q1"));
        assert_eq!(route("/wr"), Route::Unknown);
        assert_eq!(route("/wr/q1/join/x"), Route::Unknown);
        assert_eq!(route("/wr/q1/nope"), Route::Unknown);
    }

    #[test]
    fn pollers_far_back_are_asked_to_wait_longer() {
        assert_eq!(retry_after(0), 2);
        assert_eq!(retry_after(100), 10);
        assert_eq!(retry_after(10_000), 30);
    }
}
