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
use serde::{Deserialize, Serialize};
use shared::config::{Secret, constant_time_eq, parse_duration};
use shared::problem::Problem;

use crate::catalog::{self, Catalog, Entry};
use crate::client::ClientKey;
use crate::config::QueueConfig;
use crate::control::{self, ChangeError};
use crate::http::Reply;
use crate::limits::{Refused, retry_after_secs};
use crate::problem::{Failure, unknown_queue};
use crate::queues::Queue;
use crate::state::State;
use crate::store::{SharedSettings, TICK_LOG};
use shared::config::ConfigError;

/// Largest admin request body (a queue with its page template inline).
const MAX_BODY: usize = catalog::MAX_TEMPLATE + 16 * 1024;

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

/// The keys of a PATCH that are live settings ([`Patch`]); every other key
/// belongs to the queue's definition (the catalog).
const SETTINGS_KEYS: [&str; 17] = [
    "free_entry",
    "release_per_tick",
    "tick",
    "session",
    "max_active",
    "abandon_after",
    "paused",
    "queue_all",
    "admission",
    "min_per_tick",
    "max_per_tick",
    "target_p99",
    "target_error_rate",
    "arrival_grace",
    "pin_per_tick",
    "mode",
    "message",
];

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

/// A queue's definition from a JSON object of `[[queues]]` keys (plus
/// `template`, the page template inline), as the config file would parse
/// it; an error names the key.
fn parse_entry(mut doc: serde_json::Map<String, serde_json::Value>) -> Result<Entry, ConfigError> {
    let template = match doc.remove("template") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(t)) => Some(t),
        Some(_) => return Err(ConfigError::new("template", "expected the page template as a string of HTML")),
    };
    let config: QueueConfig = serde_json::from_value(serde_json::Value::Object(doc.clone())).map_err(|e| {
        let text = e.to_string();
        // serde names a missing or unknown key between backticks; a value
        // of the wrong shape is found by trying each key on its own.
        let named = text.split('`').nth(1).filter(|k| doc.contains_key(*k) || text.starts_with("missing field"));
        let key = named.map(str::to_owned).or_else(|| culprit(&doc)).unwrap_or_else(|| "queue".into());
        ConfigError::new(key, text)
    })?;
    Ok(Entry { config, template })
}

/// The key of `doc` whose value alone fails to parse over a minimal queue.
fn culprit(doc: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    let base = serde_json::json!({"id": "q", "paths": ["/q"], "release_per_tick": 1, "tick": "1s", "session": "1m"});
    doc.iter()
        .find(|(k, v)| {
            let mut one = base.clone();
            one[k.as_str()] = (*v).clone();
            serde_json::from_value::<QueueConfig>(one).is_err()
        })
        .map(|(k, _)| k.clone())
}

/// `doc`'s keys laid over `entry`'s definition (a key set to `null` removes
/// an optional one). The id never changes.
fn redefined(entry: &Entry, doc: &serde_json::Map<String, serde_json::Value>) -> Result<Entry, ConfigError> {
    let mut whole = match serde_json::to_value(&entry.config) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => return Err(ConfigError::new("queue", "the stored definition cannot be read")),
    };
    if let Some(id) = doc.get("id")
        && id.as_str() != Some(entry.config.id.as_str())
    {
        return Err(ConfigError::new("id", "a queue's id never changes; create a new queue and delete this one"));
    }
    whole.insert("template".into(), entry.template.clone().map_or(serde_json::Value::Null, Into::into));
    for (k, v) in doc {
        whole.insert(k.clone(), v.clone());
    }
    // Optional keys sent as null: as if absent (the defaults apply).
    whole.retain(|_, v| !v.is_null());
    parse_entry(whole)
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
            self.state.queues.by_id(id).ok_or_else(|| unknown_queue(&self.state.queues, id))
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn base() -> serde_json::Map<String, Value> {
        let v = json!({"id": "drop", "paths": ["/drop"], "release_per_tick": 5, "tick": "2s", "session": "10m",
                       "opens_at": "2030-01-01T10:00:00Z", "template": "<p>{{queue_name}}</p>"});
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn an_entry_parses_as_the_config_file_would_and_errors_name_the_key() {
        let entry = parse_entry(base()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(entry.config.tick, std::time::Duration::from_secs(2));
        assert_eq!(entry.template.as_deref(), Some("<p>{{queue_name}}</p>"));
        let with = |k: &str, v: Value| {
            let mut m = base();
            m.insert(k.into(), v);
            parse_entry(m).err().map(|e| e.key)
        };
        assert_eq!(with("tick", json!(5)), Some("tick".into()));
        assert_eq!(with("closes_at", json!("soon")), Some("closes_at".into()));
        assert_eq!(with("shade", json!(1)), Some("shade".into()));
        assert_eq!(with("template", json!(1)), Some("template".into()));
        let mut m = base();
        m.remove("session");
        assert_eq!(parse_entry(m).err().map(|e| e.key), Some("session".into()));
    }

    #[test]
    fn a_redefinition_keeps_what_it_does_not_name_and_null_removes_a_key() {
        let entry = parse_entry(base()).unwrap_or_else(|e| panic!("{e}"));
        let doc = json!({"paths": ["/drop", "/more"], "opens_at": null});
        let next =
            redefined(&entry, doc.as_object().unwrap_or(&serde_json::Map::new())).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(next.config.paths, ["/drop", "/more"]);
        assert_eq!(next.config.opens_at, None);
        assert_eq!((next.config.release_per_tick, next.config.session), (5, std::time::Duration::from_secs(600)));
        assert_eq!(next.template, entry.template, "a template not named is kept");
        let renamed = json!({"id": "other"});
        assert_eq!(
            redefined(&entry, renamed.as_object().unwrap_or(&serde_json::Map::new())).err().map(|e| e.key),
            Some("id".into())
        );
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,20}".prop_map(Value::from),
            prop_oneof![Just("1s"), Just("/x"), Just("2030-01-01T00:00:00Z"), Just("pow"), Just("fifo")]
                .prop_map(Value::from),
        ];
        leaf.prop_recursive(2, 8, 4, |inner| prop::collection::vec(inner, 0..4).prop_map(Value::from))
    }

    const KEYS: [&str; 12] = [
        "id",
        "name",
        "paths",
        "release_per_tick",
        "tick",
        "session",
        "opens_at",
        "closes_at",
        "template",
        "challenge",
        "mode",
        "unknown",
    ];

    proptest! {
        /// Whatever an operator sends, parsing answers a definition or an
        /// error naming a key they sent or one that is missing; never a panic.
        #[test]
        fn any_object_parses_or_names_a_key(pairs in prop::collection::vec((prop::sample::select(&KEYS[..]), value()), 0..10)) {
            let doc: serde_json::Map<String, Value> = pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            match parse_entry(doc.clone()) {
                Ok(e) => {
                    for required in ["id", "paths", "release_per_tick", "tick", "session"] {
                        prop_assert!(doc.contains_key(required), "parsed without {required}: {e:?}");
                    }
                }
                Err(e) => prop_assert!(
                    doc.contains_key(&e.key) || ["id", "paths", "release_per_tick", "tick", "session", "queue"].contains(&e.key.as_str()),
                    "{} not among {:?}", e.key, doc.keys().collect::<Vec<_>>()
                ),
            }
            let entry = parse_entry(base()).unwrap_or_else(|e| panic!("{e}"));
            let _ = redefined(&entry, &doc);
        }
    }
}
