//! One reconnect backoff for both services: every loop that waits before
//! trying a lost connection again (the queue store, its pub/sub
//! subscription, the booking core's invalidation channel) takes its pauses
//! from here, so they grow, cap and spread the same way.
//!
//! Exponential from `first`, doubling up to `max`, each pause drawn within
//! ±20 % of the nominal one: instances restarted together (a deploy, a
//! Redis that came back) then do not reconnect in step.

use std::time::Duration;

/// Pauses between attempts; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    nominal: Duration,
}

impl Backoff {
    /// Starting at `first`, never above `max` (nominal; jitter adds ≤ 20 %).
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff { first, max: max.max(first), nominal: first }
    }

    /// The pause before the next attempt; the one after it is twice as long.
    pub fn next_pause(&mut self) -> Duration {
        let nominal = self.nominal;
        self.nominal = (self.nominal * 2).min(self.max);
        nominal.mul_f64(rand::Rng::gen_range(&mut rand::thread_rng(), 0.8..=1.2))
    }

    /// The connection works again: the next loss starts from `first`.
    pub fn reset(&mut self) {
        self.nominal = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(d: Duration, nominal_ms: u64) -> bool {
        let ms = d.as_secs_f64() * 1000.0;
        ms >= nominal_ms as f64 * 0.8 - 1e-6 && ms <= nominal_ms as f64 * 1.2 + 1e-6
    }

    #[test]
    fn pauses_double_up_to_the_cap_within_their_jitter_and_start_over_after_a_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        for nominal in [100, 200, 400, 500, 500] {
            let p = b.next_pause();
            assert!(within(p, nominal), "{p:?} is not within 20 % of {nominal} ms");
        }
        b.reset();
        assert!(within(b.next_pause(), 100));
    }

    #[test]
    fn pauses_spread() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            seen.insert(Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).next_pause());
        }
        assert!(seen.len() > 1, "twenty instances would all wait {seen:?}");
    }

    #[test]
    fn a_cap_below_the_first_pause_is_the_first_pause() {
        let mut b = Backoff::new(Duration::from_millis(300), Duration::from_millis(100));
        assert!(within(b.next_pause(), 300));
        assert!(within(b.next_pause(), 300));
    }
}
