//! The queue store: one trait, two backends with the same semantics.
//!
//! - [`memory::MemoryStore`]: in-process, for a single instance with no external
//!   service (the embedded default).
//! - [`redis::RedisStore`]: shared by any number of proxy instances; every step
//!   that touches more than one key is one Lua script, so it is atomic, and all
//!   keys of a queue share the hash tag `{<prefix>:<queue>}` (Redis Cluster safe).
//!   It runs on one server, a Cluster or a Sentinel-watched primary
//!   ([`connection`]).
//!
//! # Semantics both backends implement
//!
//! - A queue's line is ordered by a per-queue sequence number handed out at join
//!   (never a timestamp: equal timestamps would break FIFO). `position` is
//!   1 + the number of visitors ahead.
//! - Joining is idempotent: a visitor already waiting keeps their place; one with
//!   a live session stays READY.
//! - Free entry: while nobody waits and fewer than `free_entry` sessions are
//!   active (and below `max_active` when capped), a join is admitted at once.
//! - [`QueueStore::release`] is called by every instance's ticker as often as it
//!   likes; it releases only when at least `tick` has passed since the previous
//!   release of that queue by *any* instance, so any window of length `tick`
//!   contains at most one release of at most N visitors.
//! - Modes ([`Params::mode`]): `random` ticks release N drawn uniformly from
//!   everyone waiting instead of the longest waiting; `passthrough` joins
//!   are admitted at once whoever waits (below `max_active`), and a tick
//!   releases everyone waiting (within `max_active`).
//! - Sessions are fixed: they end at admission + `session`; expired sessions stop
//!   counting as active and their visitor is NOT_IN_QUEUE again.
//! - Abandonment: a waiting visitor not seen (join, status poll, open WebSocket)
//!   for `abandon_after` is removed at the next release without taking a slot,
//!   and loses the place if they come back later.
//!
//! - Places per client: a join that would add a waiting place for a client
//!   (a keyed hash of its address, [`JoinChecks::client`]) already holding
//!   `max_per_client` places in the line is refused ([`JoinKind::ClientFull`]).
//!   Each place remembers its client until it leaves the line (released,
//!   abandoned, lost on return), so the count is the places still waiting;
//!   when a client is at the cap its places are also checked against the
//!   line, so a count that ever drifted heals itself. Free entry is not a
//!   waiting place and is not counted.
//! - Challenge: when a join needs a proof of work ([`Proof`]), a join that
//!   would add a place or admit at once is refused without one
//!   ([`JoinKind::NeedsChallenge`]); a verified solution's seed is accepted
//!   once ([`JoinKind::ChallengeSpent`] after that) and remembered until a
//!   minute past its challenge's expiry. A visitor already waiting or
//!   admitted never needs one.
//! - Pressure: every tick reports how many places were added since the
//!   previous tick ([`Release::joined`]), from which each instance sets the
//!   challenge difficulty.
//!
//! Times are milliseconds since the Unix epoch from the store's clock (Redis
//! `TIME` for the Redis backend), so all instances agree on them.

pub mod breaker;
pub mod connection;
pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;
use shared::visitor::VisitorId;

use crate::config::Admission;

/// Open the store `config` names: in-process memory, or Redis (one server,
/// a Cluster, or the primary the sentinels name) behind the circuit breaker.
/// Call inside the runtime that will live as long as the store (see
/// `redis::RedisStore::open`).
pub async fn open(config: &crate::config::StoreConfig) -> Result<std::sync::Arc<dyn QueueStore>, StoreError> {
    use std::sync::Arc;
    match config.backend {
        crate::config::Backend::Memory => Ok(Arc::new(memory::MemoryStore::new())),
        crate::config::Backend::Redis => {
            let store = redis::RedisStore::open(config).await?;
            tracing::info!(redis = %config.describe(), "connected to Redis");
            Ok(Arc::new(breaker::Breaker::new(Arc::new(store))))
        }
    }
}

/// Where a visitor stands in a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// In line.
    Waiting {
        /// 1 + visitors ahead.
        position: u64,
        /// Visitors in line in total.
        waiting: u64,
    },
    /// Admitted, session running.
    Ready {
        /// Admission time (ms).
        admitted_at_ms: i64,
        /// End of the session (ms).
        expires_at_ms: i64,
    },
    /// Neither waiting nor admitted.
    NotInQueue,
}

/// What a join did, beyond the resulting standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    /// Appended to the back of the line.
    Joined,
    /// Already waiting or admitted; nothing changed.
    Existing,
    /// Admitted at once (free entry).
    FreeEntry,
    /// Came back after `abandon_after`: placed at the back again.
    Rejoined,
    /// Came back with a queue ticket of a line the store lost: placed by the
    /// ticket's sequence number, ahead of the new line's arrivals.
    Restored,
    /// Let in without the store, which is down (the queue's `on_store_down`
    /// is `open`). No store answers this.
    OpenDoor,
    /// Refused: the client already holds `max_per_client` places in the line.
    ClientFull,
    /// Refused: a new place needs a solved challenge and none was given.
    NeedsChallenge,
    /// Refused: this challenge's solution was already used for a place.
    ChallengeSpent,
}

impl JoinKind {
    /// Whether the join was refused (the standing is then NOT_IN_QUEUE).
    pub fn refused(self) -> bool {
        matches!(self, JoinKind::ClientFull | JoinKind::NeedsChallenge | JoinKind::ChallengeSpent)
    }
}

/// Whether a join needs a proof of work, and the one it brings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Proof {
    /// The queue asks for none.
    #[default]
    NotRequired,
    /// A new place needs one and the request brought none.
    Missing,
    /// A verified solution (see `challenge.rs`): its seed buys one place.
    Solved {
        /// The challenge's seed.
        seed: String,
        /// When the challenge expires (ms since the epoch).
        expires_at_ms: i64,
    },
}

/// What a join must satisfy besides the queue's admission settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinChecks {
    /// The client (a keyed hash of its address, never the address); `None`:
    /// not counted.
    pub client: Option<String>,
    /// Waiting places one client may hold in the line (0: no cap).
    pub max_per_client: u64,
    /// The proof of work.
    pub proof: Proof,
    /// The visitor's verified queue ticket: where they stood in an earlier
    /// epoch of this line.
    pub ticket: Option<Place>,
}

/// A place in a line: the line's epoch and the visitor's sequence number in
/// it (what a queue ticket signs, see `ticket.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// The line's epoch: a random id the store writes with the line, so a
    /// store that lost the line shows another.
    pub epoch: u64,
    /// The visitor's sequence number: smaller is earlier.
    pub seq: u64,
}

/// A join's full answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// Where the visitor stands now.
    pub standing: Standing,
    /// What the join did.
    pub kind: JoinKind,
    /// Their place while waiting (`None` otherwise, and from a store that
    /// keeps no epochs).
    pub place: Option<Place>,
}

/// How long a spent seed is remembered after its challenge expires: another
/// instance whose clock runs behind may still take the challenge for valid.
pub const SPENT_GRACE_MS: i64 = 60_000;

/// The settings the store needs for one call, taken from [`Admission`] plus
/// operator switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// N
    pub release_per_tick: u64,
    /// T in ms
    pub tick_ms: u64,
    /// M in ms
    pub session_ms: u64,
    /// Free-entry threshold (0 = nobody enters without queueing).
    pub free_entry: u64,
    /// Cap on live sessions, 0 = none.
    pub max_active: u64,
    /// Abandonment window in ms, 0 = never.
    pub abandon_after_ms: u64,
    /// Releases suspended by the operator.
    pub paused: bool,
    /// Everybody queues, even when free entry would let them in.
    pub queue_all: bool,
    /// Adaptive admission: N is the controller's last decision saved in the
    /// store, within these bounds (`None`: N is `release_per_tick`).
    pub adaptive: Option<AdaptiveParams>,
    /// Admitted visitors with no request this long after admission are
    /// no-shows (0: arrivals are not tracked).
    pub arrival_grace_ms: u64,
    /// Joins before this store time (ms) are entrants of the queue's
    /// lottery (0: the queue has none). See [`QueueStore::draw`].
    pub entrants_until_ms: i64,
    /// How the line lets visitors in (`Reject` never reaches the store: the
    /// instance refuses joins and pauses releases).
    pub mode: crate::config::QueueMode,
    /// A tick releases at most this many (what is left to sell; 0: no cap).
    pub release_cap: u64,
}

/// The adaptive mode's part of [`Params`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptiveParams {
    /// Lowest N.
    pub min: u64,
    /// Highest N.
    pub max: u64,
    /// The operator's pin (0: none): N is this, whatever was decided.
    pub pin: u64,
}

impl AdaptiveParams {
    /// The N a tick may release, given the decision saved (if any).
    pub fn n(&self, decided: Option<u64>) -> u64 {
        let (lo, hi) = (self.min.max(1), self.max.max(self.min.max(1)));
        if self.pin > 0 { self.pin.min(hi) } else { decided.unwrap_or(lo).clamp(lo, hi) }
    }
}

impl Params {
    /// Store parameters from admission settings.
    pub fn from_admission(a: &Admission) -> Self {
        Params {
            release_per_tick: a.release_per_tick,
            tick_ms: ms(a.tick),
            session_ms: ms(a.session),
            free_entry: a.free_entry,
            max_active: a.max_active,
            abandon_after_ms: ms(a.abandon_after),
            paused: false,
            queue_all: false,
            adaptive: (a.mode == crate::config::AdmissionMode::Adaptive).then_some(AdaptiveParams {
                min: a.min_per_tick,
                max: a.max_per_tick,
                pin: a.pin_per_tick,
            }),
            arrival_grace_ms: ms(a.arrival_grace),
            entrants_until_ms: 0,
            mode: a.queue_mode,
            release_cap: 0,
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Result of a [`QueueStore::release`] call.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Release {
    /// Whether a tick happened in this call (false: not due yet).
    pub ticked: bool,
    /// Tick number of the queue (counts every tick by any instance).
    pub tick: u64,
    /// Visitors released by this tick, in admission (= join) order.
    pub released: Vec<VisitorId>,
    /// Waiting visitors removed as abandoned by this tick.
    pub abandoned: u64,
    /// Store time of the call (ms); the admission time of `released`.
    pub now_ms: i64,
    /// How long until the next tick is due.
    pub next_due_in_ms: u64,
    /// Visitors in line after the call.
    pub waiting: u64,
    /// Live sessions after the call.
    pub active: u64,
    /// Places added to the line during the last completed tick interval
    /// (the challenge's measure of pressure).
    pub joined: u64,
    /// The line's epoch (0: unknown); a new one means the store lost the line
    /// and the tick count started again.
    pub epoch: u64,
    /// The N this call's tick was allowed to release (0 when it did not tick).
    pub n: u64,
    /// Admitted visitors this tick found to be no-shows.
    pub no_shows: u64,
    /// The signals of every instance merged since the previous tick, handed
    /// to the caller whose call ticked and to no other (so the controller
    /// decides once per tick).
    pub window: Option<Window>,
    /// The controller's last decision saved in the store, if any.
    pub decision: Option<crate::adaptive::Record>,
}

/// The controller's input, merged in the store (defined with the
/// controller, which reads it; the store only adds it up).
pub use crate::adaptive::Window;

/// One instance's measurements since its previous report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// Which instance (in-flight counts are per instance, not added up).
    pub instance: u64,
    /// `(bucket, count)` of latencies, only buckets with a count.
    pub buckets: Vec<(usize, u64)>,
    /// Requests that finished.
    pub samples: u64,
    /// Of which failed.
    pub errors: u64,
    /// Requests in flight on this instance now.
    pub in_flight: u64,
    /// Admitted visitors seen here for the first time: id and the token's
    /// `iat` (seconds), which says which admission it belongs to.
    pub arrivals: Vec<(VisitorId, i64)>,
}

impl Report {
    /// Nothing to tell besides the in-flight count.
    pub fn is_quiet(&self) -> bool {
        self.samples == 0 && self.arrivals.is_empty() && self.in_flight == 0
    }
}

/// One tick as the store logged it (`GET /admin/queues/{q}/ticks`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TickLog {
    /// Tick number.
    pub tick: u64,
    /// Store time of the tick (ms).
    pub at_ms: i64,
    /// The N it was allowed to release.
    pub n: u64,
    /// How many it released (≤ n; less when the line or `max_active` ran out).
    pub released: u64,
    /// Visitors still waiting after it.
    pub waiting: u64,
    /// `fixed`, `adaptive` or `pinned`.
    pub mode: String,
    /// Why the controller chose that N (`fixed` in fixed mode).
    pub reason: String,
}

/// Ticks the store keeps in its log.
pub const TICK_LOG: usize = 1000;

/// Counters of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Visitors in line.
    pub waiting: u64,
    /// Live sessions.
    pub active: u64,
    /// Ticks so far.
    pub ticks: u64,
    /// Visitors released by ticks so far.
    pub released_total: u64,
    /// Visitors removed as abandoned so far.
    pub abandoned_total: u64,
}

/// Live settings of a queue, shared by every instance on the store: what an
/// operator set through the admin API or a config reload. They win over each
/// instance's config file until the next change.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SharedSettings {
    /// Admission knobs.
    pub admission: Admission,
    /// Releases suspended.
    pub paused: bool,
    /// Free entry off: everybody queues.
    pub queue_all: bool,
    /// The operator's message to everyone in the queue (none: no message).
    #[serde(default)]
    pub message: Option<String>,
    /// Bumped by the store on every save.
    #[serde(default)]
    pub version: u64,
}

/// A queue's lottery as the store keeps it (see `lottery.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LotteryRecord {
    /// The secret seed (published only once drawn).
    pub seed: String,
    /// When the first instance stored it (store time, ms).
    pub committed_at_ms: i64,
    /// The draw, once it happened: when (store time, ms) and the entrants'
    /// public ids in drawn order (a JSON array).
    pub drawn: Option<(i64, String)>,
}

/// What [`QueueStore::draw`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Draw {
    /// This call drew: the line now holds the entrants in the given order.
    Drawn,
    /// Someone drew before (this call changed nothing).
    AlreadyDrawn,
    /// The store's clock has not reached the opening yet.
    TooEarly,
    /// The entrants are not the ones given (read them again and retry).
    Changed,
}

/// What a join answers: the standing and what the join did.
pub type JoinAnswer = Result<(Standing, JoinKind), StoreError>;

/// The store failed (Redis unreachable, script error). Never a client's
/// fault. Each kind keeps what caused it as its `source`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis refused, dropped, failed or did not answer the call.
    #[error("queue store unavailable: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// The store answered, but fewer replicas than `store.wait_replicas`
    /// acknowledged the write in time (the detail says how many).
    #[error("queue store unavailable: too few replicas acknowledged the write: {0}")]
    Unreplicated(String),
    /// Stored JSON could not be read, or a value could not be written as JSON.
    #[error("queue store unavailable: {what}: {source}")]
    Json {
        /// What was being read or written.
        what: &'static str,
        /// The decoder's or encoder's error.
        source: serde_json::Error,
    },
    /// No call was made: the breaker is open, or the store is not connected yet.
    #[error("queue store unavailable: {0}")]
    NotCalled(&'static str),
}

impl StoreError {
    /// No answer within `store.response_timeout`: under load usually a slow
    /// answer, not a dead store.
    pub fn is_timeout(&self) -> bool {
        matches!(self, StoreError::Redis(e) if e.is_timeout())
    }

    /// Did the store answer, with too few replicas behind the write? Not a
    /// sign that the store is down: reads go on.
    pub fn is_unreplicated(&self) -> bool {
        matches!(self, StoreError::Unreplicated(_))
    }

    /// The store is not connected yet (the background service connects it).
    pub const NOT_CONNECTED: StoreError = StoreError::NotCalled("the queue store is not connected yet");

    /// A JSON error while reading or writing `what`.
    pub fn json(what: &'static str) -> impl FnOnce(serde_json::Error) -> StoreError {
        move |source| StoreError::Json { what, source }
    }
}

/// The queue store. See the module docs for the semantics.
#[async_trait]
pub trait QueueStore: Send + Sync + 'static {
    /// Join `queue` (idempotent), subject to `checks`.
    async fn join(&self, queue: &str, visitor: VisitorId, p: &Params, checks: &JoinChecks) -> JoinAnswer {
        self.join_placed(queue, visitor, p, checks).await.map(|j| (j.standing, j.kind))
    }

    /// [`QueueStore::join`], also saying where the visitor's place is (to
    /// sign a queue ticket for it).
    async fn join_placed(
        &self,
        queue: &str,
        visitor: VisitorId,
        p: &Params,
        checks: &JoinChecks,
    ) -> Result<Placed, StoreError>;

    /// Where `visitor` stands; counts as being seen (keeps the place).
    async fn status(&self, queue: &str, visitor: VisitorId, p: &Params) -> Result<Standing, StoreError>;

    /// Release the next batch if a tick is due.
    async fn release(&self, queue: &str, p: &Params) -> Result<Release, StoreError>;

    /// Standings of many visitors at once, without marking them seen (the push
    /// path calls this for its connected visitors after every tick).
    async fn standings(&self, queue: &str, visitors: &[VisitorId]) -> Result<Vec<Standing>, StoreError>;

    /// Mark visitors as present (they hold an open WebSocket). Visitors no
    /// longer waiting are ignored.
    async fn touch(&self, queue: &str, visitors: &[VisitorId]) -> Result<(), StoreError>;

    /// Counters of a queue.
    async fn stats(&self, queue: &str) -> Result<Stats, StoreError>;

    /// Is the store answering?
    async fn ping(&self) -> Result<(), StoreError>;

    /// The queue's shared live settings, if an operator ever set them.
    async fn load_settings(&self, queue: &str) -> Result<Option<SharedSettings>, StoreError>;

    /// Save shared live settings; returns them with their new version. Other
    /// instances are told (Redis: a `settings` message on the queue's channel).
    async fn save_settings(&self, queue: &str, settings: &SharedSettings) -> Result<SharedSettings, StoreError>;

    /// A purchase ended `visitor`'s session of the admission whose tokens
    /// were issued at `iat_s`: the session stops counting toward
    /// `max_active` at once, and its tokens are revoked until `until_ms`
    /// (other instances are told: Redis, a `revoke` message on the queue's
    /// channel). A later admission of the same visitor is left alone.
    /// Returns whether a live session ended.
    async fn end_session(&self, queue: &str, visitor: VisitorId, iat_s: i64, until_ms: i64)
    -> Result<bool, StoreError>;

    /// Has the session that issued `visitor`'s token at `iat_s` ended?
    async fn revoked(&self, queue: &str, visitor: VisitorId, iat_s: i64) -> Result<bool, StoreError>;

    /// Add one instance's measurements to the queue's current window (see
    /// [`Release::window`]); arrivals of admitted visitors are matched with
    /// their admissions here.
    async fn report(&self, queue: &str, report: &Report) -> Result<(), StoreError>;

    /// Save the controller's decision made at `tick`, unless a decision of a
    /// later tick is already saved. Returns whether it was saved.
    async fn save_decision(&self, queue: &str, record: &crate::adaptive::Record) -> Result<bool, StoreError>;

    /// The last `limit` ticks, newest first.
    async fn ticks(&self, queue: &str, limit: usize) -> Result<Vec<TickLog>, StoreError>;

    /// The queue's lottery; with `new_seed`, stores that seed (and the time)
    /// first if the queue has none, so every instance publishes the same
    /// commitment.
    async fn lottery(&self, queue: &str, new_seed: Option<&str>) -> Result<Option<LotteryRecord>, StoreError>;

    /// The lottery's entrants: visitors whose join added a place before
    /// [`Params::entrants_until_ms`] (store time). Fixed once the store's
    /// clock passes it.
    async fn entrants(&self, queue: &str) -> Result<Vec<VisitorId>, StoreError>;

    /// Draw the lottery, once: if the store's clock is past `opens_at_ms`,
    /// nobody drew yet and `order` holds exactly the entrants, the entrants
    /// still in line take the line's first places in `order` (their
    /// sequence numbers permuted, so everyone who joined after the opening
    /// stays behind them), are marked seen now, and `published` (the public
    /// ids in drawn order, JSON) is kept with the draw. Other instances are
    /// told (Redis: a `drawn` message on the queue's channel).
    async fn draw(
        &self,
        queue: &str,
        opens_at_ms: i64,
        order: &[VisitorId],
        published: &str,
    ) -> Result<Draw, StoreError>;

    /// The catalog of queues every instance runs (`catalog.rs`): its
    /// version and JSON, if one was saved.
    async fn load_catalog(&self) -> Result<Option<(u64, String)>, StoreError>;

    /// Save the catalog if the stored version is still `expected` (0: none
    /// stored), so two operators' changes never overwrite each other. Every
    /// instance is told (Redis: a `catalog <version>` message on the
    /// catalog channel). Returns the new version, or `None` if another save
    /// came first.
    async fn save_catalog(&self, expected: u64, json: &str) -> Result<Option<u64>, StoreError>;

    /// Forget a deleted queue: its line, sessions, settings, lottery and
    /// logs, so a queue created later under the same id starts empty.
    async fn purge(&self, queue: &str) -> Result<(), StoreError>;

    /// Is the store known to be down right now (a circuit breaker is open),
    /// so that asking it would only wait?
    fn known_down(&self) -> bool {
        false
    }
}
