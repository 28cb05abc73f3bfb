//! A worker thread's own tallies and token copies ([`Local`]) and the fast
//! lane's methods that use them: per-thread state, apart from the connection
//! loop in `mod.rs` that calls into it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::Histogram;
use prometheus::local::{LocalHistogram, LocalIntCounter};

use super::{CLASSES, FastLane};
use crate::metrics::METRICS;

/// How often a worker adds its metric tallies to the shared registry.
pub(super) const FLUSH: Duration = Duration::from_millis(100);
/// Tokens a worker keeps its own copy of.
const LOCAL_TOKENS: usize = 16 * 1024;

/// A worker thread's own tallies of the lane's per-request metrics and its
/// own copy of the gate's cached tokens, so that a request on the fast lane
/// writes no memory another worker also writes (each shared counter, and the
/// read lock of the gate's cache shard, would bounce a cache line between
/// the cores on every request). The tallies reach the shared registry every
/// [`FLUSH`]; a token is copied here only after the shared gate has it as
/// valid, and is honoured under the same rule (same queue, before `exp`, not
/// revoked: after any revocation a copy is checked against the gate once).
struct Local {
    lane: u64,
    allowed: Vec<(String, LocalIntCounter)>,
    latency: Vec<LocalHistogram>,
    proxied: LocalIntCounter,
    hits: LocalIntCounter,
    tokens: HashMap<Box<str>, Admitted>,
    /// Each queue's admitted-traffic signals, in `allowed`'s order.
    signals: Vec<(Arc<crate::queues::Queue>, crate::signals::Local)>,
}

struct Admitted {
    queue: Box<str>,
    visitor: Box<str>,
    /// The token's `iat`: which admission it belongs to.
    iat: i64,
    /// Valid strictly before this (ms).
    until_ms: i64,
    /// The gate's revocation count when this copy was last checked.
    revocations: u64,
}

impl Local {
    fn flush(&mut self) {
        for (queue, tally) in &mut self.signals {
            tally.flush(&queue.signals);
        }
        self.allowed.iter().for_each(|(_, c)| c.flush());
        self.latency.iter().for_each(LocalHistogram::flush);
        self.proxied.flush();
        self.hits.flush();
    }
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// Flush this thread's tallies to the registry.
pub(super) fn flush_local() {
    LOCAL.with_borrow_mut(|l| l.iter_mut().for_each(Local::flush));
}

/// Forget this thread's copies of tokens expired at `now_ms`.
pub(super) fn forget_expired_local(now_ms: i64) {
    LOCAL.with_borrow_mut(|l| {
        if let Some(l) = l {
            l.tokens.retain(|_, a| a.until_ms > now_ms);
        }
    });
}

impl FastLane {
    /// Run `f` on this thread's [`Local`] for this lane.
    fn local<R>(&self, f: impl FnOnce(&mut Local) -> R) -> R {
        LOCAL.with_borrow_mut(|slot| {
            let local = match slot {
                Some(l) if l.lane == self.id => l,
                _ => {
                    if let Some(mut old) = slot.take() {
                        old.flush();
                    }
                    slot.insert(Local {
                        lane: self.id,
                        allowed: self.allowed.iter().map(|(q, c)| (q.clone(), c.local())).collect(),
                        latency: self.latency.iter().map(Histogram::local).collect(),
                        proxied: self.proxied.local(),
                        hits: crate::metrics::TOKEN_CACHE_HITS.local(),
                        tokens: HashMap::new(),
                        signals: self.state.queues.all().iter().map(|q| (q.clone(), Default::default())).collect(),
                    })
                }
            };
            f(local)
        })
    }

    /// The visitor admitted by `token` to `queue` and the token's `iat`, if
    /// the gate has already verified and cached it: from this worker's copy,
    /// else from the shared cache (then copied here).
    pub(super) fn cached_visitor(&self, token: &str, queue: &str, now_ms: i64) -> Option<(String, i64)> {
        let gate = &self.state.gate;
        let revocations = gate.revocations();
        self.local(|l| {
            if let Some(a) = l.tokens.get_mut(token) {
                if a.until_ms <= now_ms || &*a.queue != queue {
                    // Expired, or for another queue: the full gate decides.
                    return None;
                }
                if a.revocations != revocations {
                    if gate.is_revoked(queue, &a.visitor, a.iat) {
                        return None;
                    }
                    a.revocations = revocations;
                }
                l.hits.inc();
                return Some((a.visitor.to_string(), a.iat));
            }
            let (visitor, until_ms, iat) = gate.check_cached(token, queue, now_ms)?;
            l.hits.inc();
            if l.tokens.len() >= LOCAL_TOKENS {
                l.tokens.retain(|_, a| a.until_ms > now_ms);
                if l.tokens.len() >= LOCAL_TOKENS {
                    l.tokens.clear();
                }
            }
            let copy = Admitted { queue: queue.into(), visitor: visitor.as_str().into(), iat, until_ms, revocations };
            l.tokens.insert(token.into(), copy);
            Some((visitor, iat))
        })
    }

    pub(super) fn count_proxied(&self, queue: Option<&str>) {
        self.local(|l| {
            l.proxied.inc();
            let Some(queue) = queue else { return };
            match l.allowed.iter().find(|(q, _)| q == queue) {
                Some(c) => c.1.inc(),
                // A queue created after this thread's tallies were made.
                None => {
                    let c = METRICS.gate.with_label_values(&[queue, "allowed"]).local();
                    c.inc();
                    l.allowed.push((queue.to_owned(), c));
                }
            }
        });
    }

    /// An admitted request of `queue` goes upstream (`done` = None), or got
    /// its answer's head (`Some(failed)`) after `started` (`signals.rs`).
    pub(super) fn signal(&self, queue: Option<&str>, started: Instant, done: Option<bool>) {
        let Some(queue) = queue else { return };
        self.local(|l| {
            if !l.signals.iter().any(|(q, _)| q.id() == queue) {
                // A queue created after this thread's tallies were made.
                let Some(q) = self.state.queues.by_id(queue) else { return };
                l.signals.push((q, Default::default()));
            }
            if let Some((_, tally)) = l.signals.iter_mut().find(|(q, _)| q.id() == queue) {
                match done {
                    None => tally.start(),
                    Some(failed) => tally.finish(started.elapsed(), failed),
                }
            }
        });
    }

    pub(super) fn observe_latency(&self, status: u16, started: Instant) {
        let class = usize::from(status / 100).min(CLASSES.len() - 1);
        let seconds = started.elapsed().as_secs_f64();
        self.local(|l| {
            if let Some(h) = l.latency.get(class) {
                h.observe(seconds);
            }
        });
    }
}
