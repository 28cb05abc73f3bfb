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
//!
//! A session that ended with a purchase (the upstream answered
//! `wr-session: end`) is revoked: every token of that visitor for that queue
//! issued at or before the session's admission is refused from then on, on
//! every instance (the store tells the others, and is asked about a token
//! this instance sees for the first time). Revocations are kept until the
//! tokens they cover expire.

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
    /// The session the token granted ended with a purchase.
    Ended,
}

impl Refusal {
    /// A sentence for the problem body.
    pub fn explain(&self) -> String {
        match self {
            Refusal::Missing => "no entry token was sent".to_owned(),
            Refusal::Invalid(e) => e.to_string(),
            Refusal::Ended => "your session ended with your purchase".to_owned(),
        }
    }
}

/// A request the gate lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admit {
    /// The visitor the token names.
    pub visitor: String,
    /// When the token was issued (its `iat`, seconds): identifies the admission.
    pub iat: i64,
    /// Verified now, not found in the cache: the store has not been asked
    /// whether this admission's session ended.
    pub fresh: bool,
}

struct Verified {
    queue: Box<str>,
    visitor: Box<str>,
    iat: i64,
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

/// A revoked admission: tokens issued up to `iat` are refused until `until_ms`.
#[derive(Debug, Clone, Copy)]
struct Revoked {
    iat: i64,
    until_ms: i64,
}

/// Token verification with a cache.
pub struct EntryGate {
    verifier: TokenVerifier,
    cache: DashMap<Arc<str>, Verified>,
    /// Cached tokens by expiry, soonest first. A `parking_lot::Mutex`:
    /// taken only on a cache miss and by the sweep, never across an await.
    expiries: Mutex<Expiries>,
    capacity: usize,
    /// Ended sessions by (queue, visitor).
    revoked: DashMap<(Box<str>, Box<str>), Revoked>,
    /// Bumped on every revocation, so copies of cached tokens kept elsewhere
    /// (the lane's workers) know to look again.
    revocations: std::sync::atomic::AtomicU64,
}

impl EntryGate {
    /// A gate trusting `verifier`'s keys, caching up to `capacity` tokens.
    pub fn new(verifier: TokenVerifier, capacity: usize) -> Self {
        EntryGate {
            verifier,
            cache: DashMap::new(),
            expiries: Mutex::new(BinaryHeap::new()),
            capacity,
            revoked: DashMap::new(),
            revocations: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Who `token` admits to `queue` at `now_ms`. A token is valid strictly
    /// before its `exp` second begins: `exp` is rounded down from the
    /// session end, so the gate never outlasts the session.
    pub fn check(&self, token: Option<&str>, queue: &str, now_ms: i64) -> Result<Admit, Refusal> {
        let token = token.ok_or(Refusal::Missing)?;
        if let Some(hit) = self.cache.get(token) {
            if hit.live(now_ms) {
                crate::metrics::TOKEN_CACHE_HITS.inc();
                if &*hit.queue != queue {
                    return Err(Refusal::Invalid(TokenError::WrongQueue));
                }
                if self.is_revoked(queue, &hit.visitor, hit.iat) {
                    return Err(Refusal::Ended);
                }
                return Ok(Admit { visitor: hit.visitor.to_string(), iat: hit.iat, fresh: false });
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
        let key: Arc<str> = token.into();
        let (iat, exp) = (claims.iat, claims.exp);
        let verified = Verified { queue: claims.aud.as_str().into(), visitor: claims.sub.as_str().into(), iat, exp };
        if self.cache.insert(key.clone(), verified).is_none() {
            self.expiries.lock().push(Reverse((exp, key)));
        }
        if claims.aud != queue {
            return Err(Refusal::Invalid(TokenError::WrongQueue));
        }
        if self.is_revoked(queue, &claims.sub, iat) {
            return Err(Refusal::Ended);
        }
        Ok(Admit { visitor: claims.sub, iat, fresh: true })
    }

    /// The visitor, the end of the token's validity (ms, exclusive) and its
    /// `iat` if `token` is already cached as valid for `queue` at `now_ms`
    /// and not revoked; `None` otherwise, without verifying or changing
    /// anything (the caller then takes the full [`Gate::check`] path).
    /// Counting the hit is the caller's.
    pub fn check_cached(&self, token: &str, queue: &str, now_ms: i64) -> Option<(String, i64, i64)> {
        let hit = self.cache.get(token)?;
        if hit.live(now_ms) && &*hit.queue == queue && !self.is_revoked(queue, &hit.visitor, hit.iat) {
            return Some((hit.visitor.to_string(), hit.exp.saturating_mul(1000), hit.iat));
        }
        None
    }

    /// Refuse every token of `visitor` for `queue` issued at or before
    /// `iat`, until `until_ms`.
    pub fn revoke(&self, queue: &str, visitor: &str, iat: i64, until_ms: i64) {
        let key = (Box::<str>::from(queue), Box::<str>::from(visitor));
        let mut entry = self.revoked.entry(key).or_insert(Revoked { iat, until_ms });
        entry.iat = entry.iat.max(iat);
        entry.until_ms = entry.until_ms.max(until_ms);
        drop(entry);
        self.revocations.fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// Has the session that issued `visitor`'s token (at `iat`) for `queue` ended?
    pub fn is_revoked(&self, queue: &str, visitor: &str, iat: i64) -> bool {
        if self.revoked.is_empty() {
            return false;
        }
        let key = (Box::<str>::from(queue), Box::<str>::from(visitor));
        self.revoked.get(&key).is_some_and(|r| iat <= r.iat)
    }

    /// A number that changes whenever a session is revoked.
    pub fn revocations(&self) -> u64 {
        self.revocations.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Drop every cached token that has expired at `now_ms` (and the
    /// revocations of tokens that have all expired).
    pub fn sweep(&self, now_ms: i64) {
        if !self.revoked.is_empty() {
            self.revoked.retain(|_, r| r.until_ms > now_ms);
        }
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
    #[cfg(test)]
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
        let gate = EntryGate::new(keys.verifier.clone(), 2);
        let claims =
            EntryClaims { sub: "ab".repeat(16), aud: "q".into(), iat: now(), exp: now() + 30, jti: "1".into() };
        let t = keys.signer.sign(&claims).unwrap();
        let admit = |fresh| Ok(Admit { visitor: "ab".repeat(16), iat: claims.iat, fresh });
        assert_eq!(gate.check(Some(&t), "q", now_ms()), admit(true));
        assert_eq!(gate.cached(), 1);
        // Second time from the cache, still bound to its queue and expiry.
        assert_eq!(gate.check(Some(&t), "q", now_ms()), admit(false));
        assert_eq!(gate.check(Some(&t), "other", now_ms()), Err(Refusal::Invalid(TokenError::WrongQueue)));
        assert_eq!(gate.check(Some(&t), "q", (now() + 30) * 1000), Err(Refusal::Invalid(TokenError::Expired)));
        assert_eq!(gate.cached(), 0);
        assert_eq!(gate.check(None, "q", now_ms()), Err(Refusal::Missing));
    }

    #[test]
    fn a_revoked_admission_is_refused_and_a_later_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::open_or_create(dir.path()).unwrap();
        let gate = EntryGate::new(keys.verifier.clone(), 100);
        let token = |iat: i64| {
            let c = EntryClaims { sub: "cd".repeat(16), aud: "q".into(), iat, exp: now() + 60, jti: iat.to_string() };
            keys.signer.sign(&c).unwrap()
        };
        let (first, later) = (token(now() - 10), token(now()));
        assert!(gate.check(Some(&first), "q", now_ms()).is_ok());
        let before = gate.revocations();
        gate.revoke("q", &"cd".repeat(16), now() - 10, (now() + 60) * 1000);
        assert_ne!(gate.revocations(), before);
        // Cached or not, the ended admission's token is refused; the next
        // admission's is not; another queue's visitor is untouched.
        assert_eq!(gate.check(Some(&first), "q", now_ms()), Err(Refusal::Ended));
        assert_eq!(gate.check_cached(&first, "q", now_ms()), None);
        assert!(gate.check(Some(&later), "q", now_ms()).is_ok());
        assert!(!gate.is_revoked("other", &"cd".repeat(16), now() - 10));
        // Revocations leave with the tokens they cover.
        gate.sweep((now() + 61) * 1000);
        assert!(!gate.is_revoked("q", &"cd".repeat(16), now() - 10));
    }

    #[test]
    fn expired_tokens_leave_the_cache_in_expiry_order_without_being_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::open_or_create(dir.path()).unwrap();
        let gate = EntryGate::new(keys.verifier.clone(), 1000);
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
        let gate = EntryGate::new(keys.verifier.clone(), 3);
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
