//! The catalog: which queues run, shared by every instance on the store.
//!
//! Operators create, redefine and delete queues through the admin API
//! (`admin.rs`); the catalog is the list of queue definitions (the keys of
//! `[[queues]]`, with each page template inline, since instances may run on
//! different machines) kept in the store under one version number. A change
//! is a compare-and-set on that version — two operators never overwrite each
//! other; the loser's change is redone on the newer catalog or refused — and
//! every instance applies the newest version it reads: at once when the
//! store announces it (Redis pub/sub), otherwise at its next check, once a
//! second. The memory backend has one instance, which applies its own
//! changes at once.
//!
//! The config file is the initial state: the first instance to find no
//! catalog in the store saves its file's queues; after that the store wins,
//! so restarting an instance with an older file undoes nothing. SIGHUP
//! creates or redefines the queues the file lists (and leaves queues only the
//! catalog has); a store that lost the catalog (Redis restarted empty) gets
//! the one the instances run back from the first to notice.
//!
//! Applying a catalog on an instance: a new queue gets its tasks (ticker,
//! lottery, keep-alive), a place in the push hub and a route; a redefined
//! queue keeps its line, live settings, sockets and measurements, takes the
//! new definition whole and restarts its tasks (its schedule may have
//! changed); a deleted queue stops its tasks, tells every socket `CLOSED`,
//! closes them and stops protecting its paths. Lookups see the old list or
//! the new one, never half of it (`Queues::replace`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use shared::config::ConfigError;

use crate::config::{QueueConfig, validate_queues};
use crate::control::ChangeError;
use crate::metrics::METRICS;
use crate::queues::{Def, Queue};
use crate::state::State;
use crate::store::StoreError;

/// Largest page template the catalog carries.
pub const MAX_TEMPLATE: usize = 64 * 1024;

/// Attempts of a change against concurrent changes on other instances
/// (changes on one instance take turns), each after a short random pause.
const ATTEMPTS: u32 = 10;

/// One queue as the catalog keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The queue's keys, as in `[[queues]]` (`page_template` unset: the
    /// template itself is below).
    pub config: QueueConfig,
    /// The page template, if the queue has its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

impl Entry {
    /// The entry of a queue running here.
    pub fn of(queue: &Queue) -> Self {
        let def = queue.def();
        // The template is carried inline; a file name means nothing on
        // another machine.
        Entry { config: QueueConfig { page_template: None, ..def.config.clone() }, template: def.template.clone() }
    }

    /// The entry of a config file's queue: its template file read.
    pub fn from_file(config: &QueueConfig) -> Result<Self, String> {
        let template = crate::queues::read_template(config)?;
        Ok(Entry { config: QueueConfig { page_template: None, ..config.clone() }, template })
    }
}

/// The catalog as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Every queue, in order (the order pages and the admin API list them).
    pub queues: Vec<Entry>,
}

impl Catalog {
    fn parse(json: &str) -> Result<Self, StoreError> {
        serde_json::from_str(json).map_err(StoreError::json("the stored catalog of queues is unreadable"))
    }
}

/// Check a catalog as the config file is checked (same rules, same key
/// names: `queues[2].paths[0]`), plus what only a catalog carries.
pub fn validate(catalog: &Catalog, stock_configured: bool) -> Result<(), ConfigError> {
    let configs: Vec<QueueConfig> = catalog.queues.iter().map(|e| e.config.clone()).collect();
    validate_queues(&configs, stock_configured, false).map_err(|e| {
        // Name the queue too: an index in the catalog means little to the
        // operator who sent one queue.
        let id = e
            .key
            .strip_prefix("queues[")
            .and_then(|k| k.split(']').next())
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| catalog.queues.get(i));
        match id {
            Some(entry) => ConfigError::new(e.key.clone(), format!("{} (queue {:?})", e.message, entry.config.id)),
            None => e,
        }
    })?;
    for (i, e) in catalog.queues.iter().enumerate() {
        if e.config.page_template.is_some() {
            return Err(ConfigError::new(
                format!("queues[{i}].page_template"),
                "names a file on one machine; send the template itself as `template`",
            ));
        }
        if let Some(t) = &e.template
            && t.len() > MAX_TEMPLATE
        {
            return Err(ConfigError::new(
                format!("queues[{i}].template"),
                format!("{} bytes; a page template may have at most {MAX_TEMPLATE}", t.len()),
            ));
        }
    }
    Ok(())
}

/// Starts a queue's tasks (see `admission::Runner`).
pub use crate::queues::Starter;

/// The store is connected: save this instance's queues as the catalog if
/// the store has none, else run the stored one; then start every queue's
/// tasks through `starter`.
pub async fn start(state: &Arc<State>, starter: Starter) {
    if !sync(state).await {
        tracing::warn!("cannot read the catalog of queues yet; running the config file's until the next check");
    }
    // From here on, applying a catalog starts and stops tasks itself.
    let _serial = state.catalog.applying.lock().await;
    let _ = state.catalog.starter.set(starter.clone());
    for q in state.queues.all() {
        starter(&q);
    }
}

/// Read the catalog and apply it if it is not the version applied here; a
/// store without one gets this instance's. Returns whether the store
/// answered.
pub async fn sync(state: &Arc<State>) -> bool {
    let Some(store) = state.store() else { return false };
    // A store known to be down would only say so again; the queues running
    // here stay as they are until it answers.
    if store.known_down() {
        return false;
    }
    // Twice: another instance may save a missing catalog between our read
    // and our save; theirs is then read and run.
    for _ in 0..2 {
        let loaded = match store.load_catalog().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the catalog of queues");
                return false;
            }
        };
        let (version, catalog) = match loaded {
            Some((version, json)) => match Catalog::parse(&json) {
                Ok(c) => (version, c),
                Err(e) => {
                    tracing::error!(error = %e, "the stored catalog is unreadable; the queues running here stay");
                    return true;
                }
            },
            None => {
                // First start, or the store forgot: what runs here is the catalog.
                let ours = running(state);
                let json = serde_json::to_string(&ours).unwrap_or_default();
                match store.save_catalog(0, &json).await {
                    Ok(Some(v)) => {
                        tracing::info!(version = v, queues = ours.queues.len(), "saved the catalog of queues");
                        (v, ours)
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot save the catalog of queues");
                        return false;
                    }
                }
            }
        };
        if version != state.catalog.version() {
            apply(state, version, catalog).await;
        }
        return true;
    }
    false
}

/// Whether the stored catalog (or, if none is stored, this instance's)
/// has a queue `id`: asked before anything is done for a new queue, since
/// another instance may have created it a moment ago.
pub async fn has(state: &State, id: &str) -> Result<bool, StoreError> {
    let store = state.store().ok_or(StoreError::NOT_CONNECTED)?;
    Ok(match store.load_catalog().await? {
        Some((_, json)) => Catalog::parse(&json)?.queues.iter().any(|e| e.config.id == id),
        None => state.queues.by_id(id).is_some(),
    })
}

/// The catalog this instance runs.
pub fn running(state: &State) -> Catalog {
    Catalog { queues: state.queues.all().iter().map(|q| Entry::of(q)).collect() }
}

/// Check the catalog once a second until the process ends (pub/sub makes it
/// sooner on Redis; this catches a missed message and a store that forgot).
pub async fn watch(state: Arc<State>) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        sync(&state).await;
    }
}

/// Run `catalog` (version `version`) here.
async fn apply(state: &Arc<State>, version: u64, catalog: Catalog) {
    let _serial = state.catalog.applying.lock().await;
    if version == state.catalog.version() {
        return;
    }
    let starter = state.catalog.starter.get().cloned();
    let current = state.queues.all();
    let mut next = Vec::with_capacity(catalog.queues.len());
    let (mut created, mut redefined) = (Vec::new(), Vec::new());
    for entry in catalog.queues {
        match current.iter().find(|q| q.id() == entry.config.id) {
            Some(q) => {
                if Entry::of(q) != entry {
                    q.redefine(Def::new(entry.config, entry.template));
                    redefined.push(q.clone());
                }
                next.push(q.clone());
            }
            None => {
                let q = Arc::new(Queue::defined(Def::new(entry.config, entry.template)));
                state.hub.add(q.id());
                created.push(q.clone());
                next.push(q);
            }
        }
    }
    let deleted: Vec<Arc<Queue>> = current.iter().filter(|q| !next.iter().any(|n| n.id() == q.id())).cloned().collect();
    state.queues.replace(next);
    state.catalog.version.store(version, Ordering::Release);
    for q in &deleted {
        q.retire();
        crate::push::refresh_all(state, q).await;
        state.hub.remove(q.id());
        tracing::info!(queue = q.id(), version, "queue deleted");
    }
    for q in &created {
        crate::control::sync(state, q).await;
        tracing::info!(queue = q.id(), version, "queue created");
    }
    for q in &redefined {
        tracing::info!(queue = q.id(), version, "queue redefined");
    }
    if let Some(start) = &starter {
        for q in created.iter().chain(&redefined) {
            q.stop_tasks();
            start(q);
        }
    }
    for q in &redefined {
        crate::push::refresh_all(state, q).await;
    }
    if !created.is_empty() || !deleted.is_empty() {
        state.catalog.ids.send_modify(|n| *n += 1);
    }
    METRICS.queues.set(i64::try_from(state.queues.all().len()).unwrap_or(i64::MAX));
    METRICS.catalog_version.set(i64::try_from(version).unwrap_or(i64::MAX));
}

/// Change the catalog with `edit`, validated like the config file, saved
/// for every instance (redone on the newer catalog if another change came
/// first) and applied here. Returns the new version.
pub async fn change(
    state: &Arc<State>,
    queue: &str,
    actor: &str,
    action: &'static str,
    edit: impl Fn(&mut Catalog) -> Result<(), ChangeError>,
) -> Result<u64, ChangeError> {
    let store = state.store().ok_or(StoreError::NOT_CONNECTED)?;
    let _turn = state.catalog.changing.lock().await;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            let pause = rand::random::<u64>() % (5 << attempt.min(5));
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        }
        let (expected, mut catalog) = match store.load_catalog().await? {
            Some((v, json)) => (v, Catalog::parse(&json)?),
            None => (0, running(state)),
        };
        edit(&mut catalog)?;
        validate(&catalog, state.catalog.stock_configured.load(Ordering::Relaxed)).map_err(ChangeError::Invalid)?;
        let json = serde_json::to_string(&catalog).map_err(StoreError::json("cannot encode the catalog"))?;
        if let Some(version) = store.save_catalog(expected, &json).await? {
            METRICS.admin_changes.with_label_values(&[queue, action]).inc();
            tracing::info!(queue, actor, action, version, "catalog of queues changed");
            apply(state, version, catalog).await;
            return Ok(version);
        }
    }
    Err(ChangeError::Conflict("other changes to the catalog kept coming first; try again".into()))
}
