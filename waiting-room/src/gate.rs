//! The gate: does a request to a protected path carry a valid entry token for
//! that path's queue?
//!
//! The hot path must not verify an Ed25519 signature per request, so verified
//! tokens are cached in a bounded `DashMap` keyed by the token text; an entry is
//! honoured only until the token's `exp` and dropped when found expired.
//! Refusals are not cached: a forged token costs its sender one verification.

use dashmap::DashMap;
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

/// Token verification with a cache.
pub struct Gate {
    verifier: TokenVerifier,
    cache: DashMap<Box<str>, Verified>,
    capacity: usize,
}

impl Gate {
    /// A gate trusting `verifier`'s keys, caching up to `capacity` tokens.
    pub fn new(verifier: TokenVerifier, capacity: usize) -> Self {
        Gate { verifier, cache: DashMap::new(), capacity }
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
            self.cache.remove(token);
            return Err(Refusal::Invalid(TokenError::Expired));
        }
        METRICS.token_cache.with_label_values(&["miss"]).inc();
        let claims = self.verifier.verify_any_queue(token).map_err(Refusal::Invalid)?;
        if claims.exp.saturating_mul(1000) <= now_ms {
            return Err(Refusal::Invalid(TokenError::Expired));
        }
        if self.cache.len() >= self.capacity {
            self.cache.retain(|_, v| v.live(now_ms));
            if self.cache.len() >= self.capacity {
                // Only reachable with more live tokens than the cache holds:
                // start over rather than grow without bound.
                self.cache.clear();
            }
        }
        let visitor = claims.sub.clone();
        self.cache.insert(
            token.into(),
            Verified { queue: claims.aud.as_str().into(), visitor: claims.sub.into(), exp: claims.exp },
        );
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
