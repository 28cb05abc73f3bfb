//! `[[queues]]`: a queue's shape (`QueueConfig`), its modes and defaults, and
//! the live admission knobs (`Admission`); apart because the admin API and the
//! store's catalog share this shape with the config file.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shared::config::{self, ConfigError};

use crate::schedule::{At, Schedule};

/// `[[queues]]`: one line of visitors protecting a set of path prefixes.
/// Also the shape of a queue in the admin API and in the store's catalog of
/// queues (`catalog.rs`), so both are validated by [`validate_queues`].
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Id used in URLs (`/wr/<id>`), Redis keys and token audiences.
    pub id: String,
    /// Name shown on the queue page; defaults to the id.
    #[serde(default)]
    pub name: Option<String>,
    /// Protected path prefixes, matched on segment boundaries.
    pub paths: Vec<String>,
    /// Admit at once while nobody waits and active sessions are below this.
    #[serde(default)]
    pub free_entry: u64,
    /// N: visitors released per tick.
    pub release_per_tick: u64,
    /// T: time between releases.
    #[serde(with = "config::duration")]
    pub tick: Duration,
    /// M: lifetime of an entry token (fixed from admission, not sliding).
    #[serde(with = "config::duration")]
    pub session: Duration,
    /// Cap on live sessions; 0 means none.
    #[serde(default)]
    pub max_active: u64,
    /// A waiting visitor unseen (no WebSocket, no poll) this long loses the place; 0 = never.
    #[serde(with = "config::duration", default = "default_abandon_after")]
    pub abandon_after: Duration,
    /// Operator's own queue page template (placeholders `{{queue_name}}`,
    /// `{{position}}`, `{{eta}}`, …); the built-in page otherwise.
    #[serde(default)]
    pub page_template: Option<PathBuf>,
    /// `pow`: a new place (or a free-entry admission) needs a solved
    /// proof-of-work challenge (see `challenge.rs`); `off` by default.
    #[serde(default)]
    pub challenge: ChallengeMode,
    /// Difficulty (leading zero bits of SHA-256) while the line is calm.
    #[serde(default = "default_challenge_min_bits")]
    pub challenge_min_bits: u8,
    /// The most the difficulty rises to under pressure.
    #[serde(default = "default_challenge_max_bits")]
    pub challenge_max_bits: u8,
    /// How long an issued challenge may be answered.
    #[serde(with = "config::duration", default = "default_challenge_ttl")]
    pub challenge_ttl: Duration,
    /// What visitors meet while the queue store is down (see `degraded.rs`):
    /// `closed` (joins answer 503; tokens already issued keep working) or
    /// `open` (visitors are let through at this queue's release rate per
    /// instance, each with a session of `store_down_session`).
    #[serde(default)]
    pub on_store_down: StoreDownPolicy,
    /// The session of a visitor let through while the store is down.
    #[serde(with = "config::duration", default = "default_store_down_session")]
    pub store_down_session: Duration,
    /// `fixed`: N per tick as set; `adaptive`: N follows the upstream's
    /// health between `min_per_tick` and `max_per_tick` (see `adaptive.rs`).
    #[serde(default)]
    pub admission: AdmissionMode,
    /// Adaptive: N never goes below this.
    #[serde(default = "default_min_per_tick")]
    pub min_per_tick: u64,
    /// Adaptive: N never goes above this.
    #[serde(default = "default_max_per_tick")]
    pub max_per_tick: u64,
    /// Adaptive: keep the upstream's p99 (admitted requests) under this.
    #[serde(with = "config::duration", default = "default_target_p99")]
    pub target_p99: Duration,
    /// Adaptive: keep the upstream's share of failed requests under this.
    #[serde(default = "default_target_error_rate")]
    pub target_error_rate: f64,
    /// An admitted visitor who makes no request to a protected path this
    /// long after admission is a no-show; in adaptive mode no-shows stop
    /// counting toward `max_active`. 0 = arrivals are not tracked.
    #[serde(with = "config::duration", default = "default_arrival_grace")]
    pub arrival_grace: Duration,
    /// How the line lets visitors in: `fifo` (join order), `random` (each
    /// tick draws N uniformly from everyone waiting), `passthrough` (everyone
    /// in at once, still counted) or `reject` (nobody new; see `QueueMode`).
    #[serde(default)]
    pub mode: QueueMode,
    /// A message to everyone in the queue (shown on the page, sent with
    /// every status); the admin API changes it live.
    #[serde(default)]
    pub message: Option<String>,
    /// Stop releasing, and tell everyone in line and everyone arriving, when
    /// the listed events have no free seat and the listed campaigns no code
    /// left (read from `[stock]`); release at most what is left each tick.
    #[serde(default)]
    pub stop_when_sold_out: bool,
    /// The events whose seats this queue sells (`stop_when_sold_out`).
    #[serde(default)]
    pub stock_events: Vec<i64>,
    /// The coupon campaigns this queue hands out (`stop_when_sold_out`).
    #[serde(default)]
    pub stock_campaigns: Vec<i64>,
    /// When the line opens (RFC 3339); before it visitors see a countdown
    /// (see `schedule.rs`). None: always open.
    #[serde(default)]
    pub opens_at: Option<At>,
    /// Visitors who join from this time until `opens_at` are entrants of a
    /// lottery drawn at `opens_at` (see `lottery.rs`). Needs `opens_at`.
    #[serde(default)]
    pub prequeue_from: Option<At>,
    /// From this time nobody new joins; the line already formed is served.
    #[serde(default)]
    pub closes_at: Option<At>,
}

/// `admission`: how a queue's N per tick is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AdmissionMode {
    /// The operator's `release_per_tick`.
    #[default]
    Fixed,
    /// The controller's, from the upstream's latency and errors.
    Adaptive,
}

/// `mode`: how a queue lets its visitors in; switchable live (admin API,
/// SIGHUP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum QueueMode {
    /// In join order (ticks release the longest waiting).
    #[default]
    Fifo,
    /// Each tick releases N visitors drawn uniformly from everyone waiting:
    /// no place numbers, a wait shown as a range.
    Random,
    /// Everyone who joins is admitted at once (the line empties at the next
    /// tick); `max_active` still caps sessions, and admissions are counted.
    Passthrough,
    /// Nobody new joins and nobody is released: visitors are shown "not
    /// available"; those in line keep their places for when the mode changes.
    Reject,
}

impl QueueMode {
    /// Label for the admin API, the tick log and metrics.
    pub fn label(self) -> &'static str {
        match self {
            QueueMode::Fifo => "fifo",
            QueueMode::Random => "random",
            QueueMode::Passthrough => "passthrough",
            QueueMode::Reject => "reject",
        }
    }
}

impl AdmissionMode {
    /// Label for metrics and the admin API.
    pub fn label(self) -> &'static str {
        match self {
            AdmissionMode::Fixed => "fixed",
            AdmissionMode::Adaptive => "adaptive",
        }
    }
}

fn default_min_per_tick() -> u64 {
    1
}

fn default_max_per_tick() -> u64 {
    1000
}

fn default_target_p99() -> Duration {
    Duration::from_millis(300)
}

fn default_target_error_rate() -> f64 {
    0.01
}

fn default_arrival_grace() -> Duration {
    Duration::from_secs(30)
}

/// `on_store_down`: the queue's policy while its store is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreDownPolicy {
    /// Nobody new gets in.
    #[default]
    Closed,
    /// Visitors get in at the release rate, with a short session.
    Open,
}

fn default_store_down_session() -> Duration {
    Duration::from_secs(120)
}

/// Whether a queue asks for a proof of work before it grants a new place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ChallengeMode {
    /// No challenge.
    #[default]
    Off,
    /// A SHA-256 proof of work (`challenge.rs`).
    Pow,
}

/// Bounds of `challenge_min_bits` / `challenge_max_bits`: 2^32 hashes would
/// keep a phone busy for hours.
pub const CHALLENGE_BITS: std::ops::RangeInclusive<u8> = 1..=32;

fn default_challenge_min_bits() -> u8 {
    12
}

fn default_challenge_max_bits() -> u8 {
    20
}

fn default_challenge_ttl() -> Duration {
    Duration::from_secs(300)
}

impl QueueConfig {
    /// Display name.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }

    pub(super) fn validate_challenge(&self, at: &str) -> Result<(), ConfigError> {
        let (lo, hi) = (CHALLENGE_BITS.start(), CHALLENGE_BITS.end());
        if !CHALLENGE_BITS.contains(&self.challenge_min_bits) {
            return Err(ConfigError::new(
                format!("{at}.challenge_min_bits"),
                format!("expected between {lo} and {hi}"),
            ));
        }
        if !CHALLENGE_BITS.contains(&self.challenge_max_bits) || self.challenge_max_bits < self.challenge_min_bits {
            return Err(ConfigError::new(
                format!("{at}.challenge_max_bits"),
                format!("expected between challenge_min_bits ({}) and {hi}", self.challenge_min_bits),
            ));
        }
        if self.challenge_ttl < Duration::from_secs(10) || self.challenge_ttl > Duration::from_secs(3600) {
            return Err(ConfigError::new(format!("{at}.challenge_ttl"), "expected between 10s and 1h"));
        }
        if self.store_down_session < Duration::from_secs(10) || self.store_down_session > Duration::from_secs(3600) {
            return Err(ConfigError::new(format!("{at}.store_down_session"), "expected between 10s and 1h"));
        }
        Ok(())
    }

    /// The sale's schedule.
    pub fn schedule(&self) -> Schedule {
        Schedule { prequeue_from: self.prequeue_from, opens_at: self.opens_at, closes_at: self.closes_at }
    }

    /// The knobs an operator may change while the proxy runs.
    pub fn admission(&self) -> Admission {
        Admission {
            free_entry: self.free_entry,
            release_per_tick: self.release_per_tick,
            tick: self.tick,
            session: self.session,
            max_active: self.max_active,
            abandon_after: self.abandon_after,
            mode: self.admission,
            min_per_tick: self.min_per_tick,
            max_per_tick: self.max_per_tick,
            target_p99: self.target_p99,
            target_error_rate: self.target_error_rate,
            arrival_grace: self.arrival_grace,
            pin_per_tick: 0,
            queue_mode: self.mode,
        }
    }
}

/// The admission knobs of a queue: what an operator tunes during a sale.
/// Fields added after the first release have defaults, so settings saved in
/// the store by an older build still load.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Admission {
    /// Admit at once while nobody waits and active sessions are below this.
    pub free_entry: u64,
    /// N: visitors released per tick.
    pub release_per_tick: u64,
    /// T: time between releases.
    #[serde(with = "config::duration")]
    pub tick: Duration,
    /// M: lifetime of an entry token.
    #[serde(with = "config::duration")]
    pub session: Duration,
    /// Cap on live sessions; 0 means none.
    pub max_active: u64,
    /// Unseen this long while waiting = abandoned; 0 = never.
    #[serde(with = "config::duration")]
    pub abandon_after: Duration,
    /// How N is set (`admission` in the config file and the admin API).
    #[serde(rename = "admission", default)]
    pub mode: AdmissionMode,
    /// Adaptive: lowest N.
    #[serde(default = "default_min_per_tick")]
    pub min_per_tick: u64,
    /// Adaptive: highest N.
    #[serde(default = "default_max_per_tick")]
    pub max_per_tick: u64,
    /// Adaptive: the upstream's p99 to stay under.
    #[serde(with = "config::duration", default = "default_target_p99")]
    pub target_p99: Duration,
    /// Adaptive: the upstream's error share to stay under.
    #[serde(default = "default_target_error_rate")]
    pub target_error_rate: f64,
    /// No request this long after admission = a no-show; 0 = not tracked.
    #[serde(with = "config::duration", default = "default_arrival_grace")]
    pub arrival_grace: Duration,
    /// Adaptive: the operator pinned N to this (0 = the controller decides).
    #[serde(default)]
    pub pin_per_tick: u64,
    /// How the line lets visitors in (`mode` in the config file and the
    /// admin API).
    #[serde(rename = "mode", default)]
    pub queue_mode: QueueMode,
}

impl Admission {
    /// The N the next tick may release, given the controller's last
    /// decision (`decided`, adaptive mode only): the operator's pin first,
    /// then the mode's own.
    pub fn effective_n(&self, decided: Option<u64>) -> u64 {
        match self.mode {
            AdmissionMode::Fixed => self.release_per_tick,
            AdmissionMode::Adaptive if self.pin_per_tick > 0 => self.pin_per_tick.min(self.max_per_tick),
            AdmissionMode::Adaptive => {
                decided.unwrap_or(self.min_per_tick).clamp(self.min_per_tick.max(1), self.max_per_tick.max(1))
            }
        }
    }
}

fn default_abandon_after() -> Duration {
    Duration::from_secs(60)
}
