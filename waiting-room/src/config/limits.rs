//! `[limits]`: what one client may take of the proxy, and their checks; a
//! section of its own with its own bounds, apart from the rest of `config.rs`.

use std::time::Duration;

use serde::Deserialize;
use shared::config::{self, ConfigError};

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
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
