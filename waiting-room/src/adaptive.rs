//! Adaptive admission: the next tick's N from what the upstream is doing,
//! instead of a guess made before the sale.
//!
//! The controller is AIMD, the rule TCP uses for the same problem (send as
//! fast as the path allows, find out by the path's own signals):
//!
//! - **Overload** — the upstream's p99 over `target_p99`, or its error share
//!   over `target_error_rate` — cuts N multiplicatively: × 0.7, or × 0.5 when
//!   a signal is more than twice its target. Cutting by a fraction of N
//!   empties an overloaded upstream's queue in a few ticks whatever N was.
//! - **Headroom** — p99 under 80% of its target, errors under target, N
//!   actually used (the line had at least N waiting) — grows N: doubling
//!   until the first overload ever seen ("slow start", so a sale that opens
//!   at `min_per_tick` reaches a large capacity in log2 ticks), then adding
//!   a tenth of N (at least 1) per tick.
//! - Anything in between, or too few requests to tell (fewer than
//!   [`MIN_SAMPLES`] in the window), holds N.
//!
//! Why it is stable: each tick, N moves toward the capacity C at which the
//! upstream's p99 crosses its target. Below C it grows by at most 10% (after
//! slow start), above C it shrinks by at least 30%, so the multiplicative
//! decrease outweighs the additive increase and N settles into a sawtooth
//! between ~0.7·C and C: throughput at least ~85% of C on average, while the
//! overshoot above C lasts at most one tick (the p99 of that tick's requests
//! shows it). The dead band between 80% and 100% of the target keeps N still
//! once it is near C. N never leaves [`Bounds`]' range, and an operator's
//! pin overrides the controller until unpinned.
//!
//! No-shows (admitted visitors who never reach the upstream) load nothing,
//! so they leave headroom and N grows to replace them.

/// Fewer requests than this in a window says nothing about latency.
pub const MIN_SAMPLES: u64 = 20;

/// What the proxies measured since the last decision, merged across
/// instances.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Signals {
    /// Requests to the upstream that finished in the window.
    pub samples: u64,
    /// Their 99th-percentile latency (ms).
    pub p99_ms: f64,
    /// Share of them that failed (5xx, timeouts, refused connections), 0..1.
    pub error_rate: f64,
    /// Visitors waiting in line now.
    pub waiting: u64,
    /// Visitors the last tick released.
    pub released: u64,
}

/// The operator's bounds and targets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// N never goes below this.
    pub min_per_tick: u64,
    /// N never goes above this.
    pub max_per_tick: u64,
    /// Keep the upstream's p99 under this (ms).
    pub target_p99_ms: f64,
    /// Keep the upstream's error share under this, 0..1.
    pub target_error_rate: f64,
}

/// Why N is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Overloaded: cut.
    Overload,
    /// Headroom and demand: grown.
    Headroom,
    /// Nothing to act on (in the dead band, no demand, too few samples).
    Hold,
    /// The operator pinned N.
    Pinned,
}

impl Reason {
    /// Label for metrics and the admin API.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Overload => "overload",
            Reason::Headroom => "headroom",
            Reason::Hold => "hold",
            Reason::Pinned => "pinned",
        }
    }
}

/// One decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Visitors to release next tick.
    pub n: u64,
    /// Why.
    pub reason: Reason,
}

/// The controller's state, carried from tick to tick (in the store, so
/// every instance continues from the same one).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct State {
    /// Current N, unrounded.
    pub n: f64,
    /// An overload has been seen: slow start is over.
    pub overloaded_once: bool,
}

impl State {
    /// The state a queue starts in: N at its minimum, slow start ahead.
    pub fn start(b: &Bounds) -> Self {
        State { n: b.min_per_tick.max(1) as f64, overloaded_once: false }
    }

    /// Decide the next N from `s`; `pinned` overrides.
    pub fn decide(&mut self, s: &Signals, b: &Bounds, pinned: Option<u64>) -> Decision {
        let (lo, hi) = (b.min_per_tick.max(1) as f64, b.max_per_tick.max(b.min_per_tick.max(1)) as f64);
        if let Some(n) = pinned {
            self.n = (n as f64).clamp(lo, hi);
            return Decision { n: self.n as u64, reason: Reason::Pinned };
        }
        let p99_ratio = if s.samples >= MIN_SAMPLES { s.p99_ms / b.target_p99_ms.max(1.0) } else { 0.0 };
        let error_ratio = s.error_rate / b.target_error_rate.max(1e-6);
        let reason = if p99_ratio > 1.0 || (s.samples > 0 && error_ratio > 1.0) {
            let beta = if p99_ratio > 2.0 || error_ratio > 2.0 { 0.5 } else { 0.7 };
            self.n *= beta;
            self.overloaded_once = true;
            Reason::Overload
        } else if s.samples >= MIN_SAMPLES
            && p99_ratio < 0.8
            && s.waiting > 0
            && s.released as f64 >= (self.n.floor() * 0.9).max(1.0)
        {
            self.n = if self.overloaded_once { self.n + (self.n / 10.0).max(1.0) } else { self.n * 2.0 };
            Reason::Headroom
        } else {
            Reason::Hold
        };
        self.n = self.n.clamp(lo, hi);
        Decision { n: self.n.floor() as u64, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds =
        Bounds { min_per_tick: 10, max_per_tick: 5000, target_p99_ms: 300.0, target_error_rate: 0.01 };

    /// A simulated upstream of `capacity` admissions per tick: latency grows
    /// slowly under capacity and steeply over it (a queue building up),
    /// errors appear beyond 1.5x. `show` is the share of admitted visitors
    /// who actually arrive.
    fn upstream(n: u64, capacity: f64, show: f64) -> Signals {
        let load = n as f64 * show / capacity;
        let p99_ms = if load <= 1.0 { 50.0 + 150.0 * load } else { 200.0 + 400.0 * (load - 1.0) * 10.0 };
        let error_rate = if load > 1.5 { 0.05 } else { 0.0 };
        Signals { samples: (n as f64 * show * 3.0) as u64, p99_ms, error_rate, waiting: 100_000, released: n }
    }

    /// Run `ticks` decisions against the simulated upstream; the Ns chosen.
    fn run(capacity: f64, show: f64, ticks: usize) -> Vec<Decision> {
        let mut st = State::start(&BOUNDS);
        let mut n = BOUNDS.min_per_tick;
        (0..ticks)
            .map(|_| {
                let d = st.decide(&upstream(n, capacity, show), &BOUNDS, None);
                n = d.n;
                d
            })
            .collect()
    }

    #[test]
    fn slow_start_then_a_sawtooth_under_the_capacity() {
        let trace = run(1000.0, 1.0, 200);
        // Up from 10 in a handful of ticks.
        let first_cut = trace.iter().position(|d| d.reason == Reason::Overload).unwrap();
        assert!(first_cut <= 10, "{first_cut}");
        // The capacity that matters: the largest N the upstream serves
        // within the p99 target.
        let capacity = (1..5000u64).take_while(|n| upstream(*n, 1000.0, 1.0).p99_ms <= BOUNDS.target_p99_ms).count();
        // In the steady part: never over the target two ticks in a row, and
        // on average at least 80% of that capacity admitted.
        let steady = &trace[50..];
        let over = |d: &Decision| upstream(d.n, 1000.0, 1.0).p99_ms > BOUNDS.target_p99_ms;
        assert_eq!(steady.windows(2).filter(|w| over(&w[0]) && over(&w[1])).count(), 0, "{steady:?}");
        let mean = steady.iter().map(|d| d.n as f64).sum::<f64>() / steady.len() as f64;
        assert!(mean >= 0.8 * capacity as f64 && mean <= capacity as f64, "{mean} of {capacity}");
    }

    #[test]
    fn an_overloaded_upstream_is_relieved_within_a_few_ticks() {
        let mut st = State { n: 3000.0, overloaded_once: true };
        let mut n = 3000;
        let mut ticks = 0;
        while upstream(n, 1000.0, 1.0).p99_ms > BOUNDS.target_p99_ms {
            n = st.decide(&upstream(n, 1000.0, 1.0), &BOUNDS, None).n;
            ticks += 1;
            assert!(ticks < 10, "still overloaded at {n}");
        }
        assert!(ticks <= 3, "{ticks}");
    }

    #[test]
    fn it_recovers_when_the_capacity_comes_back() {
        let mut st = State::start(&BOUNDS);
        let mut n = BOUNDS.min_per_tick;
        for tick in 0..300 {
            // The upstream loses 80% of its capacity for a while.
            let capacity = if (100..150).contains(&tick) { 200.0 } else { 1000.0 };
            n = st.decide(&upstream(n, capacity, 1.0), &BOUNDS, None).n;
            if tick == 149 {
                assert!(n <= 260, "{n} during the dip");
            }
        }
        assert!(n >= 600, "{n} after recovery");
    }

    #[test]
    fn no_shows_are_replaced() {
        // 30% never arrive: the upstream sees 70% of N, so N settles above
        // the capacity and the upstream is as busy as without no-shows.
        let with = run(1000.0, 0.7, 300);
        let without = run(1000.0, 1.0, 300);
        let arrived = |t: &[Decision], show: f64| t[100..].iter().map(|d| d.n as f64 * show).sum::<f64>();
        assert!(
            arrived(&with, 0.7) >= 0.9 * arrived(&without, 1.0),
            "{} {}",
            arrived(&with, 0.7),
            arrived(&without, 1.0)
        );
    }

    #[test]
    fn bounds_pins_and_idle_queues_are_respected() {
        let mut st = State::start(&BOUNDS);
        let idle = Signals { samples: 1000, p99_ms: 10.0, error_rate: 0.0, waiting: 0, released: 0 };
        assert_eq!(st.decide(&idle, &BOUNDS, None), Decision { n: 10, reason: Reason::Hold });
        let pinned = st.decide(&idle, &BOUNDS, Some(1_000_000));
        assert_eq!(pinned, Decision { n: 5000, reason: Reason::Pinned });
        let mut st = State { n: 12.0, overloaded_once: true };
        let burning = Signals { samples: 1000, p99_ms: 5000.0, error_rate: 0.5, waiting: 10, released: 12 };
        assert_eq!(st.decide(&burning, &BOUNDS, None), Decision { n: 10, reason: Reason::Overload });
        // Too few requests to judge latency: hold.
        let quiet = Signals { samples: 3, p99_ms: 9000.0, error_rate: 0.0, waiting: 10, released: 12 };
        assert_eq!(st.decide(&quiet, &BOUNDS, None).reason, Reason::Hold);
    }
}
