//! Rate limits, kept in this process: mutating requests per visitor (a token
//! bucket per verified visitor id) and failed `/admin` attempts per client
//! address (a fixed window). Neither touches the database or Redis, so a flood
//! of refused requests costs a hash lookup each.
//!
//! Per instance, deliberately: with K instances behind a balancer a visitor
//! gets at most K× the rate, and a shared counter would put a Redis round trip
//! (and a Redis outage) in front of every hold. What the limit bounds — rows a
//! token can write, guesses at the admin token — stays bounded either way.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use http::StatusCode;
use shared::problem::Problem;

use crate::config::Config;
use crate::problem::ApiError;

/// Above this many tracked keys, idle ones are dropped before inserting more.
const MAX_TRACKED: usize = 100_000;

/// A request refused by a rate limit → 429 with `Retry-After`.
#[derive(Debug, thiserror::Error)]
pub enum RateLimited {
    /// The visitor sent too many requests that change something.
    #[error(
        "too many requests that change something: at most {limit} per {window} per visitor; retry in {retry_after} s"
    )]
    Mutations {
        /// `rate_limit.mutations`.
        limit: u32,
        /// `rate_limit.window`, human-readable.
        window: String,
        /// Seconds until the next request is accepted.
        retry_after: u64,
    },
    /// The client address failed the admin token check too often.
    #[error("too many failed admin attempts from your address; retry in {retry_after} s")]
    AdminFailures {
        /// Seconds until the window ends.
        retry_after: u64,
    },
}

impl ApiError for RateLimited {
    fn status(&self) -> StatusCode {
        StatusCode::TOO_MANY_REQUESTS
    }

    fn extend(&self, problem: Problem) -> Problem {
        match self {
            RateLimited::Mutations { limit, .. } => problem.with("limit", *limit),
            RateLimited::AdminFailures { .. } => problem,
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            RateLimited::Mutations { retry_after, .. } | RateLimited::AdminFailures { retry_after } => {
                Some(*retry_after)
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// The application's rate limits; one per application.
pub struct Limits {
    mutations: u32,
    window: Duration,
    buckets: DashMap<String, Bucket>,
    admin_max: u32,
    admin_window: Duration,
    admin: DashMap<IpAddr, Window>,
}

fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Limits {
    /// Limits from `rate_limit` and `admin`.
    pub fn new(config: &Config) -> Limits {
        Limits {
            mutations: config.rate_limit.mutations,
            window: config.rate_limit.window,
            buckets: DashMap::new(),
            admin_max: config.admin.max_failures,
            admin_window: config.admin.failure_window,
            admin: DashMap::new(),
        }
    }

    /// Take one mutating request from `visitor`'s bucket.
    pub fn mutation(&self, visitor: &str) -> Result<(), RateLimited> {
        self.mutation_at(visitor, Instant::now())
    }

    fn mutation_at(&self, visitor: &str, now: Instant) -> Result<(), RateLimited> {
        if self.buckets.len() >= MAX_TRACKED && !self.buckets.contains_key(visitor) {
            self.sweep_at(now);
        }
        let capacity = f64::from(self.mutations);
        let per_second = capacity / self.window.as_secs_f64();
        let mut bucket = self.buckets.entry(visitor.to_owned()).or_insert(Bucket { tokens: capacity, at: now });
        let refilled =
            (bucket.tokens + now.saturating_duration_since(bucket.at).as_secs_f64() * per_second).min(capacity);
        if refilled >= 1.0 {
            *bucket = Bucket { tokens: refilled - 1.0, at: now };
            return Ok(());
        }
        *bucket = Bucket { tokens: refilled, at: now };
        let wait = Duration::from_secs_f64((1.0 - refilled) / per_second);
        Err(RateLimited::Mutations {
            limit: self.mutations,
            window: humantime::format_duration(self.window).to_string(),
            retry_after: whole_seconds(wait).max(1),
        })
    }

    /// Begin an admin attempt from `peer`: refused if the address failed the
    /// check `admin.max_failures` times in this window; otherwise counted as a
    /// failure until [`Limits::admin_succeeded`] takes it back. Counting first
    /// makes concurrent guesses from one address share the allowance instead
    /// of all passing the check before any of them failed.
    pub fn admin_attempt(&self, peer: IpAddr) -> Result<(), RateLimited> {
        let now = Instant::now();
        if self.admin.len() >= MAX_TRACKED && !self.admin.contains_key(&peer) {
            self.sweep_at(now);
        }
        let mut w = self.admin.entry(peer).or_insert(Window { started: now, failures: 0 });
        let age = now.saturating_duration_since(w.started);
        if age >= self.admin_window {
            *w = Window { started: now, failures: 0 };
        } else if w.failures >= self.admin_max {
            return Err(RateLimited::AdminFailures { retry_after: whole_seconds(self.admin_window - age).max(1) });
        }
        w.failures += 1;
        Ok(())
    }

    /// The attempt begun by [`Limits::admin_attempt`] passed: it was no failure.
    pub fn admin_succeeded(&self, peer: IpAddr) {
        if let Some(mut w) = self.admin.get_mut(&peer) {
            w.failures = w.failures.saturating_sub(1);
        }
    }

    /// Forget full buckets and ended windows (they hold no information).
    pub fn sweep(&self) {
        self.sweep_at(Instant::now());
    }

    fn sweep_at(&self, now: Instant) {
        self.buckets.retain(|_, b| now.saturating_duration_since(b.at) < self.window);
        self.admin.retain(|_, w| now.saturating_duration_since(w.started) < self.admin_window);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn limits(mutations: u32, window: u64) -> Limits {
        let mut config = Config::default();
        config.rate_limit.mutations = mutations;
        config.rate_limit.window = Duration::from_secs(window);
        config.admin.max_failures = 2;
        Limits::new(&config)
    }

    #[test]
    fn a_visitor_gets_the_burst_then_the_refill_rate() {
        let l = limits(3, 3);
        let t = Instant::now();
        for _ in 0..3 {
            l.mutation_at("a", t).unwrap();
        }
        match l.mutation_at("a", t) {
            Err(RateLimited::Mutations { retry_after, .. }) => assert_eq!(retry_after, 1),
            other => panic!("{other:?}"),
        }
        l.mutation_at("b", t).unwrap();
        // One token a second comes back.
        l.mutation_at("a", t + Duration::from_millis(1000)).unwrap();
        assert!(l.mutation_at("a", t + Duration::from_millis(1100)).is_err());
        l.sweep_at(t + Duration::from_secs(10));
        assert!(l.buckets.is_empty(), "idle buckets are forgotten");
    }

    #[test]
    fn admin_failures_are_counted_per_address_and_successes_are_not() {
        let l = limits(3, 3);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        l.admin_attempt(a).unwrap();
        l.admin_succeeded(a);
        l.admin_attempt(a).unwrap();
        l.admin_attempt(a).unwrap();
        assert!(matches!(l.admin_attempt(a), Err(RateLimited::AdminFailures { retry_after: 1..=60 })));
        l.admin_attempt(b).unwrap();
    }
}
