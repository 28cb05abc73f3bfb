//! The waiting room's configuration: one TOML file, every key overridable by a
//! `WR_SECTION__KEY` environment variable, validated as its own step.
//!
//! Loading ([`Config::load`]) only checks shapes and types; [`Config::validate`]
//! checks meaning (addresses parse, queue ids are safe in URLs and Redis keys,
//! protected path prefixes of different queues never overlap). Both report the
//! offending key, and `main` turns either into exit code 2.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use shared::config::{self, ConfigError, Env, Secret};

mod limits;
mod queues;
mod store;
#[cfg(test)]
mod tests;
mod validate;

pub use limits::{LimitsConfig, Rate};
pub use queues::{Admission, AdmissionMode, CHALLENGE_BITS, ChallengeMode, QueueConfig, QueueMode, StoreDownPolicy};
pub use store::{Backend, RedisTopology, SentinelConfig, StoreConfig};
pub use validate::{prefix_covers, valid_id, validate_queues};

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

impl Config {
    /// Load from `path` (or defaults when `None`) and `env`, then validate.
    pub fn load(path: Option<&Path>, env: &dyn Env) -> Result<Config, ConfigError> {
        let config: Config = config::load(path, ENV_PREFIX, env)?;
        config.validate()?;
        Ok(config)
    }
}
