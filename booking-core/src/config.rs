//! The one config type: `configs/booking-core.toml`, then `BC_SECTION__KEY`
//! environment variables (through [`shared::config::load`]), then
//! [`Config::validate`] as its own step. Every key has an embedded default, so
//! the service starts with no file at all: SQLite under `data/`, no Redis,
//! listening on 127.0.0.1:8081.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use shared::config::{ConfigError, Env, duration};

mod sections;

pub use self::sections::*;

/// Prefix of the environment variables that override the file
/// (`BC_DATABASE__URL=postgres://…`).
pub const ENV_PREFIX: &str = "BC";

/// The booking core's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Which purchases end the visitor's waiting-room session (a `wr-session:
    /// end` response header the proxy acts on): `"confirm"`, `"claim"`.
    pub end_session_on: Vec<SessionEndOn>,
    /// The HTTP listener.
    pub server: ServerConfig,
    /// PostgreSQL or SQLite.
    pub database: DatabaseConfig,
    /// Optional Redis: claim gate, seat-map fan-out, popular events.
    pub redis: RedisConfig,
    /// Where the waiting room's public keys are.
    pub keys: KeysConfig,
    /// Seat holds.
    pub holds: HoldsConfig,
    /// Events and the seat-map cache.
    pub catalogue: CatalogueConfig,
    /// Coupon claims: the gate's leases and their reconciler.
    pub coupons: CouponsConfig,
    /// `Idempotency-Key` records: how long they are kept.
    pub idempotency: IdempotencyConfig,
    /// Per-visitor rate limit on requests that change something.
    pub rate_limit: RateLimitConfig,
    /// The operator listener (`/admin`, `/metrics`, `/healthz`).
    pub admin: AdminConfig,
    /// The demo event `make run` seeds (off unless `seed = true`).
    pub demo: DemoConfig,
    /// Which events each waiting-room queue admits to.
    pub queues: Vec<QueueConfig>,
    /// Log format and filter.
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            end_session_on: vec![SessionEndOn::Confirm],
            server: ServerConfig::default(),
            database: DatabaseConfig::default(),
            redis: RedisConfig::default(),
            keys: KeysConfig::default(),
            holds: HoldsConfig::default(),
            catalogue: CatalogueConfig::default(),
            coupons: CouponsConfig::default(),
            idempotency: IdempotencyConfig::default(),
            rate_limit: RateLimitConfig::default(),
            admin: AdminConfig::default(),
            demo: DemoConfig::default(),
            queues: vec![QueueConfig { id: "main".into(), events: vec![], all_events: true }],
            log: LogConfig::default(),
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: String,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    pub body_limit_bytes: usize,
    /// How long a client may take to send its request headers.
    #[serde(with = "duration")]
    pub header_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8081".into(),
            body_limit_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// `[database]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://…` or `sqlite://path` (the file and its folder are created).
    pub url: String,
    /// Pool size (PostgreSQL) or reader pool size (SQLite, which has one writer).
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before failing with 503.
    #[serde(with = "duration")]
    pub acquire_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://data/booking-core.db".into(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

impl DatabaseConfig {
    /// True when the URL names PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")
    }
}

/// `[redis]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db` of a single Redis; empty runs without Redis
    /// (in-process gate, no fan-out) unless `cluster_nodes` or `sentinel` is
    /// set, which name the servers instead (`url` must then stay empty).
    pub url: String,
    /// Redis Cluster: `redis://host:port` of some of its nodes (the others
    /// are discovered). Exclusive with `url` and `sentinel`.
    pub cluster_nodes: Vec<String>,
    /// Redis Sentinel: the primary is asked of the sentinels (and asked
    /// again after a connection failure). Exclusive with `url` and
    /// `cluster_nodes`.
    pub sentinel: SentinelConfig,
    /// Prefix of every key and channel this service uses, so instances of
    /// different deployments (or tests) can share one Redis.
    pub prefix: String,
    /// How long one connection attempt may take.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// How long one call may wait for its answer (claims wait for the gate,
    /// so this bounds what Redis trouble adds to a claim).
    #[serde(with = "duration")]
    pub response_timeout: Duration,
    /// Connection attempts retried after a lost connection before the next
    /// call starts over.
    pub retries: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: String::new(),
            cluster_nodes: Vec::new(),
            sentinel: SentinelConfig::default(),
            prefix: "bc".into(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_millis(250),
            retries: 1,
        }
    }
}

/// `[redis] sentinel = { master_name = "…", nodes = ["redis://host:port", …] }`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SentinelConfig {
    /// The name the sentinels monitor the primary under (`sentinel monitor <name> …`).
    pub master_name: String,
    /// `redis://host:port` of the sentinels (not of Redis itself).
    pub nodes: Vec<String>,
}

impl SentinelConfig {
    /// Is Sentinel configured (either key set)?
    pub fn is_set(&self) -> bool {
        !self.master_name.is_empty() || !self.nodes.is_empty()
    }
}

/// Which Redis deployment `[redis]` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisMode<'a> {
    /// No Redis: everything in process.
    Off,
    /// One server (`url`).
    Single(&'a str),
    /// A Redis Cluster (`cluster_nodes`).
    Cluster(&'a [String]),
    /// A primary found through sentinels (`sentinel`).
    Sentinel(&'a SentinelConfig),
}

fn is_redis_url(url: &str) -> bool {
    url.starts_with("redis://") || url.starts_with("rediss://")
}

/// Every entry of `urls` is a redis:// URL (`key[i]` names the first that is not).
fn check_urls(key: &str, urls: &[String]) -> Result<(), ConfigError> {
    match urls.iter().position(|u| !is_redis_url(u)) {
        Some(i) => {
            Err(ConfigError::new(format!("{key}[{i}]"), format!("expected redis://host:port, got \"{}\"", urls[i])))
        }
        None => Ok(()),
    }
}

impl RedisConfig {
    /// The deployment this config names (valid configs only name one).
    pub fn mode(&self) -> RedisMode<'_> {
        if !self.cluster_nodes.is_empty() {
            RedisMode::Cluster(&self.cluster_nodes)
        } else if self.sentinel.is_set() {
            RedisMode::Sentinel(&self.sentinel)
        } else if !self.url.is_empty() {
            RedisMode::Single(&self.url)
        } else {
            RedisMode::Off
        }
    }

    /// Is any Redis configured?
    pub fn is_enabled(&self) -> bool {
        self.mode() != RedisMode::Off
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let url = &self.url;
        if !(url.is_empty() || is_redis_url(url)) {
            return Err(ConfigError::new("redis.url", format!("expected redis://host:port or empty, got \"{url}\"")));
        }
        let (cluster, sentinel) = (!self.cluster_nodes.is_empty(), self.sentinel.is_set());
        if cluster && sentinel {
            return Err(ConfigError::new(
                "redis.sentinel",
                "set either redis.cluster_nodes or redis.sentinel, not both",
            ));
        }
        if (cluster || sentinel) && !url.is_empty() {
            let by = if cluster { "redis.cluster_nodes" } else { "redis.sentinel" };
            return Err(ConfigError::new(
                "redis.url",
                format!("must be empty when {by} is set (they name the servers), got \"{url}\""),
            ));
        }
        check_urls("redis.cluster_nodes", &self.cluster_nodes)?;
        if sentinel {
            if self.sentinel.master_name.is_empty() || self.sentinel.master_name.contains(char::is_whitespace) {
                return Err(ConfigError::new(
                    "redis.sentinel.master_name",
                    "must name the monitored primary (non-empty, no spaces)",
                ));
            }
            if self.sentinel.nodes.is_empty() {
                return Err(ConfigError::new("redis.sentinel.nodes", "must list at least one sentinel"));
            }
            check_urls("redis.sentinel.nodes", &self.sentinel.nodes)?;
        }
        if self.prefix.is_empty() || self.prefix.contains(char::is_whitespace) {
            return Err(ConfigError::new("redis.prefix", "must be non-empty and without spaces"));
        }
        let (min, max) = (Duration::from_millis(10), Duration::from_secs(30));
        if self.connect_timeout < min || self.connect_timeout > max {
            return Err(ConfigError::new("redis.connect_timeout", "must be between 10ms and 30s"));
        }
        if self.response_timeout < min || self.response_timeout > Duration::from_secs(10) {
            return Err(ConfigError::new("redis.response_timeout", "must be between 10ms and 10s"));
        }
        if self.retries > 10 {
            return Err(ConfigError::new("redis.retries", format!("must be 0..=10, got {}", self.retries)));
        }
        Ok(())
    }
}

/// `[keys]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// Folder of `<kid>.pem` public keys the waiting room signs entry tokens with.
    pub public_dir: PathBuf,
    /// Clock skew tolerated past a token's `exp`.
    #[serde(with = "duration")]
    pub leeway: Duration,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig { public_dir: PathBuf::from("data/keys/public"), leeway: Duration::from_secs(5) }
    }
}

/// `[holds]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HoldsConfig {
    /// How long a hold lasts before the seat is free again.
    #[serde(with = "duration")]
    pub length: Duration,
    /// How often the sweeper turns expired holds back into available seats.
    #[serde(with = "duration")]
    pub sweep_interval: Duration,
    /// Most live holds plus bookings one visitor may have on one event.
    pub max_per_visitor: i64,
}

impl Default for HoldsConfig {
    fn default() -> Self {
        HoldsConfig { length: Duration::from_secs(300), sweep_interval: Duration::from_secs(5), max_per_visitor: 4 }
    }
}

/// `[catalogue]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogueConfig {
    /// Longest a cached seat map is served; a safety net behind the explicit
    /// invalidations (a pub/sub message can be lost while Redis reconnects).
    #[serde(with = "duration")]
    pub seat_map_ttl: Duration,
}

impl Default for CatalogueConfig {
    fn default() -> Self {
        CatalogueConfig { seat_map_ttl: Duration::from_secs(30) }
    }
}

/// `[[queues]]`: a waiting-room queue and the events its tokens may touch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// The queue id (the token's `aud`).
    pub id: String,
    /// Event ids this queue admits to.
    #[serde(default)]
    pub events: Vec<i64>,
    /// Admit to every event (a site with one queue in front of everything).
    #[serde(default)]
    pub all_events: bool,
}

pub use shared::log::{LogConfig, LogFormat};

impl Config {
    /// Load from `file` (or defaults only, when `None`) with `BC_…` overrides,
    /// then validate.
    pub fn load(file: Option<&Path>, env: &dyn Env) -> Result<Config, ConfigError> {
        let config: Config = shared::config::load(file, ENV_PREFIX, env)?;
        config.validate()?;
        Ok(config)
    }

    /// Like [`Config::load`], from TOML text.
    pub fn load_str(text: &str, env: &dyn Env) -> Result<Config, ConfigError> {
        let config: Config = shared::config::load_str(text, ENV_PREFIX, env)?;
        config.validate()?;
        Ok(config)
    }

    /// Check what types cannot express; every message names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        let limit = self.server.body_limit_bytes;
        if !(1024..=1024 * 1024).contains(&limit) {
            return Err(ConfigError::new("server.body_limit_bytes", format!("must be 1024..=1048576, got {limit}")));
        }
        if !self.database.is_postgres() && !self.database.url.starts_with("sqlite:") {
            return Err(ConfigError::new(
                "database.url",
                format!("expected postgres://… or sqlite://path, got \"{}\"", self.database.url),
            ));
        }
        if !(1..=1000).contains(&self.database.max_connections) {
            return Err(ConfigError::new("database.max_connections", "must be 1..=1000"));
        }
        self.redis.validate()?;
        if self.keys.public_dir.as_os_str().is_empty() {
            return Err(ConfigError::new("keys.public_dir", "must name the folder of public keys"));
        }
        if self.keys.leeway > Duration::from_secs(300) {
            return Err(ConfigError::new("keys.leeway", "must be at most 5m"));
        }
        if self.holds.length < Duration::from_millis(100) || self.holds.length > Duration::from_secs(3600) {
            return Err(ConfigError::new("holds.length", "must be between 100ms and 1h"));
        }
        if self.holds.sweep_interval < Duration::from_millis(10) {
            return Err(ConfigError::new("holds.sweep_interval", "must be at least 10ms"));
        }
        if !(1..=10_000).contains(&self.holds.max_per_visitor) {
            return Err(ConfigError::new("holds.max_per_visitor", "must be 1..=10000"));
        }
        self.admin.validate(&self.server.listen)?;
        self.coupons.validate()?;
        self.idempotency.validate()?;
        self.rate_limit.validate()?;
        self.log.validate()?;
        self.demo.validate()?;
        let mut seen = HashSet::new();
        for (i, queue) in self.queues.iter().enumerate() {
            if queue.id.is_empty() {
                return Err(ConfigError::new(format!("queues[{i}].id"), "must not be empty"));
            }
            if !seen.insert(queue.id.as_str()) {
                return Err(ConfigError::new(
                    format!("queues[{i}].id"),
                    format!("duplicate queue id \"{}\"", queue.id),
                ));
            }
            if let Some(bad) = queue.events.iter().find(|e| **e <= 0) {
                return Err(ConfigError::new(
                    format!("queues[{i}].events"),
                    format!("event ids are positive, got {bad}"),
                ));
            }
        }
        Ok(())
    }

    /// The listen address, parsed.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        parse_addr("server.listen", &self.server.listen, "127.0.0.1:8081")
    }

    /// The operator listener's address, parsed; `None` when `admin.listen` is empty.
    pub fn admin_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.admin.listen.is_empty() {
            return Ok(None);
        }
        parse_addr("admin.listen", &self.admin.listen, "127.0.0.1:9093").map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_describe_an_embedded_single_instance() {
        let c = Config::load(None, &[]).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8081");
        assert!(c.database.url.starts_with("sqlite://data/"));
        assert!(c.redis.url.is_empty());
        assert_eq!(c.holds.length, Duration::from_secs(300));
        assert_eq!(c.keys.public_dir, PathBuf::from("data/keys/public"));
    }

    #[test]
    fn env_overrides_the_file() {
        let env =
            [("BC_DATABASE__URL", "postgres://x@h/db"), ("BC_HOLDS__LENGTH", "1s"), ("BC_QUEUES__0__EVENTS", "[3]")];
        let c = Config::load_str("[[queues]]\nid = \"q\"\nevents = [1]\n", &env).unwrap();
        assert!(c.database.is_postgres());
        assert_eq!(c.holds.length, Duration::from_secs(1));
        assert_eq!(c.queues[0].events, vec![3]);
    }

    #[test]
    fn invalid_values_name_their_key() {
        let err = Config::load_str("", &[("BC_DATABASE__URL", "mysql://x")]).unwrap_err();
        assert_eq!(err.key, "database.url");
        let err = Config::load_str("[server]\nlisten = \"nowhere\"", &[]).unwrap_err();
        assert_eq!(err.key, "server.listen");
        let err = Config::load_str("[holds]\nlenght = \"1s\"", &[]).unwrap_err();
        assert_eq!(err.key, "holds.lenght");
        let err = Config::load_str("[admin]\ntoken = \"short\"", &[]).unwrap_err();
        assert_eq!(err.key, "admin.token");
        let err = Config::load_str("[[queues]]\nid = \"a\"\n[[queues]]\nid = \"a\"", &[]).unwrap_err();
        assert_eq!(err.key, "queues[1].id");
        let err = Config::load_str("", &[("BC_LOG__LEVEL", "info,booking_core=loud")]).unwrap_err();
        assert_eq!(err.key, "log.level");
        let err = Config::load_str("[log]\nformat = \"xml\"", &[]).unwrap_err();
        assert_eq!(err.key, "log.format");
        for (var, value, key) in [
            ("BC_HOLDS__MAX_PER_VISITOR", "0", "holds.max_per_visitor"),
            ("BC_COUPONS__LEASE", "100ms", "coupons.lease"),
            ("BC_COUPONS__RECONCILE_INTERVAL", "1h", "coupons.reconcile_interval"),
            ("BC_IDEMPOTENCY__TTL", "1s", "idempotency.ttl"),
            ("BC_RATE_LIMIT__MUTATIONS", "0", "rate_limit.mutations"),
            ("BC_ADMIN__LISTEN", "nowhere", "admin.listen"),
            ("BC_ADMIN__LISTEN", "127.0.0.1:8081", "admin.listen"),
            ("BC_ADMIN__MAX_FAILURES", "0", "admin.max_failures"),
            ("BC_END_SESSION_ON", "[\"checkout\"]", "end_session_on[0]"),
            ("BC_REDIS__RESPONSE_TIMEOUT", "0s", "redis.response_timeout"),
            ("BC_REDIS__RESPONSE_TIMEOUT", "1m", "redis.response_timeout"),
            ("BC_REDIS__CONNECT_TIMEOUT", "1ms", "redis.connect_timeout"),
            ("BC_REDIS__CONNECT_TIMEOUT", "soon", "redis.connect_timeout"),
            ("BC_REDIS__RETRIES", "11", "redis.retries"),
        ] {
            let err = Config::load_str("", &[(var, value)]).unwrap_err();
            assert_eq!(err.key, key, "{var}={value}: {err}");
        }
    }

    #[test]
    fn operators_get_their_own_listener_and_purchases_end_sessions_by_default() {
        let c = Config::load(None, &[]).unwrap();
        assert_eq!(c.admin_addr().unwrap(), Some("127.0.0.1:9093".parse().unwrap()));
        assert_eq!(c.end_session_on, vec![SessionEndOn::Confirm]);
        assert_eq!(c.holds.max_per_visitor, 4);
        assert_eq!(c.idempotency.ttl, Duration::from_secs(24 * 3600));
        let env = [("BC_END_SESSION_ON", r#"["confirm","claim"]"#), ("BC_ADMIN__LISTEN", "")];
        let c = Config::load_str("", &env).unwrap();
        assert_eq!(c.end_session_on, vec![SessionEndOn::Confirm, SessionEndOn::Claim]);
        assert_eq!(c.admin_addr().unwrap(), None, "empty: no operator listener");
    }

    #[test]
    fn redis_fails_fast_by_default() {
        let c = Config::load(None, &[]).unwrap();
        assert_eq!(c.redis.connect_timeout, Duration::from_secs(1));
        assert!(c.redis.response_timeout <= Duration::from_millis(250));
        assert_eq!(c.redis.retries, 1);
        let c = Config::load_str("[redis]\nresponse_timeout = \"100ms\"\nretries = 0", &[]).unwrap();
        assert_eq!(c.redis.response_timeout, Duration::from_millis(100));
        assert_eq!(c.redis.retries, 0);
    }

    #[test]
    fn redis_names_one_deployment_single_cluster_or_sentinel() {
        let c = Config::load(None, &[]).unwrap();
        assert_eq!(c.redis.mode(), RedisMode::Off);
        assert!(!c.redis.is_enabled());
        let c = Config::load_str("[redis]\nurl = \"redis://h:1\"", &[]).unwrap();
        assert_eq!(c.redis.mode(), RedisMode::Single("redis://h:1"));
        let c = Config::load_str("[redis]\ncluster_nodes = [\"redis://a:1\", \"redis://b:2\"]", &[]).unwrap();
        assert_eq!(c.redis.mode(), RedisMode::Cluster(&["redis://a:1".to_owned(), "redis://b:2".to_owned()]));
        let file = "[redis]\nsentinel = { master_name = \"m\", nodes = [\"redis://s:26379\"] }";
        let c = Config::load_str(file, &[]).unwrap();
        let RedisMode::Sentinel(s) = c.redis.mode() else { panic!("{:?}", c.redis.mode()) };
        assert_eq!((s.master_name.as_str(), s.nodes.as_slice()), ("m", &["redis://s:26379".to_owned()][..]));
        assert!(c.redis.is_enabled());
        // The shipped file's empty keys, set from the environment.
        let shipped = "[redis]\nurl = \"\"\ncluster_nodes = []\nsentinel = { master_name = \"\", nodes = [] }";
        let env = [("BC_REDIS__SENTINEL__MASTER_NAME", "m"), ("BC_REDIS__SENTINEL__NODES", "[\"redis://s:1\"]")];
        assert!(matches!(Config::load_str(shipped, &env).unwrap().redis.mode(), RedisMode::Sentinel(_)));
        let env = [("BC_REDIS__CLUSTER_NODES", "[\"redis://a:1\"]")];
        assert!(matches!(Config::load_str(shipped, &env).unwrap().redis.mode(), RedisMode::Cluster(_)));
    }

    #[test]
    fn redis_deployments_are_exclusive_and_their_keys_are_checked() {
        for (file, key) in [
            ("cluster_nodes = [\"redis://a:1\"]\nurl = \"redis://h:1\"", "redis.url"),
            ("sentinel = { master_name = \"m\", nodes = [\"redis://s:1\"] }\nurl = \"redis://h:1\"", "redis.url"),
            (
                "cluster_nodes = [\"redis://a:1\"]\nsentinel = { master_name = \"m\", nodes = [\"redis://s:1\"] }",
                "redis.sentinel",
            ),
            ("cluster_nodes = [\"redis://a:1\", \"a:2\"]", "redis.cluster_nodes[1]"),
            ("sentinel = { nodes = [\"redis://s:1\"] }", "redis.sentinel.master_name"),
            ("sentinel = { master_name = \"m\" }", "redis.sentinel.nodes"),
            ("sentinel = { master_name = \"m\", nodes = [\"s:1\"] }", "redis.sentinel.nodes[0]"),
            (
                "sentinel = { master_name = \"m\", nodes = [\"redis://s:1\"], password = \"x\" }",
                "redis.sentinel.password",
            ),
        ] {
            let err = Config::load_str(&format!("[redis]\n{file}"), &[]).unwrap_err();
            assert_eq!(err.key, key, "{file}: {err}");
        }
        let err =
            Config::load_str("[redis]\nurl = \"redis://h:1\"\ncluster_nodes = [\"redis://a:1\"]", &[]).unwrap_err();
        assert!(err.to_string().contains("must be empty when redis.cluster_nodes is set"), "{err}");
    }

    #[test]
    fn log_format_and_level_come_from_the_environment() {
        let c = Config::load_str("", &[("BC_LOG__FORMAT", "json"), ("BC_LOG__LEVEL", "debug")]).unwrap();
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, "debug");
        assert_eq!(Config::load(None, &[]).unwrap().log.format, LogFormat::Text);
    }

    #[test]
    fn the_shipped_config_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/booking-core.toml");
        Config::load(Some(&path), &[]).unwrap();
    }
}
