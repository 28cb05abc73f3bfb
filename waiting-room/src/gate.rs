//! The gate: does a request to a protected path carry a valid entry token for
//! that path's queue?
//!
//! The hot path must not verify an Ed25519 signature per request, so verified
//! tokens are cached in a bounded `DashMap` keyed by the token text; an entry is
//! honoured only until the token's `exp`. Entries leave in expiry order: a
//! min-heap of (exp, token) is popped up to now on every insert and by
//! [`Gate::sweep`], so the cache holds the live tokens only, however long the
//! sale runs. Refusals are not cached: a forged token costs its sender one
//! verification.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use shared::token::{TokenError, TokenVerifier};

use crate::metrics::METRICS;

/// Why the gate refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No token in the request.
    Missing,
    /// A token that did not verify, or is for another queue.
    Invalid(TokenError),
}

impl Refusal {
    /// A sentence for the problem body.
    pub fn explain(&self) -> String {
        match self {
            Refusal::Missing => "no entry token was sent".to_owned(),
            Refusal::Invalid(e) => e.to_string(),
        }
    }
}

struct Verified {
    queue: Box<str>,
    visitor: Box<str>,
    exp: i64,
}

impl Verified {
    /// Valid strictly before its `exp` second begins.
    fn live(&self, now_ms: i64) -> bool {
        self.exp.saturating_mul(1000) > now_ms
    }
}

/// Cached tokens by `exp`, soonest on top.
type Expiries = BinaryHeap<Reverse<(i64, Arc<str>)>>;

/// Token verification with a cache.
pub struct Gate {
    verifier: TokenVerifier,
    cache: DashMap<Arc<str>, Verified>,
    /// Cached tokens by expiry, soonest first. A `parking_lot::Mutex`:
    /// taken only on a cache miss and by the sweep, never across an await.
    expiries: Mutex<Expiries>,
    capacity: usize,
}

impl Gate {
    /// A gate trusting `verifier`'s keys, caching up to `capacity` tokens.
    pub fn new(verifier: TokenVerifier, capacity: usize) -> Self {
        Gate { verifier, cache: DashMap::new(), expiries: Mutex::new(BinaryHeap::new()), capacity }
    }

    /// The visitor id if `token` admits to `queue` at `now_ms`. A token is
    /// valid strictly before its `exp` second begins: `exp` is rounded down
    /// from the session end, so the gate never outlasts the session.
    pub fn check(&self, token: Option<&str>, queue: &str, now_ms: i64) -> Result<String, Refusal> {
        let token = token.ok_or(Refusal::Missing)?;
        if let Some(hit) = self.cache.get(token) {
            if hit.live(now_ms) {
                crate::metrics::TOKEN_CACHE_HITS.inc();
                if &*hit.queue != queue {
                    return Err(Refusal::Invalid(TokenError::WrongQueue));
                }
                return Ok(hit.visitor.to_string());
            }
            drop(hit);
            // Leaves the map now and the heap at the next sweep.
            self.cache.remove(token);
            return Err(Refusal::Invalid(TokenError::Expired));
        }
        METRICS.token_cache.with_label_values(&["miss"]).inc();
        let claims = self.verifier.verify_any_queue(token).map_err(Refusal::Invalid)?;
        if claims.exp.saturating_mul(1000) <= now_ms {
            return Err(Refusal::Invalid(TokenError::Expired));
        }
        self.sweep(now_ms);
        if self.cache.len() >= self.capacity {
            // Only reachable with more live tokens than the cache holds:
            // start over rather than grow without bound.
            self.cache.clear();
            self.expiries.lock().clear();
        }
        let visitor = claims.sub.clone();
        let key: Arc<str> = token.into();
        let exp = claims.exp;
        if self
            .cache
            .insert(key.clone(), Verified { queue: claims.aud.as_str().into(), visitor: claims.sub.into(), exp })
            .is_none()
        {
            self.expiries.lock().push(Reverse((exp, key)));
        }
        if claims.aud != queue {
            return Err(Refusal::Invalid(TokenError::WrongQueue));
        }
        Ok(visitor)
    }

    /// The visitor id and the end of the token's validity (ms, exclusive)
    /// if `token` is already cached as valid for `queue` at `now_ms`; `None`
    /// otherwise, without verifying or changing anything (the caller then
    /// takes the full [`Gate::check`] path). Counting the hit is the caller's.
    pub fn check_cached(&self, token: &str, queue: &str, now_ms: i64) -> Option<(String, i64)> {
        let hit = self.cache.get(token)?;
        if hit.live(now_ms) && &*hit.queue == queue {
            return Some((hit.visitor.to_string(), hit.exp.saturating_mul(1000)));
        }
        None
    }

    /// Drop every cached token that has expired at `now_ms`.
    pub fn sweep(&self, now_ms: i64) {
        let mut heap = self.expiries.lock();
        while let Some(Reverse((exp, _))) = heap.peek() {
            if exp.saturating_mul(1000) > now_ms {
                break;
            }
            if let Some(Reverse((_, token))) = heap.pop() {
                self.cache.remove_if(&token, |_, v| !v.live(now_ms));
            }
        }
    }

    /// Tokens cached now.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::keys::KeyDir;
    use shared::token::EntryClaims;

    fn now() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    }

    fn now_ms() -> i64 {
        now() * 1000
    }

    #[test]
    fn cached_tokens_keep_their_queue_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::open_or_create(dir.path()).unwrap();
        let gate = Gate::new(keys.verifier.clone(), 2);
        let claims =
            EntryClaims { sub: "ab".repeat(16), aud: "q".into(), iat: now(), exp: now() + 30, jti: "1".into() };
        let t = keys.signer.sign(&claims).unwrap();
        assert_eq!(gate.check(Some(&t), "q", now_ms()), Ok("ab".repeat(16)));
        assert_eq!(gate.cached(), 1);
        // Second time from the cache, still bound to its queue and expiry.
        assert_eq!(gate.check(Some(&t), "q", now_ms()), Ok("ab".repeat(16)));
        assert_eq!(gate.check(Some(&t), "other", now_ms()), Err(Refusal::Invalid(TokenError::WrongQueue)));
        assert_eq!(gate.check(Some(&t), "q", (now() + 30) * 1000), Err(Refusal::Invalid(TokenError::Expired)));
        assert_eq!(gate.cached(), 0);
        assert_eq!(gate.check(None, "q", now_ms()), Err(Refusal::Missing));
    }

    #[test]
    fn expired_tokens_leave_the_cache_in_expiry_order_without_being_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::open_or_create(dir.path()).unwrap();
        let gate = Gate::new(keys.verifier.clone(), 1000);
        let sign = |i: i64, ttl: i64| {
            let c = EntryClaims {
                sub: format!("{i:032x}"),
                aud: "q".into(),
                iat: now(),
                exp: now() + ttl,
                jti: i.to_string(),
            };
            keys.signer.sign(&c).unwrap()
        };
        for i in 0..10 {
            assert!(gate.check(Some(&sign(i, 10 + i)), "q", now_ms()).is_ok());
        }
        assert_eq!(gate.cached(), 10);
        // Five of them have expired 14.5 s from now; nobody asks for them again.
        gate.sweep((now() + 14) * 1000 + 500);
        assert_eq!(gate.cached(), 5);
        gate.sweep((now() + 100) * 1000);
        assert_eq!(gate.cached(), 0);
        assert!(gate.expiries.lock().is_empty());
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::open_or_create(dir.path()).unwrap();
        let gate = Gate::new(keys.verifier.clone(), 3);
        for i in 0..10 {
            let c = EntryClaims {
                sub: format!("{i:032x}"),
                aud: "q".into(),
                iat: now(),
                exp: now() + 30,
                jti: i.to_string(),
            };
            let t = keys.signer.sign(&c).unwrap();
            assert!(gate.check(Some(&t), "q", now_ms()).is_ok());
            assert!(gate.cached() <= 3);
        }
    }
}
