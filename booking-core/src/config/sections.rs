//! The config sections added for operators of a real sale: the operator
//! listener, the claim gate's leases, idempotency storage, the per-visitor
//! rate limit and which purchases end a session. Each validates itself and
//! names its key on error.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use shared::config::{ConfigError, Secret, duration};

/// Parse `host:port`, naming `key` and showing `example` on error.
pub fn parse_addr(key: &str, text: &str, example: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| ConfigError::new(key, format!("expected host:port like {example}, got \"{text}\"")))
}

/// `[admin]`: the operator listener and its bearer token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the operator listener (`/admin`, `/metrics`, `/healthz`);
    /// empty: no operator listener. Never the public listener's address.
    pub listen: String,
    /// Bearer token for `/admin`; empty disables the admin API.
    pub token: Secret,
    /// Failed `/admin` attempts one client address may make per
    /// `failure_window` before it is answered 429.
    pub max_failures: u32,
    /// The window of `max_failures`.
    #[serde(with = "duration")]
    pub failure_window: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:9093".into(),
            token: Secret::default(),
            max_failures: 10,
            failure_window: Duration::from_secs(60),
        }
    }
}

impl AdminConfig {
    /// Check the token's length, the listener's address and the limits.
    pub fn validate(&self, public_listen: &str) -> Result<(), ConfigError> {
        let token = self.token.expose();
        if !token.is_empty() && token.len() < 16 {
            return Err(ConfigError::new("admin.token", "must be at least 16 characters (or empty to disable /admin)"));
        }
        if !self.listen.is_empty() {
            let addr = parse_addr("admin.listen", &self.listen, "127.0.0.1:9093")?;
            if addr.port() != 0 && public_listen.parse::<SocketAddr>().ok() == Some(addr) {
                return Err(ConfigError::new(
                    "admin.listen",
                    "must differ from server.listen: operator routes are never served to visitors",
                ));
            }
        }
        if !(1..=10_000).contains(&self.max_failures) {
            return Err(ConfigError::new("admin.max_failures", "must be 1..=10000"));
        }
        if self.failure_window < Duration::from_secs(1) || self.failure_window > Duration::from_secs(86_400) {
            return Err(ConfigError::new("admin.failure_window", "must be between 1s and 24h"));
        }
        Ok(())
    }
}

/// `[coupons]`: how long a claim may hold a unit of stock before it is
/// committed, and how often uncommitted units are looked for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CouponsConfig {
    /// How long a gate reservation lasts. A claim must commit within it (less
    /// a fifth, for clock skew between Redis and the database); after it the
    /// reconciler returns the unit to stock unless the database has the claim.
    #[serde(with = "duration")]
    pub lease: Duration,
    /// How often the reconciler looks for expired reservations (it also runs
    /// at start and when the gate says sold out while the database has codes).
    #[serde(with = "duration")]
    pub reconcile_interval: Duration,
}

impl Default for CouponsConfig {
    fn default() -> Self {
        CouponsConfig { lease: Duration::from_secs(10), reconcile_interval: Duration::from_secs(5) }
    }
}

impl CouponsConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.lease < Duration::from_secs(1) || self.lease > Duration::from_secs(600) {
            return Err(ConfigError::new("coupons.lease", "must be between 1s and 10m"));
        }
        if self.reconcile_interval < Duration::from_millis(100) || self.reconcile_interval > Duration::from_secs(600) {
            return Err(ConfigError::new("coupons.reconcile_interval", "must be between 100ms and 10m"));
        }
        Ok(())
    }
}

/// `[idempotency]`: how long `Idempotency-Key` answers are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencyConfig {
    /// A record older than this is deleted (and a retry with its key runs anew).
    #[serde(with = "duration")]
    pub ttl: Duration,
    /// How often expired records are deleted.
    #[serde(with = "duration")]
    pub sweep_interval: Duration,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig { ttl: Duration::from_secs(24 * 3600), sweep_interval: Duration::from_secs(60) }
    }
}

impl IdempotencyConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.ttl < Duration::from_secs(60) || self.ttl > Duration::from_secs(30 * 86_400) {
            return Err(ConfigError::new("idempotency.ttl", "must be between 1m and 30 days"));
        }
        if self.sweep_interval < Duration::from_millis(100) || self.sweep_interval > self.ttl {
            return Err(ConfigError::new("idempotency.sweep_interval", "must be between 100ms and idempotency.ttl"));
        }
        Ok(())
    }
}

/// `[rate_limit]`: requests that change something (holds, confirms,
/// releases, claims), per visitor, per instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Mutating requests a visitor may send per `window` (a token bucket:
    /// this many at once, refilled evenly over the window).
    pub mutations: u32,
    /// The window of `mutations`.
    #[serde(with = "duration")]
    pub window: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig { mutations: 60, window: Duration::from_secs(60) }
    }
}

impl RateLimitConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=100_000).contains(&self.mutations) {
            return Err(ConfigError::new("rate_limit.mutations", "must be 1..=100000"));
        }
        if self.window < Duration::from_secs(1) || self.window > Duration::from_secs(3600) {
            return Err(ConfigError::new("rate_limit.window", "must be between 1s and 1h"));
        }
        Ok(())
    }
}

/// A purchase that ends the visitor's waiting-room session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionEndOn {
    /// A confirmed booking (that leaves no live hold behind).
    Confirm,
    /// A committed coupon claim (that leaves no live hold behind).
    Claim,
}

impl SessionEndOn {
    /// The `reason` the `wr-session` header and the API give.
    pub fn reason(self) -> &'static str {
        match self {
            SessionEndOn::Confirm => "confirm",
            SessionEndOn::Claim => "claim",
        }
    }
}

/// Largest seat layout one event may have (`POST /admin/events` and `[demo]`).
pub const MAX_SEATS: i64 = 20_000;
/// Largest campaign stock (`POST /admin/campaigns` and `[demo]`).
pub const MAX_STOCK: i64 = 1_000_000;

/// `[demo]`: what `make run` seeds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Seed the demo event and campaign at start if the database has no events.
    pub seed: bool,
    /// The event's name (shown on the event page).
    pub event_name: String,
    /// Its venue.
    pub venue: String,
    /// How long after seeding the event starts.
    #[serde(with = "duration")]
    pub starts_in: Duration,
    /// Rows of seats (labelled A, B, …).
    pub rows: i64,
    /// Seats in each row.
    pub seats_per_row: i64,
    /// Price of every seat, in cents.
    pub price_cents: i64,
    /// The coupon campaign's name.
    pub coupon_name: String,
    /// Coupon codes in stock.
    pub coupon_stock: i64,
    /// How long the campaign stays open, from the moment of seeding.
    #[serde(with = "duration")]
    pub coupon_window: Duration,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            seed: false,
            event_name: "Aurora Skies: live in concert".into(),
            venue: "Harbour Hall".into(),
            starts_in: Duration::from_secs(30 * 24 * 3600),
            rows: 12,
            seats_per_row: 25,
            price_cents: 4500,
            coupon_name: "Early-bird merch voucher".into(),
            coupon_stock: 100,
            coupon_window: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

impl DemoConfig {
    /// The same limits as `POST /admin/events` and `/admin/campaigns`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, text) in [
            ("demo.event_name", &self.event_name),
            ("demo.venue", &self.venue),
            ("demo.coupon_name", &self.coupon_name),
        ] {
            if text.trim().is_empty() || text.chars().count() > 200 {
                return Err(ConfigError::new(key, "must be 1..=200 characters"));
            }
        }
        if !(1..=702).contains(&self.rows) {
            return Err(ConfigError::new("demo.rows", "must be 1..=702 (rows are labelled A..ZZ)"));
        }
        if !(1..=1000).contains(&self.seats_per_row) {
            return Err(ConfigError::new("demo.seats_per_row", "must be 1..=1000"));
        }
        if self.rows * self.seats_per_row > MAX_SEATS {
            return Err(ConfigError::new("demo.rows", format!("rows × seats_per_row must be at most {MAX_SEATS}")));
        }
        if !(0..=100_000_000).contains(&self.price_cents) {
            return Err(ConfigError::new("demo.price_cents", "must be 0..=100000000"));
        }
        if !(1..=MAX_STOCK).contains(&self.coupon_stock) {
            return Err(ConfigError::new("demo.coupon_stock", format!("must be 1..={MAX_STOCK}")));
        }
        if self.coupon_window < Duration::from_secs(60) || self.coupon_window > Duration::from_secs(10 * 365 * 86_400) {
            return Err(ConfigError::new("demo.coupon_window", "must be between 1m and 10 years"));
        }
        if self.starts_in > Duration::from_secs(10 * 365 * 86_400) {
            return Err(ConfigError::new("demo.starts_in", "must be at most 10 years"));
        }
        Ok(())
    }
}
