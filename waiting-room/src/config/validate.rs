//! Checking meaning ([`Config::validate`], [`validate_queues`]) and resolving
//! addresses: the step after loading, apart from the shapes it checks.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use shared::config::ConfigError;

use super::{Admission, Backend, Config, QueueConfig, validate_message};

impl Config {
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
