//! Wait estimates from the release rate actually measured.
//!
//! Every tick any instance performs is recorded here (locally, or from the
//! tick message on pub/sub). Only ticks that were limited by capacity count
//! toward the rate, i.e. ticks after which visitors were still waiting: a
//! tick that emptied the line says nothing about how fast the line moves. The
//! rate is smoothed (EWMA), so estimates shrink as the line moves and do not
//! jump around; until two ticks have been seen, N / T stands in.

use parking_lot::Mutex;

/// Weight of the newest sample in the moving average.
const ALPHA: f64 = 0.3;

#[derive(Debug, Default, Clone, Copy)]
struct Inner {
    last_tick: u64,
    last_tick_ms: i64,
    /// Admitted per second, smoothed.
    rate: Option<f64>,
}

/// Release-rate tracker of one queue.
#[derive(Debug, Default)]
pub struct Estimator {
    /// A plain mutex: a few arithmetic operations, nothing awaited.
    inner: Mutex<Inner>,
}

impl Estimator {
    /// Record tick `tick` at `now_ms` that released `released` and left
    /// `waiting` in line. Ticks already recorded (the same tick seen locally and
    /// on pub/sub) are ignored.
    pub fn record(&self, tick: u64, now_ms: i64, released: u64, waiting: u64) {
        let mut s = self.inner.lock();
        if tick <= s.last_tick {
            return;
        }
        if s.last_tick_ms > 0 && waiting > 0 {
            let secs = (now_ms - s.last_tick_ms) as f64 / 1000.0;
            if secs > 0.0 {
                let sample = released as f64 / secs;
                s.rate = Some(match s.rate {
                    Some(r) => ALPHA * sample + (1.0 - ALPHA) * r,
                    None => sample,
                });
            }
        }
        s.last_tick = tick;
        s.last_tick_ms = now_ms;
    }

    /// The tick count started again (the store lost the line): take the next
    /// ticks for new. The measured rate stays: admission runs as before.
    pub fn restart(&self) {
        self.inner.lock().last_tick = 0;
    }

    /// Measured admissions per second, if known.
    pub fn rate(&self) -> Option<f64> {
        self.inner.lock().rate
    }

    /// Store time (ms) of the last tick seen.
    pub fn last_tick_ms(&self) -> i64 {
        self.inner.lock().last_tick_ms
    }

    /// Seconds until the visitor at `position` is admitted. `configured` is
    /// N / T, used until a rate has been measured (and whenever the measured
    /// rate is zero, e.g. while paused); `tick_ms` and `now_ms` give the time
    /// to the next tick, which is the earliest anyone can get in.
    pub fn eta_seconds(&self, position: u64, configured: f64, tick_ms: u64, now_ms: i64) -> u64 {
        let s = *self.inner.lock();
        let rate = s.rate.filter(|r| *r > 0.0).unwrap_or(configured).max(1e-6);
        let next_tick = if s.last_tick_ms > 0 {
            ((s.last_tick_ms + tick_ms as i64 - now_ms).max(0) as f64) / 1000.0
        } else {
            tick_ms as f64 / 1000.0
        };
        let by_rate = position as f64 / rate;
        by_rate.max(next_tick).ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_follows_measured_ticks_not_the_configuration() {
        let e = Estimator::default();
        // Configured 10/s, but ticks only release 5 every second.
        e.record(1, 1_000, 5, 100);
        assert_eq!(e.rate(), None);
        for t in 2..20 {
            e.record(t, t as i64 * 1_000, 5, 100);
        }
        let r = e.rate().unwrap();
        assert!((r - 5.0).abs() < 0.01, "{r}");
        assert_eq!(e.eta_seconds(50, 10.0, 1_000, 19_000), 10);
    }

    #[test]
    fn ticks_that_empty_the_line_and_duplicates_are_ignored() {
        let e = Estimator::default();
        e.record(1, 1_000, 10, 50);
        e.record(2, 2_000, 10, 40);
        e.record(2, 2_000, 0, 40); // same tick from pub/sub
        e.record(3, 3_000, 3, 0); // line emptied: not a capacity sample
        assert!((e.rate().unwrap() - 10.0).abs() < 1e-9);
    }

    #[test]
    fn nobody_gets_in_before_the_next_tick() {
        let e = Estimator::default();
        e.record(1, 10_000, 100, 5);
        assert_eq!(e.eta_seconds(1, 100.0, 10_000, 12_000), 8);
    }
}
