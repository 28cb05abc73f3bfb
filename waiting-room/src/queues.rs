//! The queues at runtime: each queue's definition (name, protected paths,
//! page template, schedule: replaced whole when an operator redefines the
//! queue, see `catalog.rs`), its live admission settings (see `control.rs`)
//! and what this instance measured and cached of it. The list itself changes
//! when operators create or delete queues; lookups take a snapshot.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use std::time::Instant;

use shared::config::ConfigError;

use crate::config::{Admission, ChallengeMode, QueueConfig, prefix_covers};
use crate::estimate::Estimator;
use crate::schedule::{Phase, Schedule};
use crate::store::{LotteryRecord, Params, SharedSettings};

/// What defines a queue: the config file's `[[queues]]` entry or the
/// catalog's, with its page template read. Replaced whole, never edited.
#[derive(Debug)]
pub struct Def {
    /// The queue's keys (its admission keys are the initial live settings).
    pub config: QueueConfig,
    /// The operator's page template, if any.
    pub template: Option<String>,
    /// The sale's schedule (from the config).
    pub schedule: Schedule,
}

impl Def {
    /// A definition from its config and template.
    pub fn new(config: QueueConfig, template: Option<String>) -> Self {
        Def { schedule: config.schedule(), config, template }
    }
}

/// One queue.
pub struct Queue {
    /// The id, fixed for the queue's life.
    id: String,
    /// The definition now (a `parking_lot::RwLock` around an `Arc`: readers
    /// take the `Arc` and let go at once; a redefinition swaps it).
    def: RwLock<Arc<Def>>,
    /// Live settings. A `parking_lot::RwLock` because reads happen on every
    /// request, writes only on an operator change, and nothing is awaited
    /// while it is held.
    admission: RwLock<Admission>,
    /// Releases suspended by the operator.
    paused: AtomicBool,
    /// Everybody queues (free entry off).
    queue_all: AtomicBool,
    /// The operator's message to everyone in the queue.
    message: RwLock<Option<Arc<str>>>,
    /// Measured release rate, for wait estimates.
    pub estimate: Estimator,
    /// Version of the shared settings applied last (0: the config file's).
    settings_version: AtomicU64,
    /// The challenge difficulty now, from the last tick's pressure.
    difficulty: AtomicU8,
    /// This instance's allowance while the store is down and the queue is
    /// `on_store_down = "open"` (see `degraded.rs`).
    pub open_door: OpenDoor,
    /// What this instance measured of the queue's admitted traffic since its
    /// last report to the store (see `signals.rs`).
    pub signals: crate::signals::Tally,
    /// The controller's last decision seen (0 before any), for rates and wait
    /// estimates in adaptive mode.
    last_n: AtomicU64,
    /// The same decision whole, for the admin API.
    last_decision: parking_lot::Mutex<Option<crate::adaptive::Record>>,
    /// The lottery as last read from the store (see `lottery.rs`): its
    /// commitment never changes, nor does a draw once made, so pages and
    /// `GET /wr/{q}/lottery` are answered from here.
    lottery: parking_lot::Mutex<Option<LotteryRecord>>,
    /// This instance knows the lottery was drawn.
    drawn: AtomicBool,
    /// The published draw as `GET /wr/{q}/lottery` answers it, built once:
    /// a drawn lottery never changes, and its entrant list can be long.
    pub published_draw: std::sync::OnceLock<bytes::Bytes>,
    /// What is left to sell at the last stock reading (`stop_when_sold_out`;
    /// `u64::MAX`: no reading yet).
    stock: AtomicU64,
    /// The queue was deleted: its tasks stop, its sockets are told `CLOSED`.
    retired: AtomicBool,
    /// This instance's tasks for the queue (ticker, lottery, …), stopped when
    /// the queue is deleted or redefined (see `admission::Runner`).
    tasks: parking_lot::Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Queue {
    /// A queue from its config, with the built-in page.
    pub fn new(config: QueueConfig) -> Self {
        Self::defined(Def::new(config, None))
    }

    /// A queue from its definition.
    pub fn defined(def: Def) -> Self {
        let config = &def.config;
        let admission = RwLock::new(config.admission());
        let difficulty = AtomicU8::new(config.challenge_min_bits);
        let message = RwLock::new(config.message.as_deref().map(Arc::from));
        Queue {
            id: config.id.clone(),
            retired: AtomicBool::new(false),
            tasks: Default::default(),
            lottery: Default::default(),
            drawn: AtomicBool::new(false),
            published_draw: std::sync::OnceLock::new(),
            stock: AtomicU64::new(u64::MAX),
            def: RwLock::new(Arc::new(def)),
            admission,
            paused: AtomicBool::new(false),
            queue_all: AtomicBool::new(false),
            message,
            estimate: Estimator::default(),
            settings_version: AtomicU64::new(0),
            difficulty,
            open_door: Default::default(),
            signals: Default::default(),
            last_n: AtomicU64::new(0),
            last_decision: Default::default(),
        }
    }

    /// The definition now.
    pub fn def(&self) -> Arc<Def> {
        self.def.read().clone()
    }

    /// An operator redefined the queue: later requests see `def`. Live
    /// settings, the line and this instance's measurements stay.
    pub fn redefine(&self, def: Def) {
        // A queue still on its definition's settings (no operator change
        // saved) takes the new definition's.
        if self.settings_version.load(Ordering::Acquire) == 0 {
            *self.admission.write() = def.config.admission();
            *self.message.write() = def.config.message.as_deref().map(Arc::from);
        }
        *self.def.write() = Arc::new(def);
    }

    /// The queue was deleted: stop its tasks here.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.stop_tasks();
    }

    /// Whether the queue was deleted.
    pub fn retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Keep `task` to stop it with the queue.
    pub fn hold_task(&self, task: tokio::task::AbortHandle) {
        self.tasks.lock().push(task);
    }

    /// Stop this instance's tasks for the queue.
    pub fn stop_tasks(&self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }

    /// Whether a new place needs a solved challenge.
    pub fn challenge_on(&self) -> bool {
        self.def().config.challenge == ChallengeMode::Pow
    }

    /// The difficulty a challenge issued now gets.
    pub fn difficulty(&self) -> u8 {
        self.difficulty.load(Ordering::Relaxed)
    }

    /// A tick added `joined` places: set the difficulty from it (see `challenge.rs`).
    pub fn note_pressure(&self, joined: u64) {
        let def = self.def();
        let c = &def.config;
        let bits = crate::challenge::difficulty(joined, self.current_n(), c.challenge_min_bits, c.challenge_max_bits);
        self.difficulty.store(bits, Ordering::Relaxed);
    }

    /// The queue id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Current admission settings.
    pub fn admission(&self) -> Admission {
        *self.admission.read()
    }

    /// Operator switches.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// The operator's message to everyone in the queue, if any.
    pub fn message(&self) -> Option<Arc<str>> {
        self.message.read().clone()
    }

    /// Whether free entry is off.
    pub fn queue_all(&self) -> bool {
        self.queue_all.load(Ordering::Relaxed)
    }

    /// The N ticks release now: the operator's in fixed mode; in adaptive
    /// mode the pin, or the last N a tick was allowed (the controller's).
    pub fn current_n(&self) -> u64 {
        let a = self.admission();
        let seen = self.last_n.load(Ordering::Relaxed);
        a.effective_n((seen > 0).then_some(seen))
    }

    /// The controller's last decision is `d`.
    pub fn note_decision(&self, d: &crate::adaptive::Record) {
        if d.n > 0 {
            self.last_n.store(d.n, Ordering::Relaxed);
        }
        let mut last = self.last_decision.lock();
        if last.as_ref().is_none_or(|l| l.tick != d.tick || l.n != d.n) {
            *last = Some(d.clone());
        }
    }

    /// The controller's last decision seen here.
    pub fn last_decision(&self) -> Option<crate::adaptive::Record> {
        self.last_decision.lock().clone()
    }

    /// Configured admissions per second (N / T; adaptive: the controller's N).
    pub fn configured_rate(&self) -> f64 {
        let a = self.admission();
        self.current_n() as f64 / a.tick.as_secs_f64().max(0.001)
    }

    /// Seconds until the visitor at `position` gets in.
    pub fn eta_seconds(&self, position: u64, now_ms: i64) -> u64 {
        let tick_ms = u64::try_from(self.admission().tick.as_millis()).unwrap_or(u64::MAX);
        self.estimate.eta_seconds(position, self.configured_rate(), tick_ms, now_ms)
    }

    /// The live settings as one value.
    pub fn settings(&self) -> SharedSettings {
        SharedSettings {
            admission: self.admission(),
            paused: self.paused(),
            queue_all: self.queue_all(),
            message: self.message().map(|m| m.to_string()),
            version: self.settings_version.load(Ordering::Acquire),
        }
    }

    /// The store lost the settings (see `control::restore`): versions count
    /// from 0 again.
    pub fn forget_settings_version(&self) {
        self.settings_version.store(0, Ordering::Release);
    }

    /// Apply shared settings unless a newer version is already applied.
    /// Returns whether anything was applied.
    pub fn apply(&self, s: &SharedSettings) -> bool {
        let mut admission = self.admission.write();
        if s.version <= self.settings_version.load(Ordering::Acquire) {
            return false;
        }
        *admission = s.admission;
        self.paused.store(s.paused, Ordering::Relaxed);
        self.queue_all.store(s.queue_all, Ordering::Relaxed);
        *self.message.write() = s.message.as_deref().map(Arc::from);
        self.settings_version.store(s.version, Ordering::Release);
        true
    }

    /// What the store needs for a call now. Before the line opens (and in
    /// the pre-queue until the draw) nothing is released and nobody enters
    /// freely or is taken for abandoned: the line only gathers.
    pub fn params(&self) -> Params {
        let mut p = Params::from_admission(&self.admission());
        p.paused = self.paused();
        p.queue_all = self.queue_all();
        p.entrants_until_ms = self.def().schedule.entrants_until_ms();
        // Reject: nobody is released (nobody new joins: see `join`).
        p.paused |= p.mode == crate::config::QueueMode::Reject;
        // Sold out: nobody is released; stock left: at most that many a tick.
        match self.stock_left() {
            Some(0) => p.paused = true,
            Some(left) => p.release_cap = left,
            None => {}
        }
        if matches!(self.phase(crate::clock::now_ms()), Phase::Scheduled | Phase::PreQueue) {
            p.paused = true;
            p.queue_all = true;
            p.abandon_after_ms = 0;
        }
        p
    }

    /// What is left to sell, if this queue follows the stock and it was read.
    pub fn stock_left(&self) -> Option<u64> {
        let units = self.stock.load(Ordering::Relaxed);
        (self.def().config.stop_when_sold_out && units != u64::MAX).then_some(units)
    }

    /// Sold out: the queue follows the stock and none is left.
    pub fn sold_out(&self) -> bool {
        self.stock_left() == Some(0)
    }

    /// A stock reading: `units` left. Returns whether the queue went from
    /// sold out to not or back (everyone in line must hear it).
    pub fn note_stock(&self, units: u64) -> bool {
        let before = self.stock.swap(units, Ordering::Relaxed);
        (before == 0) != (units == 0) && (before != u64::MAX || units == 0)
    }

    /// Where the schedule stands now on this instance.
    pub fn phase(&self, now_ms: i64) -> Phase {
        if self.retired() {
            return Phase::Closed;
        }
        self.def().schedule.phase(now_ms, self.drawn.load(Ordering::Acquire))
    }

    /// The lottery as last read from the store.
    pub fn lottery(&self) -> Option<LotteryRecord> {
        self.lottery.lock().clone()
    }

    /// The store's lottery record was read: keep it; a drawn one opens the
    /// line on this instance. Returns whether this is news of the draw.
    pub fn note_lottery(&self, record: Option<LotteryRecord>) -> bool {
        let drawn = record.as_ref().is_some_and(|r| r.drawn.is_some());
        *self.lottery.lock() = record;
        drawn && !self.drawn.swap(true, Ordering::AcqRel)
    }
}

/// All queues, looked up by id or by protected path: a snapshot replaced
/// whole when the catalog changes, so a lookup never sees half a change.
#[derive(Default)]
pub struct Queues {
    now: RwLock<Arc<Snapshot>>,
}

/// The queues at one moment, with their path prefixes resolved.
#[derive(Default)]
struct Snapshot {
    list: Vec<Arc<Queue>>,
    /// (prefix, index into `list`) for every protected path prefix.
    routes: Vec<(Box<str>, usize)>,
}

impl Snapshot {
    fn of(list: Vec<Arc<Queue>>) -> Self {
        let mut routes = Vec::new();
        for (i, q) in list.iter().enumerate() {
            routes.extend(q.def().config.paths.iter().map(|p| (Box::from(p.as_str()), i)));
        }
        Snapshot { list, routes }
    }
}

impl Queues {
    /// From validated config (ids unique, prefixes disjoint), without
    /// reading any page template.
    pub fn new(configs: &[QueueConfig]) -> Self {
        Self::of(configs.iter().cloned().map(|c| Arc::new(Queue::new(c))).collect())
    }

    /// These queues.
    pub fn of(list: Vec<Arc<Queue>>) -> Self {
        Queues { now: RwLock::new(Arc::new(Snapshot::of(list))) }
    }

    /// From validated config, reading each queue's page template.
    pub fn load(configs: &[QueueConfig]) -> Result<Self, ConfigError> {
        let mut list = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            let template = read_template(c).map_err(|m| ConfigError::new(format!("queues[{i}].page_template"), m))?;
            list.push(Arc::new(Queue::defined(Def::new(c.clone(), template))));
        }
        Ok(Self::of(list))
    }

    /// Replace the list (ids unique, prefixes disjoint: the catalog was
    /// validated); also after redefining a queue, whose paths may have moved.
    pub fn replace(&self, list: Vec<Arc<Queue>>) {
        *self.now.write() = Arc::new(Snapshot::of(list));
    }

    /// Every queue.
    pub fn all(&self) -> Vec<Arc<Queue>> {
        self.now.read().list.clone()
    }

    /// The queue with this id.
    pub fn by_id(&self, id: &str) -> Option<Arc<Queue>> {
        self.now.read().list.iter().find(|q| q.id() == id).cloned()
    }

    /// The queue protecting `path`, if any. Prefixes of different queues never
    /// overlap (validation), so the first match is the only one.
    pub fn for_path(&self, path: &str) -> Option<Arc<Queue>> {
        let now = self.now.read();
        now.routes.iter().find(|(p, _)| prefix_covers(p, path)).and_then(|(_, i)| now.list.get(*i).cloned())
    }
}

/// The page template a queue's config names, read.
pub fn read_template(c: &QueueConfig) -> Result<Option<String>, String> {
    match &c.page_template {
        None => Ok(None),
        Some(path) => {
            std::fs::read_to_string(path).map(Some).map_err(|e| format!("cannot read {}: {e}", path.display()))
        }
    }
}

/// The per-instance allowance of an open queue while its store is down.
#[derive(Debug)]
pub struct OpenDoor {
    /// Tokens left and when they were counted.
    bucket: Mutex<(f64, Instant)>,
}

impl Default for OpenDoor {
    fn default() -> Self {
        OpenDoor { bucket: Mutex::new((f64::NAN, Instant::now())) }
    }
}

impl OpenDoor {
    /// Take one admission at `rate` per second with a burst of `burst`.
    /// (See `degraded.rs`, which decides when the door is open.)
    pub fn take(&self, rate: f64, burst: f64, now: Instant) -> bool {
        let mut b = self.bucket.lock();
        // A fresh door starts full.
        let tokens = if b.0.is_nan() { burst } else { b.0 };
        let refilled = (tokens + now.saturating_duration_since(b.1).as_secs_f64() * rate).min(burst);
        if refilled >= 1.0 {
            *b = (refilled - 1.0, now);
            true
        } else {
            *b = (refilled, now);
            false
        }
    }
}

/// What this instance knows of the catalog of queues (`catalog.rs`, which
/// changes it; it sits here so that `State` does not depend on the catalog).
pub struct CatalogLocal {
    /// The version applied here (0: the config file's queues, none read yet).
    pub(crate) version: AtomicU64,
    /// `[stock] url` is set (a queue may then follow the stock).
    pub(crate) stock_configured: AtomicBool,
    /// Starts a queue's tasks on this instance (set by the admission
    /// service once the store is connected).
    pub(crate) starter: std::sync::OnceLock<Starter>,
    /// Serializes applying catalogs here.
    pub(crate) applying: tokio::sync::Mutex<()>,
    /// Changes made through this instance take turns, so they race only
    /// with other instances' changes.
    pub(crate) changing: tokio::sync::Mutex<()>,
    /// Bumped whenever the set of queue ids changes here (the pub/sub
    /// listener subscribes to the new queues' channels).
    pub(crate) ids: tokio::sync::watch::Sender<u64>,
}

impl Default for CatalogLocal {
    fn default() -> Self {
        CatalogLocal {
            version: AtomicU64::new(0),
            stock_configured: AtomicBool::new(false),
            starter: std::sync::OnceLock::new(),
            applying: tokio::sync::Mutex::new(()),
            changing: tokio::sync::Mutex::new(()),
            ids: tokio::sync::watch::Sender::new(0),
        }
    }
}

/// Starts a queue's tasks (see `admission::Runner`).
pub type Starter = Arc<dyn Fn(&Arc<Queue>) + Send + Sync>;

impl CatalogLocal {
    /// Note whether `[stock] url` is set.
    pub fn set_stock_configured(&self, yes: bool) {
        self.stock_configured.store(yes, Ordering::Relaxed);
    }

    /// The version applied here.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Hear when the set of queues changes.
    pub fn watch_ids(&self) -> tokio::sync::watch::Receiver<u64> {
        self.ids.subscribe()
    }
}
