//! Per-client budgets: token buckets (requests per second with a burst) and
//! counters of things a client holds open (connections, WebSockets).
//!
//! Both are keyed by [`ClientKey`] and live in this process: a limit is per
//! instance, so behind a balancer spreading one client over k instances the
//! client gets k times the budget. That keeps every check a local hash lookup
//! (no store round trip on the hot path); the limits that must hold across
//! instances (waiting places per client) live in the queue store.
//!
//! Memory is bounded: a map that reaches its capacity first forgets the
//! clients that would be back at a full budget anyway, and starts over only
//! if that is not enough (an attacker with that many addresses is not
//! stopped by per-address limits in the first place).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::client::ClientKey;

/// The per-client budgets of one proxy process, built from `[limits]`.
pub struct Limits {
    /// The configured limits.
    pub config: crate::config::LimitsConfig,
    /// New visitor ids per client.
    pub new_visitors: Buckets,
    /// Joins per client.
    pub joins: Buckets,
    /// Failed operator bearer tokens per client.
    pub admin_failures: Buckets,
    /// Queue WebSockets open per client.
    pub websockets: Arc<Held>,
}

impl Limits {
    /// Budgets as configured.
    pub fn new(config: crate::config::LimitsConfig) -> Self {
        Limits {
            new_visitors: Buckets::new(config.new_visitors),
            joins: Buckets::new(config.joins),
            admin_failures: Buckets::new(config.admin_failures),
            websockets: Held::new(config.max_websockets_per_client),
            config,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(crate::config::LimitsConfig::default())
    }
}

/// Shards of each map: a lock per shard, held for one hash-map operation.
const SHARDS: usize = 16;
/// Clients remembered per shard.
const SHARD_CAPACITY: usize = 8_192;

fn shard_of(key: &ClientKey) -> usize {
    // Fibonacci hashing of the address bits: a client can only choose its own
    // shard, and each shard's map hashes with a random key (SipHash).
    let bits = match key {
        ClientKey::V4(ip) => u64::from(u32::from(*ip)),
        ClientKey::V6(prefix) => *prefix,
    };
    (bits.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % SHARDS
}

pub use crate::config::Rate;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets per client.
pub struct Buckets {
    rate: Rate,
    shards: Vec<Mutex<HashMap<ClientKey, Bucket>>>,
}

impl Buckets {
    /// Buckets refilling at `rate`.
    pub fn new(rate: Rate) -> Self {
        Buckets { rate, shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }

    /// Take one token for `key` at `now`; when there is none, how long until
    /// there will be (for `Retry-After`).
    pub fn take(&self, key: ClientKey, now: Instant) -> Result<(), Duration> {
        let Rate { rate, burst } = self.rate;
        if rate <= 0.0 {
            return Ok(());
        }
        let mut shard = self.shards[shard_of(&key)].lock();
        if shard.len() >= SHARD_CAPACITY && !shard.contains_key(&key) {
            shard.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst);
            if shard.len() >= SHARD_CAPACITY {
                shard.clear();
            }
        }
        let b = shard.entry(key).or_insert(Bucket { tokens: burst, at: now });
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }

    /// Would [`Buckets::take`] succeed for `key` at `now`? Takes nothing.
    pub fn has(&self, key: ClientKey, now: Instant) -> bool {
        let Rate { rate, burst } = self.rate;
        if rate <= 0.0 {
            return true;
        }
        let shard = self.shards[shard_of(&key)].lock();
        shard
            .get(&key)
            .is_none_or(|b| (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(burst) >= 1.0)
    }

    /// Clients remembered now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

/// Seconds for a `Retry-After` header: whole seconds, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

/// How many things each client holds open, with a cap per client.
pub struct Held {
    max: usize,
    shards: Vec<Mutex<HashMap<ClientKey, usize>>>,
}

/// One thing held by a client; dropping it gives the place back.
pub struct HeldGuard {
    held: Arc<Held>,
    key: ClientKey,
}

impl Held {
    /// At most `max` per client (0: no cap, nothing is counted).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Held { max, shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() })
    }

    /// Take a place for `key`, or `None` when it holds `max` already.
    pub fn acquire(self: &Arc<Self>, key: ClientKey) -> Option<Option<HeldGuard>> {
        if self.max == 0 {
            return Some(None);
        }
        let mut shard = self.shards[shard_of(&key)].lock();
        let n = shard.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Some(HeldGuard { held: self.clone(), key }))
    }

    /// Places `key` holds now.
    #[cfg(test)]
    pub fn count(&self, key: ClientKey) -> usize {
        self.shards[shard_of(&key)].lock().get(&key).copied().unwrap_or(0)
    }
}

impl Drop for HeldGuard {
    fn drop(&mut self) {
        let mut shard = self.held.shards[shard_of(&self.key)].lock();
        if let Some(n) = shard.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                shard.remove(&self.key);
            }
        }
    }
}

/// The process's descriptor budget, shared by client connections and the
/// fast lane's upstream connections (in flight and pooled), so accepting
/// never runs into `EMFILE`: what the budget leaves out (`fd_reserve`) is
/// for the store, logs, listeners and Pingora's own upstream pool. Clients
/// may take all but a headroom of it, which keeps room for the upstream
/// connections of the requests already accepted.
pub struct Descriptors {
    max: usize,
    headroom: usize,
    now: AtomicUsize,
}

/// One descriptor of the budget; dropping it gives it back.
pub struct DescriptorGuard(Arc<Descriptors>);

impl Descriptors {
    /// A budget of `max` descriptors, of which clients may take all but
    /// `max / 8` (at most 1,024).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Descriptors { max, headroom: (max / 8).min(1024), now: AtomicUsize::new(0) })
    }

    fn take(self: &Arc<Self>, below: usize) -> Option<DescriptorGuard> {
        self.now
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < below).then_some(n + 1))
            .ok()
            .map(|_| DescriptorGuard(self.clone()))
    }

    /// A descriptor for a client connection, or `None` at the clients' cap.
    pub fn acquire_for_client(self: &Arc<Self>) -> Option<DescriptorGuard> {
        self.take(self.max - self.headroom)
    }

    /// A descriptor for an upstream connection, or `None` at the cap.
    pub fn acquire(self: &Arc<Self>) -> Option<DescriptorGuard> {
        self.take(self.max)
    }

    /// In use now.
    #[cfg(test)]
    pub fn current(&self) -> usize {
        self.now.load(Ordering::Acquire)
    }
}

impl Drop for DescriptorGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The soft limit on open files of this process, raised to the hard limit
/// first (as nginx's `worker_rlimit_nofile` and Go's runtime do): a proxy
/// is a process that holds one descriptor per client.
pub fn open_files_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "reading the open files limit; assuming 1024");
            1024
        }
    }
}

/// Why the edge refused something: the label of
/// `waiting_room_refused_total{reason}` (defined with the metric).
pub use crate::metrics::Refused;

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> ClientKey {
        ClientKey::V4(std::net::Ipv4Addr::new(127, 0, 0, n))
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let b = Buckets::new(Rate { rate: 2.0, burst: 3.0 });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(b.take(key(1), t0).is_ok());
        }
        let wait = b.take(key(1), t0).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500), "{wait:?}");
        // Another client has its own budget.
        assert!(b.take(key(2), t0).is_ok());
        // Half a second later one token is back, not more.
        let t1 = t0 + Duration::from_millis(500);
        assert!(b.take(key(1), t1).is_ok());
        assert!(b.take(key(1), t1).is_err());
        // A rate of 0 is no limit.
        let off = Buckets::new(Rate { rate: 0.0, burst: 0.0 });
        assert!((0..1000).all(|_| off.take(key(1), t0).is_ok()));
    }

    #[test]
    fn buckets_forget_full_clients_when_full() {
        let b = Buckets::new(Rate { rate: 1000.0, burst: 1.0 });
        let t0 = Instant::now();
        for i in 0..(SHARDS * SHARD_CAPACITY * 2) as u32 {
            let _ = b.take(ClientKey::V4(std::net::Ipv4Addr::from(i)), t0);
        }
        assert!(b.len() <= SHARDS * SHARD_CAPACITY);
    }

    #[test]
    fn held_places_are_capped_per_client_and_given_back_on_drop() {
        let held = Held::new(2);
        let a = held.acquire(key(1)).unwrap();
        let b = held.acquire(key(1)).unwrap();
        assert!(held.acquire(key(1)).is_none());
        assert!(held.acquire(key(2)).is_some());
        drop(a);
        assert_eq!(held.count(key(1)), 1);
        assert!(held.acquire(key(1)).is_some());
        drop(b);
        assert_eq!(held.count(key(1)), 0);
        assert!(Held::new(0).acquire(key(1)).is_some_and(|g| g.is_none()));
    }

    #[test]
    fn clients_leave_headroom_for_upstream_connections() {
        let budget = Descriptors::new(16);
        let clients: Vec<_> = std::iter::from_fn(|| budget.acquire_for_client()).collect();
        assert_eq!(clients.len(), 14);
        let upstream: Vec<_> = std::iter::from_fn(|| budget.acquire()).collect();
        assert_eq!(upstream.len(), 2);
        drop(clients);
        assert_eq!(budget.current(), 2);
        assert!(budget.acquire_for_client().is_some());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
