//! The waiting room's configuration: one TOML file, every key overridable by a
//! `WR_SECTION__KEY` environment variable, validated as its own step.
//!
//! Loading ([`Config::load`]) only checks shapes and types; [`Config::validate`]
//! checks meaning (addresses parse, queue ids are safe in URLs and Redis keys,
//! protected path prefixes of different queues never overlap). Both report the
//! offending key, and `main` turns either into exit code 2.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shared::config::{self, ConfigError, Env, Secret};

use crate::schedule::{At, Schedule};

/// Environment variable prefix: `WR_STORE__BACKEND=redis`.
pub const ENV_PREFIX: &str = "WR";

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listeners, upstream and process settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// Where the queues live.
    #[serde(default)]
    pub store: StoreConfig,
    /// Where the signing keys live.
    #[serde(default)]
    pub keys: KeysConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The operator API.
    #[serde(default)]
    pub admin: AdminConfig,
    /// What one client may take of the proxy (connections, time, places).
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Where to read what is left to sell (queues with `stop_when_sold_out`).
    #[serde(default)]
    pub stock: StockConfig,
    /// The queues; each protects a set of path prefixes.
    #[serde(default)]
    pub queues: Vec<QueueConfig>,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Public listener (queue API, queue page, WebSocket, gated proxy).
    pub listen: String,
    /// Prometheus `/metrics` listener.
    pub metrics_listen: String,
    /// The protected service, `host:port`; resolved once at start. Used
    /// when `upstreams` is empty.
    pub upstream: String,
    /// Several instances of the protected service (`host:port` each,
    /// resolved once at start): both lanes balance over the healthy ones.
    pub upstreams: Vec<String>,
    /// How often each upstream instance is checked (a TCP connect).
    #[serde(with = "config::duration")]
    pub upstream_check_interval: Duration,
    /// Worker threads of the proxy: each has its own `SO_REUSEPORT`
    /// listener and single-threaded runtime (see `lane.rs`).
    pub threads: usize,
    /// Mark cookies `Secure` (set when served over HTTPS).
    pub cookie_secure: bool,
    /// Runtime flavour of Pingora's own services (admission, metrics, admin).
    /// The proxy workers always run one runtime per thread, like nginx
    /// workers; `false` (the default) does the same for Pingora's services.
    pub work_stealing: bool,
    /// Serve plain admitted and pass-through HTTP/1.1 requests in the fast
    /// lane (`lane.rs`) instead of Pingora's proxy loop; everything else goes
    /// to Pingora either way. `false` sends every request through Pingora.
    pub fast_lane: bool,
    /// Run the proxy workers under `SCHED_BATCH` (Linux): a worker that wakes
    /// does not preempt the task on its CPU, such as an upstream on the same
    /// host in the middle of a batch of responses (`sched.rs`). `false`
    /// leaves them under the default policy.
    pub sched_batch: bool,
    /// How often the server pings each queue WebSocket; a peer silent for two
    /// intervals is closed.
    #[serde(with = "config::duration")]
    pub ws_ping_interval: Duration,
    /// Run release ticks from this instance. Turn off on edge-only instances:
    /// any instance may tick, and the store keeps ticks a full interval apart.
    pub release_ticks: bool,
    /// After SIGTERM or SIGINT: how long requests in flight may take to
    /// finish before the process exits anyway.
    #[serde(with = "config::duration")]
    pub grace_period: Duration,
    /// Proxies in front of this one (CIDR blocks) whose `X-Forwarded-For`
    /// is believed; see `client.rs` for the rule. Empty: the peer address
    /// is always the client.
    pub trusted_proxies: Vec<String>,
    /// Methods passed upstream; others get 405.
    pub allowed_methods: Vec<String>,
    /// Path prefixes of the upstream that are never served on the public
    /// listener (its operator endpoints), whatever the upstream would do.
    pub deny_paths: Vec<String>,
    /// Origins (`scheme://host[:port]`) whose pages may open a queue
    /// WebSocket. Empty: only pages served by this host (the request's own
    /// `Host`). A request without `Origin` (not a browser) is allowed.
    pub allowed_origins: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "0.0.0.0:8080".into(),
            metrics_listen: "127.0.0.1:9091".into(),
            upstream: "127.0.0.1:8081".into(),
            upstreams: Vec::new(),
            upstream_check_interval: Duration::from_secs(1),
            threads: 2,
            cookie_secure: false,
            work_stealing: false,
            fast_lane: true,
            sched_batch: true,
            ws_ping_interval: Duration::from_secs(15),
            release_ticks: true,
            grace_period: Duration::from_secs(10),
            trusted_proxies: Vec::new(),
            allowed_methods: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"].map(String::from).to_vec(),
            deny_paths: ["/metrics", "/healthz", "/livez", "/readyz", "/admin"].map(String::from).to_vec(),
            allowed_origins: Vec::new(),
        }
    }
}

/// `[limits]`: what one client may take of the proxy. Every count is per
/// instance and per client address (an IPv6 /64), except the waiting places,
/// which the queue store counts across instances. See ARCHITECTURE.md
/// ("Hostile traffic") for why each default is what it is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// A whole request head must arrive within this time of its first byte.
    #[serde(with = "config::duration")]
    pub header_timeout: Duration,
    /// A keep-alive connection idle this long between requests is closed.
    #[serde(with = "config::duration")]
    pub idle_timeout: Duration,
    /// A request body must arrive within this time of its head.
    #[serde(with = "config::duration")]
    pub body_timeout: Duration,
    /// Each part of a response must be taken by the client within this
    /// time (a client that stops reading holds a connection, an upstream
    /// connection and buffers).
    #[serde(with = "config::duration")]
    pub send_timeout: Duration,
    /// Largest request head (request line and headers); larger gets 431.
    pub max_head_bytes: usize,
    /// Most header fields in a request; more gets 431.
    pub max_headers: usize,
    /// The descriptor budget for client connections and the fast lane's
    /// upstream connections on this instance (clients may take all but
    /// 1/8 of it, at most 1,024, which stays for upstream connections).
    /// 0 derives it from the process's open-files limit minus `fd_reserve`.
    pub max_connections: usize,
    /// Descriptors kept out of the budget when it is derived: for the
    /// store, logs, listeners and Pingora's upstream pool (at most half the
    /// open-files limit is kept).
    pub fd_reserve: usize,
    /// Connections one client may hold open at once (0: no cap). Trusted
    /// proxies are exempt: they carry many clients.
    pub max_connections_per_client: usize,
    /// Queue WebSockets one client may hold open at once (0: no cap).
    pub max_websockets_per_client: usize,
    /// New visitor ids one client may be given.
    pub new_visitors: Rate,
    /// Joins (page, join, WebSocket) one client may make.
    pub joins: Rate,
    /// Places one client may hold in a queue's line at once, across all
    /// instances (0: no cap).
    pub max_waiting_per_client: u64,
    /// Failed operator bearer tokens one client may try.
    pub admin_failures: Rate,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(30),
            max_head_bytes: 16 * 1024,
            max_headers: 100,
            max_connections: 0,
            fd_reserve: 1024,
            max_connections_per_client: 256,
            max_websockets_per_client: 32,
            new_visitors: Rate { rate: 1.0, burst: 20.0 },
            joins: Rate { rate: 4.0, burst: 40.0 },
            max_waiting_per_client: 50,
            admin_failures: Rate { rate: 0.1, burst: 10.0 },
        }
    }
}

/// A rate with a burst: `rate` tokens per second, at most `burst` saved.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Tokens added per second; 0 turns the limit off.
    pub rate: f64,
    /// Tokens a fresh client starts with and may save up.
    pub burst: f64,
}

impl Rate {
    /// Is this limit on?
    pub fn enabled(&self) -> bool {
        self.rate > 0.0
    }
}

impl LimitsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let between = |key: &str, d: Duration, lo: Duration, hi: Duration| {
            if d < lo || d > hi {
                return Err(ConfigError::new(format!("limits.{key}"), format!("expected between {lo:?} and {hi:?}")));
            }
            Ok(())
        };
        between("header_timeout", self.header_timeout, Duration::from_millis(100), Duration::from_secs(300))?;
        between("idle_timeout", self.idle_timeout, Duration::from_millis(100), Duration::from_secs(3600))?;
        between("body_timeout", self.body_timeout, Duration::from_millis(100), Duration::from_secs(3600))?;
        between("send_timeout", self.send_timeout, Duration::from_millis(100), Duration::from_secs(3600))?;
        if !(1024..=1024 * 1024).contains(&self.max_head_bytes) {
            return Err(ConfigError::new("limits.max_head_bytes", "expected between 1024 and 1048576"));
        }
        if !(8..=1024).contains(&self.max_headers) {
            return Err(ConfigError::new("limits.max_headers", "expected between 8 and 1024"));
        }
        for (key, r) in
            [("new_visitors", self.new_visitors), ("joins", self.joins), ("admin_failures", self.admin_failures)]
        {
            if !r.rate.is_finite() || r.rate < 0.0 || !r.burst.is_finite() || (r.rate > 0.0 && r.burst < 1.0) {
                return Err(ConfigError::new(
                    format!("limits.{key}"),
                    "expected { rate = <per second, 0 = off>, burst = <at least 1> }",
                ));
            }
        }
        Ok(())
    }

    /// The descriptor budget: `max_connections`, or the open-files limit
    /// `nofile` minus `fd_reserve` (at most half of it kept), at least 16.
    pub fn descriptor_budget(&self, nofile: u64) -> usize {
        if self.max_connections > 0 {
            return self.max_connections;
        }
        let nofile = usize::try_from(nofile).unwrap_or(usize::MAX);
        nofile.saturating_sub(self.fd_reserve.min(nofile / 2)).max(16)
    }
}

/// Which queue store backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// In-process, single instance, no external service (the embedded default).
    #[default]
    Memory,
    /// Redis, shared by any number of proxy instances.
    Redis,
}

/// `[store]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `memory` or `redis`.
    pub backend: Backend,
    /// Redis URL (used when `backend = "redis"`).
    pub redis_url: String,
    /// Prefix of every Redis key (`{<prefix>:<queue>}:line`); lets several
    /// deployments or tests share one Redis.
    pub key_prefix: String,
    /// How long connecting to Redis may take.
    #[serde(with = "config::duration")]
    pub connect_timeout: Duration,
    /// How long one Redis call may take before it counts as failed (joins
    /// and polls wait at most this, then get a 503).
    #[serde(with = "config::duration")]
    pub response_timeout: Duration,
    /// Times a failed Redis call is retried on a new connection.
    pub retries: usize,
    /// Redis Cluster seed nodes (`redis://host:port` each); when set, the
    /// store talks to the cluster and `redis_url` is not used. A queue's keys
    /// share one hash tag, so every script runs on one node.
    pub cluster_nodes: Vec<String>,
    /// Redis Sentinel: the primary is found by asking these sentinels, and
    /// found again after a failover; `redis_url` is not used.
    pub sentinel: Option<SentinelConfig>,
    /// Replicas that must hold a write before the store acknowledges it
    /// (`WAIT <n>` after every join, tick, ended session and saved
    /// settings); fewer in time is a store failure (503), so a place a
    /// visitor was told about survives a failover. 0 = don't wait.
    pub wait_replicas: u32,
}

/// `store.sentinel`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    /// The name the sentinels monitor the primary under (`sentinel monitor <name> ...`).
    pub master_name: String,
    /// The sentinels, `redis://host:port` each.
    pub nodes: Vec<String>,
}

/// Which Redis deployment the store talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTopology<'a> {
    /// One server (`redis_url`).
    Single(&'a str),
    /// A cluster, by its seed nodes.
    Cluster(&'a [String]),
    /// A primary found through sentinels.
    Sentinel { master_name: &'a str, nodes: &'a [String] },
}

impl StoreConfig {
    /// The Redis deployment this configuration names.
    pub fn topology(&self) -> RedisTopology<'_> {
        if let Some(s) = &self.sentinel {
            RedisTopology::Sentinel { master_name: &s.master_name, nodes: &s.nodes }
        } else if !self.cluster_nodes.is_empty() {
            RedisTopology::Cluster(&self.cluster_nodes)
        } else {
            RedisTopology::Single(&self.redis_url)
        }
    }

    /// What the logs call this deployment.
    pub fn describe(&self) -> String {
        match self.topology() {
            RedisTopology::Single(url) => url.to_owned(),
            RedisTopology::Cluster(nodes) => format!("cluster {}", nodes.join(",")),
            RedisTopology::Sentinel { master_name, nodes } => format!("sentinel {master_name}@{}", nodes.join(",")),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let url = |key: String, value: &str| {
            if value.starts_with("redis://") || value.starts_with("rediss://") {
                Ok(())
            } else {
                Err(ConfigError::new(key, format!("expected a redis:// or rediss:// URL, got {value:?}")))
            }
        };
        if self.backend != Backend::Redis {
            return Ok(());
        }
        if self.sentinel.is_some() && !self.cluster_nodes.is_empty() {
            return Err(ConfigError::new(
                "store.cluster_nodes",
                "set either store.cluster_nodes or store.sentinel, not both",
            ));
        }
        match self.topology() {
            RedisTopology::Single(u) => url("store.redis_url".into(), u)?,
            RedisTopology::Cluster(nodes) => {
                for (i, n) in nodes.iter().enumerate() {
                    url(format!("store.cluster_nodes[{i}]"), n)?;
                }
            }
            RedisTopology::Sentinel { master_name, nodes } => {
                if master_name.is_empty() {
                    return Err(ConfigError::new("store.sentinel.master_name", "must not be empty"));
                }
                if nodes.is_empty() {
                    return Err(ConfigError::new("store.sentinel.nodes", "expected at least one sentinel"));
                }
                for (i, n) in nodes.iter().enumerate() {
                    url(format!("store.sentinel.nodes[{i}]"), n)?;
                }
            }
        }
        if self.wait_replicas > 16 {
            return Err(ConfigError::new("store.wait_replicas", "expected at most 16"));
        }
        Ok(())
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: Backend::Memory,
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: "wr".into(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_millis(250),
            retries: 1,
            cluster_nodes: Vec::new(),
            sentinel: None,
            wait_replicas: 0,
        }
    }
}

/// `[keys]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// Key directory (see `shared::keys`); created on first start.
    pub dir: PathBuf,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig { dir: PathBuf::from("data/keys") }
    }
}

pub use shared::log::{LogConfig, LogFormat};

/// `[admin]`: the operator API on its own listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Listener of the admin API; empty disables it.
    pub listen: String,
    /// Bearer token the admin API requires; empty disables the API.
    pub token: Secret,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { listen: "127.0.0.1:9092".into(), token: Secret::default() }
    }
}

/// Longest operator message, in characters.
pub const MESSAGE_MAX: usize = 500;

/// An operator message: at most [`MESSAGE_MAX`] characters of text (line
/// breaks allowed, no other control characters).
pub fn validate_message(m: &str) -> Result<(), String> {
    if m.chars().count() > MESSAGE_MAX {
        return Err(format!("expected at most {MESSAGE_MAX} characters"));
    }
    if m.chars().any(|c| c.is_control() && c != '\n') {
        return Err("expected text without control characters (line breaks are fine)".into());
    }
    Ok(())
}

/// `[stock]`: the booking core's `GET /admin/stock` (free seats per event,
/// codes left per campaign), polled by every instance for its queues with
/// `stop_when_sold_out` (see `stock.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StockConfig {
    /// The URL (`http://127.0.0.1:9093/admin/stock`); empty: no stock is read.
    pub url: String,
    /// The booking core's admin bearer token.
    pub token: Secret,
    /// How often to read it: how soon a line hears that the sale sold out.
    #[serde(with = "config::duration")]
    pub poll_interval: Duration,
}

impl Default for StockConfig {
    fn default() -> Self {
        StockConfig { url: String::new(), token: Secret::default(), poll_interval: Duration::from_millis(500) }
    }
}

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

    fn validate_challenge(&self, at: &str) -> Result<(), ConfigError> {
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

impl Config {
    /// Load from `path` (or defaults when `None`) and `env`, then validate.
    pub fn load(path: Option<&Path>, env: &dyn Env) -> Result<Config, ConfigError> {
        let config: Config = config::load(path, ENV_PREFIX, env)?;
        config.validate()?;
        Ok(config)
    }

    /// Check meaning; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        parse_addr("server.listen", &self.server.listen)?;
        parse_addr("server.metrics_listen", &self.server.metrics_listen)?;
        if !self.admin.listen.is_empty() {
            parse_addr("admin.listen", &self.admin.listen)?;
        }
        if !self.stock.url.is_empty() {
            if !(self.stock.url.starts_with("http://") || self.stock.url.starts_with("https://")) {
                return Err(ConfigError::new(
                    "stock.url",
                    format!("expected an http:// URL, got {:?}", self.stock.url),
                ));
            }
            let p = self.stock.poll_interval;
            if p < Duration::from_millis(100) || p > Duration::from_secs(60) {
                return Err(ConfigError::new("stock.poll_interval", "expected between 100ms and 60s"));
            }
        }
        let host_port = |key: String, value: &str| {
            if value.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
                return Err(ConfigError::new(key, format!("expected host:port, got {value:?}")));
            }
            Ok(())
        };
        host_port("server.upstream".into(), &self.server.upstream)?;
        for (i, u) in self.server.upstreams.iter().enumerate() {
            host_port(format!("server.upstreams[{i}]"), u)?;
        }
        if self.server.upstream_check_interval < Duration::from_millis(100)
            || self.server.upstream_check_interval > Duration::from_secs(60)
        {
            return Err(ConfigError::new("server.upstream_check_interval", "expected between 100ms and 60s"));
        }
        if self.server.threads == 0 || self.server.threads > 256 {
            return Err(ConfigError::new("server.threads", "expected a number of threads between 1 and 256"));
        }
        if self.server.ws_ping_interval < Duration::from_secs(1)
            || self.server.ws_ping_interval > Duration::from_secs(20)
        {
            return Err(ConfigError::new("server.ws_ping_interval", "expected between 1s and 20s"));
        }
        if self.server.grace_period > Duration::from_secs(600) {
            return Err(ConfigError::new("server.grace_period", "expected at most 10m"));
        }
        if self.store.backend == Backend::Memory && !self.server.release_ticks {
            return Err(ConfigError::new(
                "server.release_ticks",
                "must be true with the memory backend: nobody else would ever release the line",
            ));
        }
        self.store.validate()?;
        if self.store.connect_timeout < Duration::from_millis(10)
            || self.store.connect_timeout > Duration::from_secs(60)
        {
            return Err(ConfigError::new("store.connect_timeout", "expected between 10ms and 60s"));
        }
        if self.store.response_timeout < Duration::from_millis(10)
            || self.store.response_timeout > Duration::from_secs(60)
        {
            return Err(ConfigError::new("store.response_timeout", "expected between 10ms and 60s"));
        }
        if self.store.retries > 10 {
            return Err(ConfigError::new("store.retries", "expected at most 10"));
        }
        if !valid_id(&self.store.key_prefix) {
            return Err(ConfigError::new("store.key_prefix", "expected 1-64 characters from A-Z a-z 0-9 _ -"));
        }
        if self.keys.dir.as_os_str().is_empty() {
            return Err(ConfigError::new("keys.dir", "must not be empty"));
        }
        self.log.validate()?;
        self.limits.validate()?;
        self.trusted_proxies()?;
        for (i, m) in self.server.allowed_methods.iter().enumerate() {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) || m == "CONNECT" {
                return Err(ConfigError::new(
                    format!("server.allowed_methods[{i}]"),
                    format!("expected an upper-case method other than CONNECT (the proxy never tunnels), got {m:?}"),
                ));
            }
        }
        for (i, p) in self.server.deny_paths.iter().enumerate() {
            if !p.starts_with('/') || p.contains(['?', '#', ' ']) {
                return Err(ConfigError::new(
                    format!("server.deny_paths[{i}]"),
                    format!("expected an absolute path like \"/metrics\", got {p:?}"),
                ));
            }
        }
        for (i, o) in self.server.allowed_origins.iter().enumerate() {
            let ok = (o.starts_with("http://") || o.starts_with("https://"))
                && !o.trim_start_matches("https://").trim_start_matches("http://").contains(['/', ' ', '?', '#']);
            if !ok {
                return Err(ConfigError::new(
                    format!("server.allowed_origins[{i}]"),
                    format!("expected an origin like \"https://tickets.example.com\", got {o:?}"),
                ));
            }
        }

        validate_queues(&self.queues, !self.stock.url.is_empty(), true)
    }

    /// `server.trusted_proxies`, parsed.
    pub fn trusted_proxies(&self) -> Result<crate::client::TrustedProxies, ConfigError> {
        crate::client::TrustedProxies::parse(&self.server.trusted_proxies)
            .map_err(|(i, m)| ConfigError::new(format!("server.trusted_proxies[{i}]"), m))
    }

    /// The listen address, resolved.
    pub fn resolve_listen(&self) -> Result<SocketAddr, ConfigError> {
        resolve("server.listen", &self.server.listen)
    }

    /// The upstream instances, resolved once (never per request):
    /// `server.upstreams`, or `server.upstream` alone.
    pub fn resolve_upstreams(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        if self.server.upstreams.is_empty() {
            return Ok(vec![resolve("server.upstream", &self.server.upstream)?]);
        }
        self.server.upstreams.iter().enumerate().map(|(i, u)| resolve(&format!("server.upstreams[{i}]"), u)).collect()
    }
}

/// The first address `value` (config key `key`) resolves to.
fn resolve(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .to_socket_addrs()
        .map_err(|e| ConfigError::new(key, format!("cannot resolve {value:?}: {e}")))?
        .next()
        .ok_or_else(|| ConfigError::new(key, "resolves to no address"))
}

impl Admission {
    /// Check the knobs; `at` is the key of the queue (`queues[0]`).
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.release_per_tick == 0 || self.release_per_tick > 1_000_000 {
            return Err(ConfigError::new(format!("{at}.release_per_tick"), "expected between 1 and 1000000"));
        }
        if self.tick < Duration::from_millis(100) || self.tick > Duration::from_secs(3600) {
            return Err(ConfigError::new(format!("{at}.tick"), "expected between 100ms and 1h"));
        }
        if self.session < Duration::from_secs(1) || self.session > Duration::from_secs(7 * 24 * 3600) {
            return Err(ConfigError::new(format!("{at}.session"), "expected between 1s and 7 days"));
        }
        if !self.abandon_after.is_zero() && self.abandon_after < Duration::from_secs(1) {
            return Err(ConfigError::new(format!("{at}.abandon_after"), "expected 0 (never) or at least 1s"));
        }
        if self.min_per_tick == 0 || self.min_per_tick > 1_000_000 {
            return Err(ConfigError::new(format!("{at}.min_per_tick"), "expected between 1 and 1000000"));
        }
        if self.max_per_tick < self.min_per_tick || self.max_per_tick > 1_000_000 {
            return Err(ConfigError::new(
                format!("{at}.max_per_tick"),
                format!("expected between min_per_tick ({}) and 1000000", self.min_per_tick),
            ));
        }
        if self.target_p99 < Duration::from_millis(1) || self.target_p99 > Duration::from_secs(60) {
            return Err(ConfigError::new(format!("{at}.target_p99"), "expected between 1ms and 60s"));
        }
        if !(self.target_error_rate > 0.0 && self.target_error_rate <= 1.0) {
            return Err(ConfigError::new(format!("{at}.target_error_rate"), "expected more than 0 and at most 1"));
        }
        if !self.arrival_grace.is_zero()
            && (self.arrival_grace < Duration::from_secs(1) || self.arrival_grace > Duration::from_secs(3600))
        {
            return Err(ConfigError::new(format!("{at}.arrival_grace"), "expected 0 (off) or between 1s and 1h"));
        }
        if self.pin_per_tick > self.max_per_tick {
            return Err(ConfigError::new(
                format!("{at}.pin_per_tick"),
                format!("expected 0 (not pinned) or at most max_per_tick ({})", self.max_per_tick),
            ));
        }
        Ok(())
    }
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| ConfigError::new(key, format!("expected ip:port like \"127.0.0.1:8080\", got {value:?}")))
}

/// Check a list of queues as a whole: ids safe and unique, paths absolute,
/// off `/wr` and belonging to one queue only, every queue's own keys. Errors
/// name the key as the config file spells it (`queues[2].paths[0]`); the
/// admin API checks the catalog it would save with the same function.
/// `stock_configured`: `[stock] url` is set. `files`: check that page
/// template files exist (the catalog carries templates inline instead).
pub fn validate_queues(queues: &[QueueConfig], stock_configured: bool, files: bool) -> Result<(), ConfigError> {
    let mut seen: Vec<(String, String, &str)> = Vec::new(); // (prefix, key naming it, its queue)
    for (i, q) in queues.iter().enumerate() {
        let key = |k: &str| format!("queues[{i}].{k}");
        if !valid_id(&q.id) {
            return Err(ConfigError::new(
                key("id"),
                format!("expected 1-64 characters from A-Z a-z 0-9 _ -, got {:?}", q.id),
            ));
        }
        if ["healthz", "livez", "readyz"].contains(&q.id.as_str()) {
            return Err(ConfigError::new(key("id"), format!("{:?} is the name of an endpoint under /wr", q.id)));
        }
        if let Some(j) = queues[..i].iter().position(|o| o.id == q.id) {
            return Err(ConfigError::new(key("id"), format!("{:?} is already the id of queues[{j}]", q.id)));
        }
        if q.paths.is_empty() {
            return Err(ConfigError::new(key("paths"), "a queue must protect at least one path prefix"));
        }
        for (p, path) in q.paths.iter().enumerate() {
            let pkey = format!("queues[{i}].paths[{p}]");
            if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
                return Err(ConfigError::new(pkey, format!("expected an absolute path like \"/api\", got {path:?}")));
            }
            if prefix_covers("/wr", path) || prefix_covers(path, "/wr") {
                return Err(ConfigError::new(pkey, "the /wr prefix is reserved for the waiting room itself"));
            }
            for (other, other_key, other_queue) in &seen {
                let same_queue = other_key.starts_with(&format!("queues[{i}]."));
                if !same_queue && (prefix_covers(other, path) || prefix_covers(path, other)) {
                    return Err(ConfigError::new(
                        pkey,
                        format!(
                            "{path:?} overlaps {other_key} {other:?} of queue {other_queue:?}; \
                             a path may belong to one queue only"
                        ),
                    ));
                }
            }
            seen.push((path.clone(), format!("queues[{i}].paths[{p}]"), &q.id));
        }
        q.admission().validate(&format!("queues[{i}]"))?;
        if let Some(t) = &q.page_template
            && files
            && !t.is_file()
        {
            return Err(ConfigError::new(key("page_template"), format!("{} is not a readable file", t.display())));
        }
        q.validate_challenge(&format!("queues[{i}]"))?;
        q.schedule().validate(&format!("queues[{i}]"))?;
        if let Some(m) = &q.message {
            validate_message(m).map_err(|e| ConfigError::new(key("message"), e))?;
        }
        if q.stop_when_sold_out {
            if !stock_configured {
                return Err(ConfigError::new(
                    key("stop_when_sold_out"),
                    "needs [stock] url: where the booking core tells what is left to sell",
                ));
            }
            if q.stock_events.is_empty() && q.stock_campaigns.is_empty() {
                return Err(ConfigError::new(
                    key("stop_when_sold_out"),
                    "needs stock_events or stock_campaigns: what this queue sells",
                ));
            }
        }
    }
    Ok(())
}

/// Queue ids and key prefixes appear in URLs and Redis keys: keep them plain.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Does `prefix` cover `path` on a segment boundary? `/api/events/42` covers
/// `/api/events/42` and `/api/events/42/seats`, not `/api/events/420`.
pub fn prefix_covers(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true; // "/" covers everything
    }
    path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [server]
        listen = "127.0.0.1:8080"
        [[queues]]
        id = "concert-42"
        paths = ["/api/events/42"]
        free_entry = 1000
        release_per_tick = 3000
        tick = "10s"
        session = "10m"
        [[queues]]
        id = "coupons"
        paths = ["/api/coupons"]
        release_per_tick = 10
        tick = "1s"
        session = "1m"
    "#;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: std::collections::BTreeMap<String, String> =
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let c: Config = config::load_str(text, ENV_PREFIX, &env)?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn the_documented_shape_loads_with_defaults() {
        let c = load(GOOD, &[]).unwrap();
        assert_eq!(c.queues[0].tick, Duration::from_secs(10));
        assert_eq!(c.queues[0].abandon_after, Duration::from_secs(60));
        assert_eq!(c.queues[1].free_entry, 0);
        assert_eq!(c.store.backend, Backend::Memory);
        assert_eq!(c.server.threads, 2);
    }

    #[test]
    fn env_switches_the_backend_and_tunes_a_queue() {
        let c = load(GOOD, &[("WR_STORE__BACKEND", "redis"), ("WR_QUEUES__1__RELEASE_PER_TICK", "50")]).unwrap();
        assert_eq!(c.store.backend, Backend::Redis);
        assert_eq!(c.queues[1].release_per_tick, 50);
    }

    #[test]
    fn a_bad_tick_names_the_key() {
        let err = load(&GOOD.replace(r#"tick = "10s""#, r#"tick = "ten""#), &[]).unwrap_err();
        assert_eq!(err.to_string(), r#"queues[0].tick: expected a duration like "10s", got "ten""#);
    }

    #[test]
    fn overlapping_prefixes_across_queues_are_rejected() {
        let err = load(&GOOD.replace(r#"["/api/coupons"]"#, r#"["/api/events"]"#), &[]).unwrap_err();
        assert_eq!(err.key, "queues[1].paths[0]");
        assert!(err.message.contains("overlaps queues[0].paths[0]"), "{err}");
    }

    #[test]
    fn duplicate_ids_reserved_paths_and_silly_values_are_rejected() {
        assert_eq!(load(&GOOD.replace("\"coupons\"", "\"concert-42\""), &[]).unwrap_err().key, "queues[1].id");
        assert_eq!(load(&GOOD.replace("/api/coupons", "/wr/x"), &[]).unwrap_err().key, "queues[1].paths[0]");
        assert_eq!(
            load(GOOD, &[("WR_QUEUES__0__RELEASE_PER_TICK", "0")]).unwrap_err().key,
            "queues[0].release_per_tick"
        );
        assert_eq!(load(GOOD, &[("WR_SERVER__LISTEN", "nowhere")]).unwrap_err().key, "server.listen");
        assert_eq!(load(GOOD, &[("WR_QUEUES__0__ID", "a b")]).unwrap_err().key, "queues[0].id");
        assert_eq!(load(GOOD, &[("WR_STORE__BACKEND", "disk")]).unwrap_err().key, "store.backend");
    }

    #[test]
    fn the_challenge_is_off_by_default_and_its_bounds_are_checked() {
        let c = load(GOOD, &[]).unwrap();
        assert_eq!(c.queues[0].challenge, ChallengeMode::Off);
        let on = load(GOOD, &[("WR_QUEUES__1__CHALLENGE", "pow"), ("WR_QUEUES__1__CHALLENGE_MIN_BITS", "8")]).unwrap();
        assert_eq!((on.queues[1].challenge, on.queues[1].challenge_min_bits), (ChallengeMode::Pow, 8));
        assert_eq!(load(GOOD, &[("WR_QUEUES__0__CHALLENGE", "captcha")]).unwrap_err().key, "queues[0].challenge");
        assert_eq!(
            load(GOOD, &[("WR_QUEUES__0__CHALLENGE_MIN_BITS", "0")]).unwrap_err().key,
            "queues[0].challenge_min_bits"
        );
        let backwards = [("WR_QUEUES__0__CHALLENGE_MIN_BITS", "18"), ("WR_QUEUES__0__CHALLENGE_MAX_BITS", "16")];
        assert_eq!(load(GOOD, &backwards).unwrap_err().key, "queues[0].challenge_max_bits");
        assert_eq!(
            load(GOOD, &[("WR_QUEUES__0__CHALLENGE_MAX_BITS", "33")]).unwrap_err().key,
            "queues[0].challenge_max_bits"
        );
        assert_eq!(load(GOOD, &[("WR_QUEUES__0__CHALLENGE_TTL", "1s")]).unwrap_err().key, "queues[0].challenge_ttl");
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(prefix_covers("/api/events/42", "/api/events/42"));
        assert!(prefix_covers("/api/events/42", "/api/events/42/seats"));
        assert!(prefix_covers("/api/events/42/", "/api/events/42/seats"));
        assert!(!prefix_covers("/api/events/42", "/api/events/420"));
        assert!(prefix_covers("/", "/anything"));
    }

    fn store(lines: &str) -> Result<Config, ConfigError> {
        load(&format!("[store]\nbackend = \"redis\"\n{lines}\n{GOOD}"), &[])
    }

    #[test]
    fn a_cluster_is_named_by_its_seed_nodes() {
        let c = store(r#"cluster_nodes = ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]"#).unwrap();
        assert_eq!(
            c.store.topology(),
            RedisTopology::Cluster(&["redis://10.0.0.1:7000".to_owned(), "redis://10.0.0.2:7000".to_owned()])
        );
        assert_eq!(c.store.wait_replicas, 0);
        let err = store(r#"cluster_nodes = ["redis://10.0.0.1:7000", "10.0.0.2:7000"]"#).unwrap_err();
        assert_eq!(err.key, "store.cluster_nodes[1]");
    }

    #[test]
    fn a_sentinel_deployment_needs_a_master_name_and_sentinels() {
        let c = store(
            r#"sentinel = { master_name = "wr", nodes = ["redis://10.0.0.1:26379"] }
               wait_replicas = 1"#,
        )
        .unwrap();
        assert_eq!(
            c.store.topology(),
            RedisTopology::Sentinel { master_name: "wr", nodes: &["redis://10.0.0.1:26379".to_owned()] }
        );
        assert_eq!(c.store.wait_replicas, 1);
        assert_eq!(
            store(r#"sentinel = { master_name = "", nodes = ["redis://a:1"] }"#).unwrap_err().key,
            "store.sentinel.master_name"
        );
        assert_eq!(store(r#"sentinel = { master_name = "wr", nodes = [] }"#).unwrap_err().key, "store.sentinel.nodes");
        assert_eq!(
            store(r#"sentinel = { master_name = "wr", nodes = ["tcp://a:1"] }"#).unwrap_err().key,
            "store.sentinel.nodes[0]"
        );
        assert!(store(r#"sentinel = { nodes = ["redis://a:1"] }"#).unwrap_err().message.contains("master_name"));
    }

    #[test]
    fn cluster_and_sentinel_exclude_each_other() {
        let err = store(
            r#"cluster_nodes = ["redis://a:1"]
               sentinel = { master_name = "wr", nodes = ["redis://b:2"] }"#,
        )
        .unwrap_err();
        assert_eq!(err.key, "store.cluster_nodes");
        assert!(err.message.contains("not both"), "{err}");
    }

    #[test]
    fn wait_replicas_is_bounded() {
        assert_eq!(store("wait_replicas = 17").unwrap_err().key, "store.wait_replicas");
        assert_eq!(store("wait_replicas = -1").unwrap_err().key, "store.wait_replicas");
    }
}
