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
//! the document ([`crate::openapi`]) is generated from the code [`handle`] runs.

use std::sync::Arc;

use pingora::prelude::Session;
use serde::Serialize;
use shared::problem::Problem;
use shared::visitor::VisitorId;

use crate::challenge::{Answer, ChallengeBody};
use crate::config::QueueMode;
use crate::http::{Reply, header_str, query_param, set_cookie};
use crate::identity;
use crate::join::{self, Refusal};
use crate::metrics::METRICS;
use crate::page;
use crate::queues::Queue;
use crate::schedule::{At, Phase};
use crate::state::{State, now_ms};
use crate::store::{JoinKind, QueueStore, Standing};
use crate::tokens::Issued;

/// Largest request body the queue API accepts (only a join carries one: the
/// answer to a challenge).
pub const MAX_BODY: usize = 4096;

/// A route under `/wr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/wr/healthz` (the same as `/wr/readyz`)
    Health,
    /// `/wr/livez`
    Live,
    /// `/wr/readyz`
    Ready,
    /// `/wr/openapi.json`
    OpenApi,
    /// `/wr/{q}`
    Page(&'a str),
    /// `/wr/{q}/join`
    Join(&'a str),
    /// `/wr/{q}/status`
    Status(&'a str),
    /// `/wr/{q}/ws`
    Socket(&'a str),
    /// `/wr/{q}/lottery`
    Lottery(&'a str),
    /// Anything else under `/wr`.
    Unknown,
}

impl Route<'_> {
    /// Label for metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Route::Health => "healthz",
            Route::Live => "livez",
            Route::Ready => "readyz",
            Route::OpenApi => "openapi",
            Route::Page(_) => "page",
            Route::Join(_) => "join",
            Route::Status(_) => "status",
            Route::Socket(_) => "ws",
            Route::Lottery(_) => "lottery",
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
        (Some("livez"), None, None) => Route::Live,
        (Some("readyz"), None, None) => Route::Ready,
        // Not a queue id: ids are letters, digits, `-` and `_`.
        (Some("openapi.json"), None, None) => Route::OpenApi,
        (Some(q), None, None) if !q.is_empty() => Route::Page(q),
        (Some(q), Some("join"), None) => Route::Join(q),
        (Some(q), Some("status"), None) => Route::Status(q),
        (Some(q), Some("ws"), None) => Route::Socket(q),
        (Some(q), Some("lottery"), None) => Route::Lottery(q),
        _ => Route::Unknown,
    }
}

/// What the queue API and the WebSocket tell a visitor about their standing.
/// WAITING carries `position`, `queue_length`, `eta_seconds`,
/// `retry_after_seconds` (and `paused` while releases are paused); READY the
/// entry token with `expires_at` and `admitted_at`; NOT_IN_QUEUE the `join_url`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct StatusMessage {
    /// `WAITING`, `READY`, `NOT_IN_QUEUE`, on a scheduled queue
    /// `SCHEDULED`, `PREQUEUE`, `CLOSED`, in `reject` mode `UNAVAILABLE`,
    /// and `SOLD_OUT` once what the queue sells is gone.
    #[schema(value_type = crate::openapi::QueueStatus)]
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
    #[schema(schema_with = crate::openapi::entry_fields)]
    pub entry: Option<Issued>,
    /// Where to join (NOT_IN_QUEUE).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_url: Option<String>,
    /// The challenge to solve before joining (NOT_IN_QUEUE, on a queue with
    /// `challenge = "pow"`, sent by the WebSocket before it closes): answer
    /// it with `POST join_url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenge: Option<ChallengeBody>,
    /// The operator's message to everyone in the queue (any status).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `random` when visitors are let in by random draw (WAITING): there is
    /// no place number then, and the wait is a range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    /// The wait as a range, shortest and longest, in seconds (WAITING in
    /// random mode: picked at the next tick at the soonest, once everyone now
    /// waiting has been let in at the latest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_range_seconds: Option<[u64; 2]>,
    /// When the queue opens (SCHEDULED, PREQUEUE), RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opens_at: Option<String>,
    /// When the pre-queue opens (SCHEDULED on a queue with a lottery).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prequeue_from: Option<String>,
    /// When the sale closes(d) (CLOSED; WAITING on a queue that closes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closes_at: Option<String>,
    /// The visitor's public id in the lottery (PREQUEUE, and WAITING on a
    /// queue with a lottery): find it in the published draw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_id: Option<String>,
    /// Where the lottery's commitment, and after the draw its seed and
    /// order, are published (queues with a pre-queue).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lottery_url: Option<String>,
    /// The queue ticket of this place (WAITING, in the answer to a join; also
    /// set as cookie `wr_ticket_<queue>`): should the queue store lose the
    /// line, joining again with it restores the place by its original order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
}

/// Body of `GET /wr/livez`, `/wr/readyz` and `/wr/healthz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`; from readiness `degraded` while the queue store does not answer.
    #[schema(value_type = String, example = "ok")]
    pub status: &'static str,
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
        challenge: None,
        ticket: None,
        opens_at: None,
        prequeue_from: None,
        closes_at: None,
        public_id: None,
        lottery_url: None,
        mode: None,
        wait_range_seconds: None,
        message: queue.message().map(|m| m.to_string()),
    };
    // A deleted queue: everyone still connected hears it is closed (its
    // paths are no longer behind a line).
    if queue.retired() {
        m.status = "CLOSED";
        return m;
    }
    let queue_mode = queue.admission().queue_mode;
    if queue_mode == QueueMode::Reject && !matches!(standing, Standing::Ready { .. }) {
        m.status = "UNAVAILABLE";
        m.retry_after_seconds = Some(UNAVAILABLE_RETRY_SECS);
        return m;
    }
    // Sold out: everyone not admitted hears it; a place is kept for stock
    // that comes back (the socket stays open and hears that too).
    if queue.sold_out() && !matches!(standing, Standing::Ready { .. }) {
        m.status = "SOLD_OUT";
        m.retry_after_seconds = Some(UNAVAILABLE_RETRY_SECS);
        m.queue_length = match standing {
            Standing::Waiting { waiting, .. } => Some(waiting),
            _ => None,
        };
        return m;
    }
    let def = queue.def();
    let schedule = &def.schedule;
    if schedule.has_lottery() {
        m.lottery_url = Some(lottery_url(queue.id()));
    }
    m.closes_at = schedule.closes_at.map(At::rfc3339);
    let phase = queue.phase(now_ms);
    match (phase, standing) {
        (Phase::Scheduled, _) => {
            m.status = "SCHEDULED";
            m.opens_at = schedule.opens_at.map(At::rfc3339);
            m.prequeue_from = schedule.prequeue_from.map(At::rfc3339);
            m.retry_after_seconds = Some(until_next_change(schedule, now_ms));
            return m;
        }
        (Phase::PreQueue, Standing::Waiting { waiting, .. }) => {
            m.status = "PREQUEUE";
            m.queue_length = Some(waiting);
            m.opens_at = schedule.opens_at.map(At::rfc3339);
            m.public_id = Some(crate::lottery::public_id(queue.id(), visitor));
            m.retry_after_seconds = Some(until_next_change(schedule, now_ms));
            return m;
        }
        (Phase::Closed, Standing::NotInQueue) => {
            m.status = "CLOSED";
            return m;
        }
        _ => {}
    }
    if schedule.has_lottery() && matches!(standing, Standing::Waiting { .. }) {
        m.public_id = Some(crate::lottery::public_id(queue.id(), visitor));
    }
    match standing {
        Standing::Waiting { waiting, .. } if queue_mode == QueueMode::Random => {
            // Every waiting visitor has the same chance each tick: the
            // expected wait is half the line's, the longest the whole line's.
            let (soonest, eta, longest) = (
                queue.eta_seconds(1, now_ms),
                queue.eta_seconds(waiting.div_ceil(2), now_ms),
                queue.eta_seconds(waiting, now_ms),
            );
            m.status = "WAITING";
            m.mode = Some("random");
            m.queue_length = Some(waiting);
            m.eta_seconds = Some(eta);
            m.wait_range_seconds = Some([soonest, longest]);
            m.retry_after_seconds = Some(retry_after(soonest));
            m.paused = queue.paused();
        }
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

/// How often a visitor of a queue in `reject` mode asks again.
const UNAVAILABLE_RETRY_SECS: u64 = 30;

/// Where to join `queue`.
pub fn join_url(queue: &str) -> String {
    format!("/wr/{queue}/join")
}

/// Where `queue`'s lottery is published.
pub fn lottery_url(queue: &str) -> String {
    format!("/wr/{queue}/lottery")
}

/// Seconds a client should wait before asking again while the schedule
/// holds it: until the next phase begins (at most 30 s, so a countdown
/// corrected by an operator is heard; at least 1 s).
fn until_next_change(schedule: &crate::schedule::Schedule, now_ms: i64) -> u64 {
    schedule.next_change(now_ms).map_or(30, |t| u64::try_from((t.0 - now_ms + 999) / 1000).unwrap_or(1).clamp(1, 30))
}

/// 405 with `Allow`.
pub(crate) fn method_not_allowed(allow: &'static str) -> Reply {
    Reply::error(405, format!("this endpoint accepts {allow} only")).header("allow", allow)
}

/// 503 with `Retry-After`.
pub(crate) fn store_down() -> Reply {
    Reply::error(503, "the queue store is not answering; retry in a few seconds").header("retry-after", "2")
}

/// 404 for a queue id that is not configured, naming the known ones.
pub(crate) fn unknown_queue(q: &str, known: &[&str]) -> Reply {
    Reply::problem(
        Problem::new(404, format!("there is no queue named {q:?}; known queues: {}", known.join(", ")))
            .with("queue", q),
    )
}

/// 404 for a path under `/wr` that is no endpoint.
pub(crate) fn unknown_endpoint() -> Reply {
    Reply::error(
        404,
        "no such waiting-room endpoint; use /wr/{queue}, /wr/{queue}/join, /wr/{queue}/status, /wr/{queue}/ws or \
         /wr/{queue}/lottery",
    )
}

/// 400 for a body over [`MAX_BODY`].
pub(crate) fn body_too_large() -> Reply {
    Reply::error(
        400,
        format!(
            "request body too large (limit {MAX_BODY} bytes): only a join carries a body, the answer to a challenge"
        ),
    )
}

/// 400 for a body that could not be read.
pub(crate) fn malformed_body() -> Reply {
    Reply::error(400, "malformed request body")
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
    let mut m = message(state, queue, visitor, standing, now_ms());
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
        return Err(body_too_large());
    }
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(body_too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(_) => return Err(malformed_body()),
        }
    }
}

/// Answer a request under `/wr` (all routes but the WebSocket, see [`socket`]).
pub async fn handle(state: &State, session: &mut Session, route: Route<'_>) -> Reply {
    match route {
        Route::Health => healthz(state, session).await,
        Route::Live => livez(session),
        Route::Ready => readyz(state, session).await,
        Route::OpenApi => openapi(session),
        Route::Page(q) => page(state, session, q).await,
        Route::Join(q) => join(state, session, q).await,
        Route::Status(q) => status(state, session, q).await,
        Route::Lottery(q) => lottery(state, session, q).await,
        // The proxy hands WebSocket requests to `socket`; anything else is not an upgrade.
        Route::Socket(_) => Reply::error(426, "this endpoint is a WebSocket: send GET with Upgrade: websocket")
            .header("upgrade", "websocket"),
        Route::Unknown => unknown_endpoint(),
    }
}

fn is_get(session: &Session) -> bool {
    let method = &session.req_header().method;
    method == http::Method::GET || method == http::Method::HEAD
}

/// The queue named `q`, the store and the request body (read whole).
async fn prepare(
    state: &State,
    session: &mut Session,
    q: &str,
) -> Result<(Arc<Queue>, Arc<dyn QueueStore>, Vec<u8>), Reply> {
    let Some(queue) = state.queues.by_id(q) else {
        let all = state.queues.all();
        let known: Vec<&str> = all.iter().map(|q| q.id()).collect();
        return Err(unknown_queue(q, &known));
    };
    let body = match read_body(session).await {
        Ok(body) => body,
        Err(reply) => {
            session.set_keepalive(None);
            return Err(reply);
        }
    };
    let Some(store) = state.store() else { return Err(store_down()) };
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
        (status = 503, response = crate::openapi::NotReady),
    )
)]
pub async fn healthz(state: &State, session: &Session) -> Reply {
    if let Some(refused) = not_a_health_check(state, session) {
        return refused;
    }
    if store_answers(state).await {
        Reply::json(200, &Health { status: "ok" }).no_store()
    } else {
        store_down().no_store()
    }
}

/// Liveness: the process serves HTTP. Never asks the queue store, so a
/// store outage never gets a healthy proxy restarted.
#[utoipa::path(get, path = "/wr/livez", tag = "queue",
    responses((status = 200, description = "The process is alive", body = Health))
)]
pub fn livez(session: &Session) -> Reply {
    if !is_get(session) {
        return method_not_allowed("GET, HEAD");
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
        (status = 503, response = crate::openapi::Draining),
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
        return Some(method_not_allowed("GET, HEAD"));
    }
    state.drain.is_draining().then(|| draining().no_store())
}

/// Does the store answer within [`READY_WITHIN`]? A store known to be down
/// (its circuit breaker open) is not even asked.
async fn store_answers(state: &State) -> bool {
    match state.store() {
        Some(s) if !s.known_down() => tokio::time::timeout(READY_WITHIN, s.ping()).await.is_ok_and(|r| r.is_ok()),
        _ => false,
    }
}

/// 503 while this instance shuts down (`Retry-After`: another instance
/// will answer).
pub(crate) fn draining() -> Reply {
    Reply::error(503, "this instance is shutting down; connect again to reach another").header("retry-after", "1")
}

/// This document.
#[utoipa::path(get, path = "/wr/openapi.json", tag = "queue",
    responses((status = 200, description = "The OpenAPI 3.1 document of the queue API", body = Object))
)]
pub fn openapi(session: &Session) -> Reply {
    if !is_get(session) {
        return method_not_allowed("GET, HEAD");
    }
    Reply { status: 200, headers: vec![("content-type", "application/json".into())], body: crate::openapi::json() }
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
        (status = 400, response = crate::openapi::BadBody),
        (status = 404, response = crate::openapi::UnknownQueue),
        (status = 429, description = "The queue page saying that a per-client limit was reached (new visitor ids, \
            joins, or places held by one address; see `join`); it reloads itself after `Retry-After` seconds",
            body = String, content_type = "text/html; charset=utf-8",
            headers(("retry-after" = String, description = "Seconds to wait"))),
        (status = 431, response = crate::openapi::HeadTooLarge),
        (status = 503, response = crate::openapi::StoreDown),
    )
)]
pub async fn page(state: &State, session: &mut Session, q: &str) -> Reply {
    let (queue, store, _) = match prepare(state, session, q).await {
        Ok(ready) => ready,
        Err(reply) => return reply,
    };
    if !is_get(session) {
        return method_not_allowed("GET, HEAD");
    }
    let return_to = page::safe_return_to(query_param(session.req_header().uri.query(), "return_to").as_deref());
    // Read before the join borrows the session.
    let lang = page::Lang::from_accept_language(header_str(session, "accept-language"));
    let not_in_queue = |challenge: Option<ChallengeBody>| StatusMessage {
        challenge,
        ..message(state, &queue, VisitorId::from_bytes([0; 16]), Standing::NotInQueue, now_ms())
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
        Err(Refusal::StoreDown) => return store_down(),
    };
    if joined.kind == JoinKind::FreeEntry {
        METRICS.admissions.with_label_values(&[queue.id(), "free_entry"]).inc();
    }
    let m = message(state, &queue, joined.visitor, joined.standing, now_ms());
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
        (status = 400, response = crate::openapi::BadJoinBody),
        (status = 404, response = crate::openapi::UnknownQueue),
        (status = 428, response = crate::openapi::ChallengeRequired),
        (status = 429, response = crate::openapi::OverLimit),
        (status = 431, response = crate::openapi::HeadTooLarge),
        (status = 503, response = crate::openapi::StoreDown),
    )
)]
pub async fn join(state: &State, session: &mut Session, q: &str) -> Reply {
    let (queue, store, body) = match prepare(state, session, q).await {
        Ok(ready) => ready,
        Err(reply) => return reply,
    };
    if session.req_header().method != http::Method::POST {
        return method_not_allowed("POST");
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
        (status = 400, response = crate::openapi::BadBody),
        (status = 404, response = crate::openapi::UnknownQueue),
        (status = 431, response = crate::openapi::HeadTooLarge),
        (status = 503, response = crate::openapi::StoreDown),
    )
)]
pub async fn status(state: &State, session: &mut Session, q: &str) -> Reply {
    let (queue, store, _) = match prepare(state, session, q).await {
        Ok(ready) => ready,
        Err(reply) => return reply,
    };
    if !is_get(session) {
        return method_not_allowed("GET, HEAD");
    }
    let Some(visitor) = identity::existing(session, &state.keys.cookies) else {
        return standing_reply(state, &queue, VisitorId::from_bytes([0; 16]), Standing::NotInQueue);
    };
    match store.status(queue.id(), visitor, &queue.params()).await {
        Ok(standing) => standing_reply(state, &queue, visitor, standing),
        Err(e) => {
            tracing::warn!(error = %e, queue = queue.id(), "status failed");
            METRICS.store_errors.with_label_values(&["status"]).inc();
            store_down()
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
        (status = 404, response = crate::openapi::UnknownQueue),
        (status = 503, response = crate::openapi::StoreDown),
    )
)]
pub async fn lottery(state: &State, session: &mut Session, q: &str) -> Reply {
    let (queue, store, _) = match prepare(state, session, q).await {
        Ok(ready) => ready,
        Err(reply) => return reply,
    };
    if !is_get(session) {
        return method_not_allowed("GET, HEAD");
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
                return Reply::error(503, "the lottery's commitment is not made yet; retry in a second")
                    .header("retry-after", "1");
            }
            Err(e) => {
                tracing::warn!(error = %e, queue = q, "lottery read failed");
                METRICS.store_errors.with_label_values(&["lottery"]).inc();
                return store_down();
            }
        },
    };
    let drawn = record.drawn.as_ref();
    let published = crate::lottery::Published {
        queue: q.to_owned(),
        algorithm: crate::lottery::ALGORITHM.to_owned(),
        state: if drawn.is_some() { "drawn" } else { "committed" }.to_owned(),
        commitment: crate::lottery::commitment(&record.seed),
        committed_at: crate::tokens::rfc3339_ms(record.committed_at_ms),
        prequeue_from: prequeue_from.rfc3339(),
        opens_at: opens_at.rfc3339(),
        seed: drawn.map(|_| record.seed.clone()),
        drawn_at: drawn.map(|(at, _)| crate::tokens::rfc3339_ms(*at)),
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
        (status = 400, response = crate::openapi::BadHandshake),
        (status = 404, response = crate::openapi::UnknownQueue),
        (status = 426, response = crate::openapi::NotAnUpgrade),
        (status = 429, response = crate::openapi::OverLimit),
        (status = 431, response = crate::openapi::HeadTooLarge),
        (status = 503, response = crate::openapi::StoreDown),
    )
)]
pub async fn socket(state: &Arc<State>, session: &mut Session, q: &str) -> Result<(), Reply> {
    crate::ws::handle(state, session, q).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_and_unknown_paths_are_unknown() {
        assert_eq!(route("/wr/healthz"), Route::Health);
        assert_eq!(route("/wr/openapi.json"), Route::OpenApi);
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
