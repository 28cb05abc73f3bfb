//! The queue API under the reserved prefix `/wr`:
//!
//! ```text
//! GET  /wr/healthz          200 when the store answers, 503 otherwise
//! GET  /wr/{q}              the queue page
//! POST /wr/{q}/join         join (idempotent) -> WAITING or READY
//! GET  /wr/{q}/status       where the visitor stands (polling fallback)
//! GET  /wr/{q}/ws           WebSocket pushing the same messages
//! GET  /wr/openapi.json     the OpenAPI document of these routes
//! ```
//!
//! Every error is `application/problem+json` with a `detail` a person can act
//! on; a malformed visitor cookie is ignored, never an error. Joins (page,
//! join, WebSocket) go through [`crate::join`]: per-client budgets (429), the
//! places cap (429) and, on queues with `challenge = "pow"`, the proof of
//! work (428).
//!
//! Each route is one function carrying its `#[utoipa::path]` documentation, so
//! the document ([`crate::openapi`]) is generated from the code
//! [`crate::routes::handle`] runs.

use std::sync::Arc;

use pingora::prelude::Session;
use serde::Serialize;
use shared::problem::Problem;
use shared::visitor::VisitorId;

use crate::challenge::{Answer, ChallengeBody};
use crate::clock::now_ms;
use crate::identity;
use crate::join::{self, Refusal};
use crate::metrics::METRICS;
use crate::page;
use crate::problem::{Failure, MAX_BODY, unknown_queue};
use crate::queues::Queue;
use crate::reply::{Reply, header_str, is_get, query_param, set_cookie};
use crate::standing::{StatusMessage, message};
use crate::state::State;
use crate::store::{JoinKind, QueueStore, Standing};

/// Body of `GET /wr/livez`, `/wr/readyz` and `/wr/healthz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`; from readiness `degraded` while the queue store does not answer.
    #[schema(value_type = String, example = "ok")]
    pub status: &'static str,
}

/// Reply to a standing: the message as JSON, plus the entry cookie when READY.
fn standing_reply(state: &State, queue: &Queue, visitor: VisitorId, standing: Standing) -> Reply {
    standing_reply_with(state, queue, visitor, standing, None)
}

/// [`standing_reply`] carrying a join's queue ticket.
fn standing_reply_with(
    state: &State,
    queue: &Queue,
    visitor: VisitorId,
    standing: Standing,
    ticket: Option<String>,
) -> Reply {
    let mut m = message(&state.keys.signer, queue, visitor, standing, now_ms());
    m.ticket = ticket;
    let cookie =
        m.entry.as_ref().map(|e| set_cookie(shared::ENTRY_COOKIE, &e.token, Some(e.max_age), state.cookie_secure));
    let mut reply = Reply::json(200, &m).no_store();
    if let Some(c) = cookie {
        reply = reply.header("set-cookie", c);
    }
    reply
}

/// Read a request body, refusing more than [`MAX_BODY`] bytes.
async fn read_body(session: &mut Session) -> Result<Vec<u8>, Reply> {
    if header_str(session, "content-length").and_then(|v| v.trim().parse::<usize>().ok()).is_some_and(|n| n > MAX_BODY)
    {
        return Err(Failure::BodyTooLarge.reply());
    }
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(Failure::BodyTooLarge.reply());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(_) => return Err(Failure::MalformedBody.reply()),
        }
    }
}

/// The queue named `q`, the store and the request body (read whole).
async fn prepare(
    state: &State,
    session: &mut Session,
    q: &str,
) -> Result<(Arc<Queue>, Arc<dyn QueueStore>, Vec<u8>), Reply> {
    let Some(queue) = state.queues.by_id(q) else {
        return Err(unknown_queue(&state.queues, q));
    };
    let body = match read_body(session).await {
        Ok(body) => body,
        Err(reply) => {
            session.set_keepalive(None);
            return Err(reply);
        }
    };
    let Some(store) = state.store() else { return Err(Failure::StoreDown.reply()) };
    Ok((queue, store.clone(), body))
}

/// Longest a readiness answer takes, whatever the store does: a load
/// balancer's health check must not time out on a frozen Redis.
pub const READY_WITHIN: std::time::Duration = std::time::Duration::from_millis(400);

/// Whether the queue store answers (and this instance is not shutting down):
/// for a check that wants to know about the store. Answered within 400 ms
/// whatever the store does.
#[utoipa::path(get, path = "/wr/healthz", tag = "queue",
    responses(
        (status = 200, description = "The queue store answers", body = Health),
        (status = 503, response = crate::problem::doc::NotReady),
    )
)]
pub async fn healthz(state: &State, session: &Session) -> Reply {
    if let Some(refused) = not_a_health_check(state, session) {
        return refused;
    }
    if store_answers(state).await {
        Reply::json(200, &Health { status: "ok" }).no_store()
    } else {
        Failure::StoreDown.reply().no_store()
    }
}

/// Liveness: the process serves HTTP. Never asks the queue store, so a
/// store outage never gets a healthy proxy restarted.
#[utoipa::path(get, path = "/wr/livez", tag = "queue",
    responses((status = 200, description = "The process is alive", body = Health))
)]
pub fn livez(session: &Session) -> Reply {
    if !is_get(session) {
        return Failure::MethodNotAllowed("GET, HEAD").reply();
    }
    Reply::json(200, &Health { status: "ok" }).no_store()
}

/// Readiness: send this instance traffic. 503 only while it shuts down
/// (a deploy drains it). With the queue store down it still serves —
/// admitted visitors pass the gate without the store, the queue page and
/// API answer (503 to joins, or the open door) — so it stays ready,
/// `degraded`: every instance shares the store, and taking them all out of
/// rotation would take the whole site down. Answered within 400 ms.
#[utoipa::path(get, path = "/wr/readyz", tag = "queue",
    responses(
        (status = 200, description = "Ready: `ok`, or `degraded` while the queue store does not answer", body = Health),
        (status = 503, response = crate::problem::doc::Draining),
    )
)]
pub async fn readyz(state: &State, session: &Session) -> Reply {
    if let Some(refused) = not_a_health_check(state, session) {
        return refused;
    }
    let status = if store_answers(state).await { "ok" } else { "degraded" };
    Reply::json(200, &Health { status }).no_store()
}

/// What both store-aware checks answer before asking the store: 405 to a
/// method other than GET/HEAD, 503 while the instance drains.
fn not_a_health_check(state: &State, session: &Session) -> Option<Reply> {
    if !is_get(session) {
        return Some(Failure::MethodNotAllowed("GET, HEAD").reply());
    }
    state.drain.is_draining().then(|| Failure::Draining.reply().no_store())
}

/// Does the store answer within [`READY_WITHIN`]? A store known to be down
/// (its circuit breaker open) is not even asked.
async fn store_answers(state: &State) -> bool {
    match state.store() {
        Some(s) if !s.known_down() => tokio::time::timeout(READY_WITHIN, s.ping()).await.is_ok_and(|r| r.is_ok()),
        _ => false,
    }
}

/// The queue page: joins the visitor (arriving is asking for a place) and shows
/// their place live (WebSocket, polling fallback, meta refresh without JavaScript).
/// Once READY it sets `wr_entry` and sends the visitor on to `return_to`. On a
/// queue with `challenge = "pow"`, a visitor without a place gets the page with
/// the challenge, which its script solves and answers through `join`; over a
/// per-client limit, the page says so with status 429 and reloads itself after
/// `Retry-After`.
#[utoipa::path(get, path = "/wr/{queue}", tag = "queue",
    params(
        ("queue" = String, Path, description = "Queue id"),
        ("return_to" = Option<String>, Query, description = "Same-site path to return to once admitted (default `/`)"),
        ("wr_visitor" = Option<String>, Cookie, description = "The signed visitor id; issued with the first place"),
    ),
    responses(
        (status = 200, description = "The queue page (in the language of `Accept-Language`: English or German)",
            body = String, content_type = "text/html; charset=utf-8",
            headers(("set-cookie" = String,
                description = "`wr_visitor` with the first place; `wr_entry` (the token) when READY"))),
        (status = 400, response = crate::problem::doc::BadBody),
        (status = 404, response = crate::problem::doc::UnknownQueue),
        (status = 429, description = "The queue page saying that a per-client limit was reached (new visitor ids, \
            joins, or places held by one address; see `join`); it reloads itself after `Retry-After` seconds",
            body = String, content_type = "text/html; charset=utf-8",
            headers(("retry-after" = String, description = "Seconds to wait"))),
        (status = 431, response = crate::problem::doc::HeadTooLarge),
        (status = 503, response = crate::problem::doc::StoreDown),
    )
)]
pub async fn page(state: &State, session: &mut Session, q: &str) -> Reply {
    let (queue, store, _) = match prepare(state, session, q).await {
        Ok(ready) => ready,
        Err(reply) => return reply,
    };
    if !is_get(session) {
        return Failure::MethodNotAllowed("GET, HEAD").reply();
    }
    let return_to = page::safe_return_to(query_param(session.req_header().uri.query(), "return_to").as_deref());
    // Read before the join borrows the session.
    let lang = page::Lang::from_accept_language(header_str(session, "accept-language"));
    let not_in_queue = |challenge: Option<ChallengeBody>| StatusMessage {
        challenge,
        ..message(&state.keys.signer, &queue, VisitorId::from_bytes([0; 16]), Standing::NotInQueue, now_ms())
    };
    let joined = match join::join(state, session, &queue, store.as_ref(), None).await {
        Ok(joined) => joined,
        Err(Refusal::Challenge { challenge, .. }) => {
            let m = not_in_queue(Some(ChallengeBody::from(&challenge)));
            return Reply::html(200, page::render_in(&queue, &m, &return_to, None, lang)).no_store();
        }
        Err(Refusal::Limited { detail, retry_after, .. }) => {
            let html = page::render_in(&queue, &not_in_queue(None), &return_to, Some((&detail, retry_after)), lang);
            return Reply::html(429, html).header("retry-after", retry_after.to_string()).no_store();
        }
        Err(Refusal::Schedule(m)) => {
            return Reply::html(200, page::render_in(&queue, &m, &return_to, None, lang)).no_store();
        }
        Err(Refusal::StoreDown) => return Failure::StoreDown.reply(),
    };
    if joined.kind == JoinKind::FreeEntry {
        METRICS.admissions.with_label_values(&[queue.id(), "free_entry"]).inc();
    }
    let m = message(&state.keys.signer, &queue, joined.visitor, joined.standing, now_ms());
    let mut reply = Reply::html(200, page::render_in(&queue, &m, &return_to, None, lang)).no_store();
    if let Some(e) = &m.entry {
        reply = reply
            .header("set-cookie", set_cookie(shared::ENTRY_COOKIE, &e.token, Some(e.max_age), state.cookie_secure));
    }
    for c in joined.set_cookies(queue.id(), state.cookie_secure) {
        reply = reply.header("set-cookie", c);
    }
    reply
}

/// Join the queue (idempotent: joining again answers the current standing).
/// WAITING carries the place and a wait estimate; READY (admitted at once, or
/// released since) carries the entry token, also set as cookie `wr_entry`.
/// On a queue with `challenge = "pow"`, a visitor without a place first gets a
/// 428 with a challenge and joins by sending its answer as the body.
#[utoipa::path(post, path = "/wr/{queue}/join", tag = "queue",
    params(
        ("queue" = String, Path, description = "Queue id"),
        ("wr_visitor" = Option<String>, Cookie, description = "The signed visitor id; issued with the first place"),
    ),
    request_body(content = Option<Answer>, content_type = "application/json",
        description = "Empty, or the answer to the challenge of a 428: `{\"challenge\": \"<as received>\", \
            \"nonce\": \"<answer>\"}`"),
    responses(
        (status = 200, description = "WAITING or READY", body = StatusMessage,
            headers(("set-cookie" = String,
                description = "`wr_visitor` with the first place; `wr_entry` (the token) when READY"))),
        (status = 400, response = crate::problem::doc::BadJoinBody),
        (status = 404, response = crate::problem::doc::UnknownQueue),
        (status = 428, response = crate::join::ChallengeRequired),
        (status = 429, response = crate::join::OverLimit),
        (status = 431, response = crate::problem::doc::HeadTooLarge),
        (status = 503, response = crate::problem::doc::StoreDown),
    )
)]
pub async fn join(state: &State, session: &mut Session, q: &str) -> Reply {
    let (queue, store, body) = match prepare(state, session, q).await {
        Ok(ready) => ready,
        Err(reply) => return reply,
    };
    if session.req_header().method != http::Method::POST {
        return Failure::MethodNotAllowed("POST").reply();
    }
    let answer = match Answer::parse(&body) {
        Ok(answer) => answer,
        Err(detail) => return Reply::error(400, detail),
    };
    match join::join(state, session, &queue, store.as_ref(), answer.as_ref()).await {
        Ok(joined) => {
            let outcome = match joined.kind {
                JoinKind::Joined => "waiting",
                JoinKind::FreeEntry => "free_entry",
                JoinKind::Rejoined => "rejoined",
                JoinKind::Restored => "restored",
                JoinKind::OpenDoor => "store_down",
                _ => "existing",
            };
            METRICS.joins.with_label_values(&[queue.id(), outcome]).inc();
            if joined.kind == JoinKind::FreeEntry {
                METRICS.admissions.with_label_values(&[queue.id(), "free_entry"]).inc();
            }
            let mut reply = standing_reply_with(state, &queue, joined.visitor, joined.standing, joined.ticket.clone());
            for c in joined.set_cookies(queue.id(), state.cookie_secure) {
                reply = reply.header("set-cookie", c);
            }
            reply
        }
        Err(refusal) => refusal.reply(queue.id()),
    }
}

/// Where the visitor stands (the polling fallback of the WebSocket): poll again
/// after `retry_after_seconds`. Without a valid `wr_visitor` cookie, or after
/// losing the place, NOT_IN_QUEUE with the `join_url`.
#[utoipa::path(get, path = "/wr/{queue}/status", tag = "queue",
    params(
        ("queue" = String, Path, description = "Queue id"),
        ("wr_visitor" = Option<String>, Cookie, description = "The signed visitor id from joining"),
    ),
    responses(
        (status = 200, description = "WAITING, READY or NOT_IN_QUEUE", body = StatusMessage,
            headers(("set-cookie" = String, description = "`wr_entry` (the token) when READY"))),
        (status = 400, response = crate::problem::doc::BadBody),
        (status = 404, response = crate::problem::doc::UnknownQueue),
        (status = 431, response = crate::problem::doc::HeadTooLarge),
        (status = 503, response = crate::problem::doc::StoreDown),
    )
)]
pub async fn status(state: &State, session: &mut Session, q: &str) -> Reply {
    let (queue, store, _) = match prepare(state, session, q).await {
        Ok(ready) => ready,
        Err(reply) => return reply,
    };
    if !is_get(session) {
        return Failure::MethodNotAllowed("GET, HEAD").reply();
    }
    let Some(visitor) = identity::existing(session, &state.keys.cookies) else {
        return standing_reply(state, &queue, VisitorId::from_bytes([0; 16]), Standing::NotInQueue);
    };
    match store.status(queue.id(), visitor, &queue.params()).await {
        Ok(standing) => standing_reply(state, &queue, visitor, standing),
        Err(e) => {
            tracing::warn!(error = %e, queue = queue.id(), "status failed");
            METRICS.store_errors.with_label_values(&["status"]).inc();
            Failure::StoreDown.reply()
        }
    }
}

/// The lottery of a queue with a pre-queue (see `lottery.rs`): before the
/// draw its commitment, `SHA-256(seed)`; after it also the seed and the
/// entrants' public ids in drawn order, so anyone can recompute the order
/// (`waiting-room verify-lottery`).
#[utoipa::path(get, path = "/wr/{queue}/lottery", tag = "queue",
    params(("queue" = String, Path, description = "Queue id")),
    responses(
        (status = 200, description = "The commitment, and after the draw the seed and the order",
            body = crate::lottery::Published),
        (status = 404, response = crate::problem::doc::UnknownQueue),
        (status = 503, response = crate::problem::doc::StoreDown),
    )
)]
pub async fn lottery(state: &State, session: &mut Session, q: &str) -> Reply {
    let (queue, store, _) = match prepare(state, session, q).await {
        Ok(ready) => ready,
        Err(reply) => return reply,
    };
    if !is_get(session) {
        return Failure::MethodNotAllowed("GET, HEAD").reply();
    }
    let s = queue.def().schedule;
    let (Some(prequeue_from), Some(opens_at)) = (s.prequeue_from, s.opens_at) else {
        return Reply::problem(
            Problem::new(404, format!("queue {q:?} has no pre-queue, so no lottery: it admits in arrival order"))
                .with("queue", q),
        );
    };
    if let Some(body) = queue.published_draw.get() {
        return Reply { status: 200, headers: vec![("content-type", "application/json".into())], body: body.clone() }
            .no_store();
    }
    // This instance's lottery task keeps the record current (it reads the
    // store until it sees the draw), so a flood of readers costs the store
    // nothing; only before the task's first read is the store asked.
    let record = match queue.lottery() {
        Some(r) => r,
        None => match store.lottery(q, None).await {
            Ok(Some(r)) => {
                queue.note_lottery(Some(r.clone()));
                r
            }
            Ok(None) => {
                return Failure::NotCommitted.reply();
            }
            Err(e) => {
                tracing::warn!(error = %e, queue = q, "lottery read failed");
                METRICS.store_errors.with_label_values(&["lottery"]).inc();
                return Failure::StoreDown.reply();
            }
        },
    };
    let drawn = record.drawn.as_ref();
    let published = crate::lottery::Published {
        queue: q.to_owned(),
        algorithm: crate::lottery::ALGORITHM.to_owned(),
        state: if drawn.is_some() { "drawn" } else { "committed" }.to_owned(),
        commitment: crate::lottery::commitment(&record.seed),
        committed_at: crate::clock::rfc3339_ms(record.committed_at_ms),
        prequeue_from: prequeue_from.rfc3339(),
        opens_at: opens_at.rfc3339(),
        seed: drawn.map(|_| record.seed.clone()),
        drawn_at: drawn.map(|(at, _)| crate::clock::rfc3339_ms(*at)),
        entrants: drawn.map(|(_, order)| serde_json::from_str(order).unwrap_or_default()),
    };
    let reply = Reply::json(200, &published).no_store();
    if drawn.is_some() {
        let _ = queue.published_draw.set(reply.body.clone());
    }
    reply
}

/// The live standing over a WebSocket: one JSON [`StatusMessage`] on connect
/// and after every change; READY carries the token and is followed by a normal
/// close (1000). On a queue with `challenge = "pow"`, a visitor without a place
/// gets one NOT_IN_QUEUE message carrying the `challenge`, then a normal close:
/// answer it with `POST /wr/{queue}/join`, then connect again. The server pings
/// every `ws_ping_interval`; client text frames up to 4 KiB are ignored,
/// anything else closes with 1008.
#[utoipa::path(get, path = "/wr/{queue}/ws", tag = "queue",
    params(
        ("queue" = String, Path, description = "Queue id"),
        ("wr_visitor" = Option<String>, Cookie, description = "The signed visitor id; issued with the first place"),
        ("upgrade" = String, Header, description = "`websocket`"),
        ("connection" = String, Header, description = "`Upgrade`"),
        ("sec-websocket-version" = String, Header, description = "`13`"),
        ("sec-websocket-key" = String, Header, description = "The handshake key (RFC 6455)"),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket; every text message is a `StatusMessage`",
            headers(("set-cookie" = String, description = "`wr_visitor` with the first place"))),
        (status = 400, response = crate::problem::doc::BadHandshake),
        (status = 404, response = crate::problem::doc::UnknownQueue),
        (status = 426, response = crate::problem::doc::NotAnUpgrade),
        (status = 429, response = crate::join::OverLimit),
        (status = 431, response = crate::problem::doc::HeadTooLarge),
        (status = 503, response = crate::problem::doc::StoreDown),
    )
)]
pub async fn socket(state: &Arc<State>, session: &mut Session, q: &str) -> Result<(), Reply> {
    crate::ws::handle(state, session, q).await
}
