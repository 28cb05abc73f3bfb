//! The operator API, on its own listener (`admin.listen`, default
//! 127.0.0.1:9092), behind a bearer token (`admin.token` / `WR_ADMIN__TOKEN`).
//!
//! ```text
//! GET   /admin/queues                 every queue's live state
//! POST  /admin/queues                 create a queue: the keys of [[queues]], "template" inline
//! GET   /admin/queues/{q}             one queue: waiting, active, rates, settings
//! PATCH /admin/queues/{q}             change settings: {"release_per_tick": 50, "tick": "5s", ...}
//!                                     and/or the definition: {"paths": [...], "name": ..., "opens_at": ...}
//! DELETE /admin/queues/{q}[?force=true] delete a queue (refused while anyone waits or is admitted, unless forced)
//! GET   /admin/catalog                the queue definitions every instance runs, with their version
//! POST  /admin/queues/{q}/pause       stop releasing
//! POST  /admin/queues/{q}/resume      release again
//! POST  /admin/queues/{q}/queue-all   everybody queues, even when free entry would admit them
//! POST  /admin/queues/{q}/free-entry  free entry as configured again
//! GET   /admin/queues/{q}/ticks?limit=K the last K ticks (≤ 1000): N allowed, released, why
//! POST  /admin/reload                 re-read the config file (same as SIGHUP)
//! ```
//!
//! Changes apply to every instance on the same store (settings: see
//! [`crate::control`]; queue definitions: see [`crate::catalog`]).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::Serialize;
use shared::config::{Secret, constant_time_eq};
use shared::problem::Problem;

use crate::catalog::{self, Catalog};
use crate::client::ClientKey;
use crate::control::{self, ChangeError};
use crate::limits::{Refused, retry_after_secs};
use crate::problem::{Failure, unknown_queue};
use crate::queues::Queue;
use crate::reply::Reply;
use crate::state::State;
use crate::store::{SharedSettings, TICK_LOG};
use shared::config::ConfigError;

/// Largest admin request body (a queue with its page template inline).
const MAX_BODY: usize = catalog::MAX_TEMPLATE + 16 * 1024;

mod bodies;
#[cfg(test)]
mod tests;

use bodies::{Patch, SETTINGS_KEYS, parse_entry, redefined};

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

async fn queue_state(state: &State, queue: &Queue) -> Result<QueueState, Reply> {
    let store = state.store().ok_or(Failure::StoreDown)?;
    let stats = store.stats(queue.id()).await.map_err(|_| Failure::StoreDown)?;
    Ok(QueueState {
        id: queue.id().to_owned(),
        name: queue.def().config.display_name().to_owned(),
        paths: queue.def().config.paths.clone(),
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
        phase: queue.phase(crate::clock::now_ms()).label(),
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

fn invalid(e: ConfigError) -> Reply {
    Reply::problem(Problem::new(422, format!("{}: {}", e.key, e.message)).with("field", e.key))
}

fn json_object(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, Reply> {
    match serde_json::from_slice(body) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(Reply::error(422, "expected a JSON object")),
        Err(e) => Err(Reply::error(422, format!("expected a JSON object: {e}"))),
    }
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
            Err(_) => return Err(Failure::MalformedBody.reply()),
        }
    }
}

fn change_reply<T>(r: Result<T, ChangeError>) -> Result<T, Reply> {
    match r {
        Ok(v) => Ok(v),
        Err(ChangeError::Invalid(e)) => {
            let field = e.key.trim_start_matches("settings.").to_owned();
            Err(Reply::problem(Problem::new(422, format!("{field}: {}", e.message)).with("field", field)))
        }
        Err(ChangeError::Conflict(m)) => Err(Reply::error(409, m)),
        Err(ChangeError::Store(_)) => Err(Failure::StoreDown.reply()),
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
        let queue = |id: &str| self.state.queues.by_id(id).ok_or_else(|| unknown_queue(&self.state.queues, id));
        let actor = session.client_addr().map(|a| a.to_string()).unwrap_or_else(|| "admin".into());
        match (method.as_str(), parts.as_slice()) {
            ("GET", ["admin", "queues"]) => {
                let mut all = Vec::new();
                for q in self.state.queues.all() {
                    all.push(queue_state(&self.state, &q).await?);
                }
                Ok(Reply::json(200, &all))
            }
            ("GET", ["admin", "queues", id]) => {
                let q = queue(id)?;
                Ok(Reply::json(200, &queue_state(&self.state, &q).await?))
            }
            ("POST", ["admin", "queues"]) => {
                let doc = json_object(&read_body(session).await?)?;
                let entry = parse_entry(doc).map_err(invalid)?;
                let id = entry.config.id.clone();
                if catalog::has(&self.state, &id).await.map_err(|_| Failure::StoreDown)? {
                    return Err(Reply::error(409, format!("there is already a queue named {id:?}")));
                }
                let store = self.state.store().ok_or(Failure::StoreDown)?;
                // A queue of that id deleted earlier left nothing behind,
                // unless an instance still ran it for a moment after.
                store.purge(&id).await.map_err(|_| Failure::StoreDown)?;
                let create = |c: &mut Catalog| {
                    if c.queues.iter().any(|e| e.config.id == id) {
                        return Err(ChangeError::Conflict(format!("there is already a queue named {id:?}")));
                    }
                    c.queues.push(entry.clone());
                    Ok(())
                };
                change_reply(catalog::change(&self.state, &id, &actor, "create", create).await)?;
                let q = queue(&id)?;
                Ok(Reply::json(201, &queue_state(&self.state, &q).await?))
            }
            ("PATCH", ["admin", "queues", id]) => {
                let q = queue(id)?;
                let doc = json_object(&read_body(session).await?)?;
                let (settings, definition): (serde_json::Map<_, _>, serde_json::Map<_, _>) =
                    doc.into_iter().partition(|(k, _)| SETTINGS_KEYS.contains(&k.as_str()));
                let patch: Patch = serde_json::from_value(serde_json::Value::Object(settings.clone()))
                    .map_err(|e| Reply::error(422, format!("expected a JSON object of settings: {e}")))?;
                if !definition.is_empty() {
                    let redefine = |c: &mut Catalog| {
                        let Some(e) = c.queues.iter_mut().find(|e| e.config.id == q.id()) else {
                            return Err(ChangeError::Conflict(format!("queue {:?} was deleted meanwhile", q.id())));
                        };
                        *e = redefined(e, &definition).map_err(ChangeError::Invalid)?;
                        Ok(())
                    };
                    change_reply(catalog::change(&self.state, q.id(), &actor, "redefine", redefine).await)?;
                }
                if !settings.is_empty() {
                    let mut next = q.settings();
                    patch.apply(&mut next)?;
                    change_reply(control::change(&self.state, &q, &actor, "update", |s| *s = next).await)?;
                }
                Ok(Reply::json(200, &queue_state(&self.state, &q).await?))
            }
            ("DELETE", ["admin", "queues", id]) => {
                let q = queue(id)?;
                let force = session.req_header().uri.query().is_some_and(|q| q.split('&').any(|p| p == "force=true"));
                let store = self.state.store().ok_or(Failure::StoreDown)?;
                let stats = store.stats(q.id()).await.map_err(|_| Failure::StoreDown)?;
                if !force && stats.waiting + stats.active > 0 {
                    return Err(Reply::error(
                        409,
                        format!(
                            "{} visitors wait and {} are admitted in {:?}; deleting it closes their line and \
                             opens its paths to everyone — add ?force=true to do it anyway",
                            stats.waiting,
                            stats.active,
                            q.id()
                        ),
                    ));
                }
                let delete = |c: &mut Catalog| {
                    c.queues.retain(|e| e.config.id != q.id());
                    Ok(())
                };
                let version = change_reply(catalog::change(&self.state, q.id(), &actor, "delete", delete).await)?;
                if let Err(e) = store.purge(q.id()).await {
                    // Its keys stay until a queue of that id is created again.
                    tracing::warn!(queue = q.id(), error = %e, "cannot forget a deleted queue's line");
                }
                Ok(Reply::json(200, &serde_json::json!({"deleted": q.id(), "catalog_version": version})))
            }
            ("GET", ["admin", "catalog"]) => Ok(Reply::json(
                200,
                &serde_json::json!({
                    "version": self.state.catalog.version(),
                    "queues": catalog::running(&self.state).queues,
                }),
            )),
            ("GET", ["admin", "queues", id, "ticks"]) => {
                let q = queue(id)?;
                let limit = match session.req_header().uri.query().and_then(|q| q.strip_prefix("limit=")) {
                    None => 100,
                    Some(v) => v.parse::<usize>().ok().filter(|n| (1..=TICK_LOG).contains(n)).ok_or_else(|| {
                        Reply::error(400, format!("limit must be a number between 1 and {TICK_LOG}, got {v:?}"))
                    })?,
                };
                let store = self.state.store().ok_or(Failure::StoreDown)?;
                let ticks = store.ticks(q.id(), limit).await.map_err(|_| Failure::StoreDown)?;
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
            ("POST", ["admin", "reload"]) => {
                match crate::reload::reload(&self.state, self.config_path.as_deref()).await {
                    Ok(changed) => Ok(Reply::json(200, &serde_json::json!({"changed": changed}))),
                    Err(e) => Err(Reply::problem(
                        Problem::new(422, format!("config rejected, nothing changed: {e}")).with("key", e.key),
                    )),
                }
            }
            (_, ["admin", "queues", ..] | ["admin", "reload"] | ["admin", "catalog"]) => {
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
