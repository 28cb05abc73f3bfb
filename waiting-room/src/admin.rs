//! The operator API, on its own listener (`admin.listen`, default
//! 127.0.0.1:9092), behind a bearer token (`admin.token` / `WR_ADMIN__TOKEN`).
//!
//! ```text
//! GET   /admin/queues                 every queue's live state
//! GET   /admin/queues/{q}             one queue: waiting, active, rates, settings
//! PATCH /admin/queues/{q}             change settings: {"release_per_tick": 50, "tick": "5s", ...}
//! POST  /admin/queues/{q}/pause       stop releasing
//! POST  /admin/queues/{q}/resume      release again
//! POST  /admin/queues/{q}/queue-all   everybody queues, even when free entry would admit them
//! POST  /admin/queues/{q}/free-entry  free entry as configured again
//! GET   /admin/queues/{q}/ticks?limit=K the last K ticks (≤ 1000): N allowed, released, why
//! POST  /admin/reload                 re-read the config file (same as SIGHUP)
//! ```
//!
//! Changes apply to every instance on the same store (see [`crate::control`]).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::{Deserialize, Serialize};
use shared::config::{Secret, constant_time_eq, parse_duration};
use shared::problem::Problem;

use crate::client::ClientKey;
use crate::control::{self, ChangeError};
use crate::http::Reply;
use crate::limits::{Refused, retry_after_secs};
use crate::queues::Queue;
use crate::state::State;
use crate::store::{SharedSettings, TICK_LOG};

/// Largest admin request body.
const MAX_BODY: usize = 16 * 1024;

/// The admin HTTP app.
pub struct AdminApp {
    state: Arc<State>,
    token: Secret,
    config_path: Option<PathBuf>,
}

impl AdminApp {
    /// The app for `state`, requiring `token`.
    pub fn new(state: Arc<State>, token: Secret, config_path: Option<PathBuf>) -> Self {
        AdminApp { state, token, config_path }
    }
}

/// Live state of a queue.
#[derive(Debug, Serialize)]
pub struct QueueState {
    id: String,
    name: String,
    paths: Vec<String>,
    settings: SharedSettings,
    waiting: u64,
    active: u64,
    ticks: u64,
    released_total: u64,
    abandoned_total: u64,
    /// Admissions per second measured over recent ticks.
    release_rate_measured: Option<f64>,
    /// N / T.
    release_rate_configured: f64,
    /// WebSockets open on the instance that answered.
    connections_here: usize,
    /// How N is set now, and the last decision with the signals it judged.
    controller: Controller,
    /// Where the sale's schedule stands on the instance that answered:
    /// `scheduled`, `prequeue`, `open` or `closed`.
    phase: &'static str,
    /// The lottery (queues with a pre-queue): `committed` or `drawn`, and the
    /// commitment, as this instance last read them.
    #[serde(skip_serializing_if = "Option::is_none")]
    lottery: Option<serde_json::Value>,
    /// What is left to sell at the last stock reading (`stop_when_sold_out`),
    /// and whether that is nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    stock_left: Option<u64>,
    sold_out: bool,
}

/// The admission controller's view of a queue (`adaptive.rs`).
#[derive(Debug, Serialize)]
struct Controller {
    /// `fixed` or `adaptive`.
    mode: &'static str,
    /// The N ticks release now.
    n: u64,
    /// The operator's pin, if any (adaptive mode).
    pinned: Option<u64>,
    /// Why the last decision chose its N (`fixed` in fixed mode).
    reason: Option<String>,
    /// The tick whose window the last decision judged.
    tick: Option<u64>,
    /// The signals it judged (all instances merged).
    signals: Option<crate::adaptive::Signals>,
}

impl Controller {
    fn of(queue: &Queue) -> Self {
        let a = queue.admission();
        let last = queue.last_decision();
        Controller {
            mode: a.mode.label(),
            n: queue.current_n(),
            pinned: (a.mode == crate::config::AdmissionMode::Adaptive && a.pin_per_tick > 0).then_some(a.pin_per_tick),
            reason: last.as_ref().map(|d| d.reason.clone()),
            tick: last.as_ref().map(|d| d.tick),
            signals: last.map(|d| d.signals),
        }
    }
}

/// A settings change: every field optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    free_entry: Option<u64>,
    release_per_tick: Option<u64>,
    tick: Option<String>,
    session: Option<String>,
    max_active: Option<u64>,
    abandon_after: Option<String>,
    paused: Option<bool>,
    queue_all: Option<bool>,
    admission: Option<crate::config::AdmissionMode>,
    min_per_tick: Option<u64>,
    max_per_tick: Option<u64>,
    target_p99: Option<String>,
    target_error_rate: Option<f64>,
    arrival_grace: Option<String>,
    pin_per_tick: Option<u64>,
    mode: Option<crate::config::QueueMode>,
    /// The operator's message; "" removes it.
    message: Option<String>,
}

impl Patch {
    fn apply(&self, s: &mut SharedSettings) -> Result<(), Reply> {
        let duration = |key: &str, v: &Option<String>, into: &mut std::time::Duration| -> Result<(), Reply> {
            if let Some(text) = v {
                *into = parse_duration(text).map_err(|m| Reply::error(422, format!("{key}: {m}")))?;
            }
            Ok(())
        };
        let a = &mut s.admission;
        if let Some(v) = self.free_entry {
            a.free_entry = v;
        }
        if let Some(v) = self.release_per_tick {
            a.release_per_tick = v;
        }
        if let Some(v) = self.max_active {
            a.max_active = v;
        }
        duration("tick", &self.tick, &mut a.tick)?;
        duration("session", &self.session, &mut a.session)?;
        duration("abandon_after", &self.abandon_after, &mut a.abandon_after)?;
        duration("target_p99", &self.target_p99, &mut a.target_p99)?;
        duration("arrival_grace", &self.arrival_grace, &mut a.arrival_grace)?;
        if let Some(v) = self.admission {
            a.mode = v;
        }
        if let Some(v) = self.min_per_tick {
            a.min_per_tick = v;
        }
        if let Some(v) = self.max_per_tick {
            a.max_per_tick = v;
        }
        if let Some(v) = self.target_error_rate {
            a.target_error_rate = v;
        }
        if let Some(v) = self.pin_per_tick {
            a.pin_per_tick = v;
        }
        if let Some(v) = self.mode {
            a.queue_mode = v;
        }
        if let Some(m) = &self.message {
            crate::config::validate_message(m).map_err(|e| Reply::error(422, format!("message: {e}")))?;
            s.message = (!m.trim().is_empty()).then(|| m.clone());
        }
        if let Some(v) = self.paused {
            s.paused = v;
        }
        if let Some(v) = self.queue_all {
            s.queue_all = v;
        }
        Ok(())
    }
}

async fn queue_state(state: &State, queue: &Queue) -> Result<QueueState, Reply> {
    let store = state.store().ok_or_else(store_down)?;
    let stats = store.stats(queue.id()).await.map_err(|_| store_down())?;
    Ok(QueueState {
        id: queue.id().to_owned(),
        name: queue.config.display_name().to_owned(),
        paths: queue.config.paths.clone(),
        settings: queue.settings(),
        waiting: stats.waiting,
        active: stats.active,
        ticks: stats.ticks,
        released_total: stats.released_total,
        abandoned_total: stats.abandoned_total,
        release_rate_measured: queue.estimate.rate(),
        release_rate_configured: queue.configured_rate(),
        connections_here: state.hub.connections(queue.id()),
        controller: Controller::of(queue),
        phase: queue.phase(crate::state::now_ms()).label(),
        lottery: queue.lottery().map(|l| {
            serde_json::json!({
                "state": if l.drawn.is_some() { "drawn" } else { "committed" },
                "commitment": crate::lottery::commitment(&l.seed),
            })
        }),
        stock_left: queue.stock_left(),
        sold_out: queue.sold_out(),
    })
}

fn store_down() -> Reply {
    Reply::error(503, "the queue store is not answering; retry in a few seconds").header("retry-after", "2")
}

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Reply> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_BODY {
                    return Err(Reply::error(413, format!("request body larger than {MAX_BODY} bytes")));
                }
            }
            Ok(None) => return Ok(body),
            Err(_) => return Err(Reply::error(400, "malformed request body")),
        }
    }
}

fn change_reply(r: Result<SharedSettings, ChangeError>) -> Result<(), Reply> {
    match r {
        Ok(_) => Ok(()),
        Err(ChangeError::Invalid(e)) => {
            let field = e.key.trim_start_matches("settings.").to_owned();
            Err(Reply::problem(Problem::new(422, format!("{field}: {}", e.message)).with("field", field)))
        }
        Err(ChangeError::Store(_)) => Err(store_down()),
    }
}

impl AdminApp {
    /// Check the bearer token. A client whose failures used up its budget
    /// (`limits.admin_failures`) is refused before its token is even
    /// compared, so guessing costs time and tells nothing.
    fn authorize(&self, session: &ServerSession) -> Result<(), Reply> {
        let client = ClientKey::from(self.state.client_at(session.client_addr(), &session.req_header().headers));
        let failures = &self.state.limits.admin_failures;
        let now = std::time::Instant::now();
        let throttled = |wait: std::time::Duration| {
            Refused::AdminAuth.count();
            Reply::error(429, "too many failed admin tokens from your address; wait before trying again")
                .header("retry-after", retry_after_secs(wait).to_string())
        };
        if !failures.has(client, now) {
            return Err(throttled(failures.take(client, now).err().unwrap_or_default()));
        }
        let mut given = session.req_header().headers.get_all("authorization").iter();
        let (first, second) = (given.next(), given.next());
        let expected = format!("Bearer {}", self.token.expose());
        let ok = !self.token.is_empty()
            && second.is_none()
            && first.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes()));
        if ok {
            return Ok(());
        }
        if let Err(wait) = failures.take(client, now) {
            return Err(throttled(wait));
        }
        Err(Reply::error(401, "send the admin token as Authorization: Bearer <admin.token>")
            .header("www-authenticate", "Bearer realm=\"waiting-room-admin\""))
    }

    async fn route(&self, session: &mut ServerSession) -> Result<Reply, Reply> {
        self.authorize(session)?;
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().trim_end_matches('/').to_owned();
        let parts: Vec<&str> = path.split('/').skip(1).collect();
        let queue = |id: &str| {
            self.state
                .queues
                .by_id(id)
                .cloned()
                .ok_or_else(|| Reply::error(404, format!("there is no queue named {id:?}")))
        };
        let actor = session.client_addr().map(|a| a.to_string()).unwrap_or_else(|| "admin".into());
        match (method.as_str(), parts.as_slice()) {
            ("GET", ["admin", "queues"]) => {
                let mut all = Vec::new();
                for q in self.state.queues.all() {
                    all.push(queue_state(&self.state, q).await?);
                }
                Ok(Reply::json(200, &all))
            }
            ("GET", ["admin", "queues", id]) => {
                let q = queue(id)?;
                Ok(Reply::json(200, &queue_state(&self.state, &q).await?))
            }
            ("PATCH", ["admin", "queues", id]) => {
                let q = queue(id)?;
                let body = read_body(session).await?;
                let patch: Patch = serde_json::from_slice(&body)
                    .map_err(|e| Reply::error(422, format!("expected a JSON object of settings: {e}")))?;
                let mut next = q.settings();
                patch.apply(&mut next)?;
                change_reply(control::change(&self.state, &q, &actor, "update", |s| *s = next).await)?;
                Ok(Reply::json(200, &queue_state(&self.state, &q).await?))
            }
            ("GET", ["admin", "queues", id, "ticks"]) => {
                let q = queue(id)?;
                let limit = match session.req_header().uri.query().and_then(|q| q.strip_prefix("limit=")) {
                    None => 100,
                    Some(v) => v.parse::<usize>().ok().filter(|n| (1..=TICK_LOG).contains(n)).ok_or_else(|| {
                        Reply::error(400, format!("limit must be a number between 1 and {TICK_LOG}, got {v:?}"))
                    })?,
                };
                let store = self.state.store().ok_or_else(store_down)?;
                let ticks = store.ticks(q.id(), limit).await.map_err(|_| store_down())?;
                Ok(Reply::json(200, &serde_json::json!({"queue": q.id(), "ticks": ticks})))
            }
            ("POST", ["admin", "queues", id, action]) => {
                let q = queue(id)?;
                let (action, edit): (&'static str, fn(&mut SharedSettings)) = match *action {
                    "pause" => ("pause", |s| s.paused = true),
                    "resume" => ("resume", |s| s.paused = false),
                    "queue-all" => ("queue_all", |s| s.queue_all = true),
                    "free-entry" => ("free_entry", |s| s.queue_all = false),
                    other => {
                        return Err(Reply::error(
                            404,
                            format!("unknown action {other:?}; use pause, resume, queue-all or free-entry"),
                        ));
                    }
                };
                change_reply(control::change(&self.state, &q, &actor, action, edit).await)?;
                Ok(Reply::json(200, &queue_state(&self.state, &q).await?))
            }
            ("POST", ["admin", "reload"]) => match control::reload(&self.state, self.config_path.as_deref()).await {
                Ok(changed) => Ok(Reply::json(200, &serde_json::json!({"changed": changed}))),
                Err(e) => Err(Reply::problem(
                    Problem::new(422, format!("config rejected, nothing changed: {e}")).with("key", e.key),
                )),
            },
            (_, ["admin", "queues", ..] | ["admin", "reload"]) => {
                Err(Reply::error(405, "method not allowed on this admin endpoint"))
            }
            _ => Err(Reply::error(404, "no such admin endpoint; see GET /admin/queues")),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let reply = self.route(session).await.unwrap_or_else(|e| e).no_store();
        let mut builder = http::Response::builder().status(reply.status);
        for (name, value) in &reply.headers {
            builder = builder.header(*name, value.as_str());
        }
        builder.header("content-length", reply.body.len()).body(reply.body.to_vec()).unwrap_or_else(|_| {
            let mut r = http::Response::new(b"{}".to_vec());
            *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            r
        })
    }
}
