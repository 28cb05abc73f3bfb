//! Adaptive admission: the next tick's N from what the upstream is doing,
//! instead of a guess made before the sale.
//!
//! The controller is AIMD, the rule TCP uses for the same problem (send as
//! fast as the path allows, find out by the path's own signals), with TCP's
//! care for the signal's delay: a visitor admitted at tick k loads the
//! upstream over the following ticks (arriving, then going through the
//! sale), so a window shows the effect of a change of N only some ticks
//! later — the controller's "round trip".
//!
//! - **Overload** — the upstream's p99 over `target_p99`, or its error share
//!   over `target_error_rate`, or the requests in flight amounting to more
//!   than `target_p99` of the upstream's work at the window's rate (Little's
//!   law: a queue building up shows there at once, in the latency of
//!   finished requests only when they finish) — cuts N multiplicatively:
//!   × 0.8, or × 0.5 when a signal is more than twice its target. Cutting by
//!   a fraction of N empties an overloaded upstream's queue in a few ticks
//!   whatever N was; 0.8 rather than TCP Reno's 0.5 or CUBIC's 0.7 because
//!   an overload here is seen within about a round trip of its cause and
//!   is cut again if it lasts, so the cut only has to undo the last
//!   round trip's growth, and every point cut below the capacity is
//!   throughput lost until the probe climbs back.
//!   Once per round trip (about a second), as TCP halves once per RTT:
//!   for a second after a cut N is held (`draining`) unless the overload
//!   score (the largest of p99/target, errors/target, queue/target) doubled
//!   since the cut: the visitors admitted before the cut are still loading
//!   the upstream, and cutting again for them would cut for the same
//!   overload twice. An overload that outlasts the round trip is cut again.
//! - **Headroom** — p99 under half its target, errors under target, N
//!   actually used (the line had at least N waiting) — grows N: doubling
//!   per second ("slow start", so a sale that opens at `min_per_tick`
//!   reaches a large capacity in a few seconds) until the first overload
//!   or the first window with enough requests to judge by
//!   ([`MIN_SAMPLES`]) in the dead band (p99 or queue at half the target or
//!   more: near the capacity); then by 10% per second (at least one visitor
//!   per second, a tick's share of it each tick), and by 3% per second once
//!   N is within 10% of the N of the last overload (and until 50% past
//!   it): the capacity found there is probed slowly instead of being run
//!   into every few seconds. Slow start does not end on a window of a few
//!   requests whose slowest one is slow: at a small N that is the
//!   upstream's latency at rest, not its load (a booking core whose p99 is
//!   66–114 ms at any small N ended slow start at a third of its capacity
//!   and took 10 s of additive steps to reach it). A doubling waits until
//!   the load has followed the previous one (requests per window up by
//!   half of the last step; at most two round trips, as that mark is one
//!   window's count), so slow start overshoots by the delay's worth of one
//!   step, not of one step per tick of delay; the step then makes up for
//!   the ticks it waited, up to half a second's doubling (×√2: the most
//!   one step overshoots by), so a quiet window delays slow start without
//!   slowing it much.
//! - Anything in between holds N. Fewer than [`MIN_SAMPLES`] requests in
//!   the window never count as an overload (one slow request is not one),
//!   but may show headroom when every one of them was fast and none failed:
//!   a small N whose visitors send few requests per tick must still grow.
//!
//! Why it is stable: each round trip, N moves toward the capacity C at which
//! the upstream's p99 crosses its target. Below C it grows by at most 10% per
//! second, slowing to 3% near the last overload; above C it shrinks by at
//! least 20% per round trip, so the multiplicative decrease outweighs the
//! additive increase (which adds at most ~10% in the round trip it takes an
//! overload to show) and N settles into a sawtooth under C whose overshoots
//! are rare (the slow probe) and last about one round trip (the p99 and the
//! queue of the requests it adds show it). The dead band between 50% and
//! 100% of the target keeps N still once it is near C. N never leaves
//! [`Bounds`]' range, and an operator's pin overrides the controller until
//! unpinned.
//!
//! No-shows (admitted visitors who never reach the upstream) load nothing,
//! so they leave headroom and N grows to replace them.

/// Growth per second past slow start, as a share of N and at least this
/// many visitors per tick-second; then near the N of the last overload.
/// Why 10%: what a tick shows lags the N that caused it by about two
/// seconds (visitors arrive, then go through the sale), so N has grown by
/// two seconds' worth when an overload shows — 20% past the capacity at
/// 10%/s, which a cut of 30% takes back under; at 25%/s the overshoot was
/// half the capacity again (measured: BENCHMARKS.md "Adaptive admission").
const GROW: f64 = 0.10;
const GROW_LEAST: f64 = 1.0;
const PROBE: f64 = 0.03;
const PROBE_LEAST: f64 = 0.1;
/// Headroom: the p99 (and the queue in flight) under this share of the
/// target. Why half: a window holds a few dozen requests, so its p99 is
/// nearly its slowest one and jumps by a bucket or two (×1.2 each) between
/// windows at the same N; under half the target it still has that much room
/// before the target, so the growth stops before the first window crosses
/// it rather than after (measured: BENCHMARKS.md "Adaptive admission").
/// Between half the target and the target N holds (the dead band).
const HEADROOM: f64 = 0.5;
/// The probe starts at this share of the N of the last overload.
const NEAR_CEILING: f64 = 0.9;
/// The probe lasts until N is this far past the last overload's N.
const CEILING_PASSED: f64 = 1.5;

/// Fewer requests than this in a window says nothing about latency.
pub const MIN_SAMPLES: u64 = 20;

/// Latency histogram buckets: bucket `i` holds latencies up to
/// `BASE^i` ms (bucket 0: up to 1 ms), the last one everything above. A
/// fixed log scale so that instances' histograms add up bucket by bucket in
/// the store, with ~20% resolution, ample for a dead band of 20%.
pub const BUCKETS: usize = 64;
const BASE: f64 = 1.2;

/// The bucket of a latency of `ms` milliseconds.
pub fn bucket(ms: f64) -> usize {
    if ms.is_nan() || ms <= 1.0 {
        return 0;
    }
    ((ms.ln() / BASE.ln()).ceil() as usize).min(BUCKETS - 1)
}

/// The upper bound of bucket `i` (ms).
pub fn bucket_ms(i: usize) -> f64 {
    BASE.powi(i32::try_from(i.min(BUCKETS - 1)).unwrap_or(0))
}

/// The `q`-quantile (0..1) of a histogram, as its bucket's upper bound; 0
/// for an empty one.
pub fn quantile(buckets: &[u64], q: f64) -> f64 {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return 0.0;
    }
    // The rank of the quantile, 1-based: the smallest latency with at least
    // q of the samples at or below it.
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, c) in buckets.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return bucket_ms(i);
        }
    }
    bucket_ms(buckets.len().saturating_sub(1))
}

/// What the proxies measured since the last decision, merged across
/// instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Signals {
    /// Requests to the upstream that finished in the window.
    pub samples: u64,
    /// Their median latency (ms), shown, not used.
    #[serde(default)]
    pub p50_ms: f64,
    /// Their 99th-percentile latency (ms).
    pub p99_ms: f64,
    /// Share of them that failed (5xx, timeouts, refused connections), 0..1.
    pub error_rate: f64,
    /// Visitors waiting in line now.
    pub waiting: u64,
    /// Visitors the last tick released.
    pub released: u64,
    /// Requests in flight at the tick, all instances.
    #[serde(default)]
    pub in_flight: u64,
    /// Admitted visitors who arrived in the window.
    #[serde(default)]
    pub arrived: u64,
    /// Admitted visitors found to be no-shows in the window.
    #[serde(default)]
    pub no_shows: u64,
    /// The window's length (ms): the tick.
    #[serde(default)]
    pub window_ms: u64,
}

impl Signals {
    /// How long a request starting now would wait behind those in flight, if
    /// the upstream keeps finishing them at the window's rate (Little's law),
    /// in ms. Requests queueing at an overloaded upstream show here at once,
    /// while the latency of finished ones shows them only once they finish.
    pub fn queue_ms(&self) -> f64 {
        if self.window_ms == 0 {
            return 0.0;
        }
        // Nothing finished in a whole window with requests in flight: the
        // upstream stalled. Counted as if one had finished (the least it can
        // mean), never as an empty queue, so such a window is no headroom.
        self.in_flight as f64 * self.window_ms as f64 / self.samples.max(1) as f64
    }
}

/// What instances measured of one queue's admitted traffic since the
/// previous tick, merged in the store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Window {
    /// Latency histogram of requests to the upstream (see
    /// [`bucket`]): count per bucket.
    pub buckets: Vec<u64>,
    /// Requests that finished (answered or failed).
    pub samples: u64,
    /// Of which failed: 5xx, timeouts, refused connections.
    pub errors: u64,
    /// Requests in flight now, all live instances together.
    pub in_flight: u64,
    /// Admitted visitors whose first request arrived.
    pub arrived: u64,
    /// Admitted visitors found to be no-shows by the tick.
    pub no_shows: u64,
}

impl Signals {
    /// The controller's inputs from a tick's merged window.
    pub fn from_window(w: &Window, waiting: u64, released: u64, window_ms: u64) -> Self {
        Signals {
            samples: w.samples,
            p50_ms: quantile(&w.buckets, 0.5),
            p99_ms: quantile(&w.buckets, 0.99),
            error_rate: if w.samples == 0 { 0.0 } else { w.errors as f64 / w.samples as f64 },
            waiting,
            released,
            in_flight: w.in_flight,
            arrived: w.arrived,
            no_shows: w.no_shows,
            window_ms,
        }
    }
}

/// A decision as the store keeps it, and as the admin API and every
/// instance's metrics show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// The tick whose window was judged; N applies from the next one.
    pub tick: u64,
    /// The N decided.
    pub n: u64,
    /// Why ([`Reason::label`]).
    pub reason: String,
    /// The controller's state after the decision.
    pub state: ControllerState,
    /// The signals it judged.
    pub signals: Signals,
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

impl Bounds {
    /// A queue's bounds and targets.
    pub fn of(a: &crate::config::Admission) -> Self {
        Bounds {
            min_per_tick: a.min_per_tick,
            max_per_tick: a.max_per_tick,
            target_p99_ms: a.target_p99.as_secs_f64() * 1000.0,
            target_error_rate: a.target_error_rate,
        }
    }
}

/// The decision after tick `tick`, which closed the window `signals` came
/// from, continuing from `prev` (the last decision saved). In fixed mode the
/// record only shows the signals and the operator's N; it also carries that
/// N as the controller's state, so switching to adaptive starts from the N
/// the operator trusted (past slow start) instead of from `min_per_tick`.
pub fn next(prev: Option<&Record>, a: &crate::config::Admission, tick: u64, signals: Signals) -> Record {
    let bounds = Bounds::of(a);
    if a.mode == crate::config::AdmissionMode::Fixed {
        let state = ControllerState::settled(a.release_per_tick as f64);
        return Record { tick, n: a.release_per_tick, reason: "fixed".into(), state, signals };
    }
    let mut state = prev.map_or_else(|| ControllerState::start(&bounds), |p| p.state);
    let pinned = (a.pin_per_tick > 0).then_some(a.pin_per_tick);
    let d = state.decide(&signals, &bounds, pinned);
    Record { tick, n: d.n, reason: d.reason.label().into(), state, signals }
}

/// Why N is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Overloaded: cut.
    Overload,
    /// Headroom and demand: grown.
    Headroom,
    /// Nothing to act on (in the dead band, no demand, too few samples, a
    /// slow-start doubling the load has not followed yet).
    Hold,
    /// Overloaded, but cut less than a round trip ago: held, not cut again.
    Draining,
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
            Reason::Draining => "draining",
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
pub struct ControllerState {
    /// Current N, unrounded.
    pub n: f64,
    /// Slow start is over: an overload, or a judged window in the dead
    /// band, was seen. (Named when only an overload ended it; the name is
    /// kept so that decisions saved by older instances still load.)
    pub overloaded_once: bool,
    /// The overload score (max of p99/target and errors/target) of the last
    /// window if it was overloaded, else 0.
    #[serde(default)]
    pub overload_score: f64,
    /// Requests a window must carry before slow start's next step: the
    /// load has followed the last one.
    #[serde(default, alias = "grown_at_samples")]
    pub follow_mark: u64,
    /// Decisions slow start has waited for the load to follow its last doubling.
    #[serde(default)]
    pub slow_waits: u32,
    /// N when the last overload began (0: none since N last grew past it):
    /// growth slows down near it.
    #[serde(default)]
    pub ceiling: f64,
    /// Decisions since the last cut.
    #[serde(default = "long_ago")]
    pub since_cut: u32,
    /// The overload score that cut.
    #[serde(default)]
    pub cut_score: f64,
}

fn long_ago() -> u32 {
    u32::MAX
}

impl ControllerState {
    /// The state a queue starts in: N at its minimum, slow start ahead.
    pub fn start(b: &Bounds) -> Self {
        ControllerState {
            n: b.min_per_tick.max(1) as f64,
            overloaded_once: false,
            overload_score: 0.0,
            follow_mark: 0,
            slow_waits: 0,
            ceiling: 0.0,
            since_cut: long_ago(),
            cut_score: 0.0,
        }
    }

    /// A state at `n`, past slow start (the operator's N, a pin).
    pub fn settled(n: f64) -> Self {
        ControllerState {
            n,
            overloaded_once: true,
            overload_score: 0.0,
            follow_mark: 0,
            slow_waits: 0,
            ceiling: 0.0,
            since_cut: long_ago(),
            cut_score: 0.0,
        }
    }

    /// Decide the next N from `s`; `pinned` overrides.
    pub fn decide(&mut self, s: &Signals, b: &Bounds, pinned: Option<u64>) -> Decision {
        let (lo, hi) = (b.min_per_tick.max(1) as f64, b.max_per_tick.max(b.min_per_tick.max(1)) as f64);
        if let Some(n) = pinned {
            self.n = (n as f64).clamp(lo, hi);
            return Decision { n: self.n as u64, reason: Reason::Pinned };
        }
        // Too few requests to judge an overload by (one slow request is not
        // one), but not too few to see that nothing is slow: a small N whose
        // visitors send few requests per window must still be able to grow.
        let judged = s.samples >= MIN_SAMPLES;
        let p99_ratio = s.p99_ms / b.target_p99_ms.max(1.0);
        let error_ratio = s.error_rate / b.target_error_rate.max(1e-6);
        let queue_ratio = s.queue_ms() / b.target_p99_ms.max(1.0);
        // A window in which nothing finished while requests were in flight
        // (a stalled upstream) is judged by nothing: its queue (in flight ×
        // window, from `queue_ms`) keeps it from being headroom, so N holds,
        // but it is no overload to size a cut by. A stall the load caused
        // shows as an overload in the windows after, when its requests
        // finish slowly; one it did not cause (the bench saw stalls of a
        // second and more) would otherwise cut N to a quarter and cost the
        // climb back.
        let score = if judged { p99_ratio.max(error_ratio).max(queue_ratio) } else { 0.0 };
        let tick_s = if s.window_ms == 0 { 1.0 } else { s.window_ms as f64 / 1000.0 };
        // The controller's round trip: about a second, whatever the tick.
        let round_trip = (1.0 / tick_s).ceil().max(1.0) as u32;
        let reason = if score > 1.0 {
            self.overloaded_once = true;
            let entering = self.overload_score == 0.0;
            self.overload_score = score;
            if self.since_cut < round_trip && score < 2.0 * self.cut_score {
                // Cut less than a round trip ago and not much worse: the
                // visitors admitted before the cut are still loading it.
                self.since_cut += 1;
                Reason::Draining
            } else {
                if entering {
                    self.ceiling = self.n;
                }
                self.cut_score = score;
                self.since_cut = 0;
                self.n *= if score > 2.0 { 0.5 } else { 0.8 };
                Reason::Overload
            }
        } else {
            self.overload_score = 0.0;
            self.since_cut = self.since_cut.saturating_add(1);
            let headroom = (judged || s.error_rate == 0.0)
                && p99_ratio < HEADROOM
                && queue_ratio < HEADROOM
                && s.waiting > 0
                && s.released as f64 >= (self.n.floor() * 0.9).max(1.0);
            if !headroom {
                // A window with enough requests to judge by in the dead
                // band: the upstream is near its capacity, so slow start is
                // over. Only such a window ends it: the p99 of a few
                // requests is their slowest one, at any load.
                if judged && p99_ratio.max(queue_ratio) >= HEADROOM {
                    self.overloaded_once = true;
                }
                Reason::Hold
            } else if self.overloaded_once {
                // Past slow start: additive steps, per second (a tick's
                // share of them), and small ones near the N of the last
                // overload, where the capacity was found.
                let near = self.ceiling > 0.0 && self.n >= NEAR_CEILING * self.ceiling;
                let (share, least) = if near { (PROBE, PROBE_LEAST) } else { (GROW, GROW_LEAST) };
                self.n += (self.n * share).max(least) * tick_s;
                // Well past it without an overload: the capacity has grown
                // (or the overload had another cause); grow fast again.
                if self.n > CEILING_PASSED * self.ceiling {
                    self.ceiling = 0.0;
                }
                Reason::Headroom
            } else if s.samples >= self.follow_mark || self.slow_waits >= 2 * round_trip {
                // Slow start: N doubles per second, but a step waits until
                // the load has followed the previous one (the window's
                // requests up by half of that step: what a tick shows lags
                // the N that caused it), or two round trips at most (the
                // mark came from one window, and one busy window must not
                // stall it). A step then makes up for the ticks it waited,
                // up to half a second's doubling (×√2; one tick's when ticks
                // are longer, which is the rate itself): a window that
                // happens to be quiet delays growth without slowing it much,
                // and one step, what slow start overshoots by before the
                // dead band shows, stays small (a whole second's ×2 took a
                // 4-connection core from 20 to 40 where 34 was its
                // capacity); at least one visitor more.
                let waited_s = (f64::from(self.slow_waits) + 1.0) * tick_s;
                let most_s = tick_s.clamp(0.5, 1.0);
                let step = 2f64.powf(waited_s.min(most_s)).max(1.0 + 1.0 / self.n.max(1.0));
                self.n *= step;
                self.follow_mark = (s.samples as f64 * (1.0 + (step - 1.0) / 2.0)).ceil() as u64;
                self.slow_waits = 0;
                Reason::Headroom
            } else {
                self.slow_waits = self.slow_waits.saturating_add(1);
                Reason::Hold
            }
        };
        self.n = self.n.clamp(lo, hi);
        Decision { n: self.n.floor() as u64, reason }
    }
}

#[cfg(test)]
mod tests;
