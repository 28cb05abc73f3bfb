//! What this instance measures of each queue's admitted traffic, for the
//! adaptive controller (`adaptive.rs`): the latency of requests to the
//! upstream (to the response head: the upstream's own delay, not the
//! client's download), failed ones (5xx, timeouts, refused or broken
//! connections), requests in flight, and the first request of each admitted
//! visitor (an arrival).
//!
//! Both lanes record here; the fast lane through per-worker tallies
//! ([`Local`]) added to these every 100 ms, so a request writes no memory
//! another worker writes. Each ticker call hands what accumulated to the
//! store as a [`Report`] (see `admission.rs`), where the reports of every
//! instance merge into the window the next tick closes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use shared::visitor::VisitorId;

use crate::adaptive::{BUCKETS, bucket};
use crate::store::Report;

/// Arrivals kept between two reports; beyond this (a report that keeps
/// failing) the newest are dropped: they then count as no-shows, which errs
/// toward admitting more, the side the controller's latency signal guards.
const MAX_ARRIVALS: usize = 100_000;

/// This process's id among the instances reporting to one store (in-flight
/// counts are kept per instance: each report replaces its own).
pub fn instance() -> u64 {
    static ID: std::sync::LazyLock<u64> = std::sync::LazyLock::new(rand::random);
    *ID
}

/// One queue's tallies on this instance since its last report.
pub struct Tally {
    buckets: [AtomicU64; BUCKETS],
    samples: AtomicU64,
    errors: AtomicU64,
    /// Requests started and finished since start: in flight is the difference.
    started: AtomicU64,
    finished: AtomicU64,
    arrivals: Mutex<Vec<(VisitorId, i64)>>,
    /// The in-flight count the store last took from this instance.
    reported_in_flight: AtomicU64,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            samples: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            arrivals: Mutex::new(Vec::new()),
            reported_in_flight: AtomicU64::new(0),
        }
    }
}

impl Tally {
    /// A request to the upstream started.
    pub fn start(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    /// A started request got its answer's head after `latency`, or failed.
    pub fn finish(&self, latency: Duration, failed: bool) {
        self.buckets[bucket(latency.as_secs_f64() * 1000.0)].fetch_add(1, Ordering::Relaxed);
        self.samples.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.finished.fetch_add(1, Ordering::Relaxed);
    }

    /// An admitted visitor's token was seen here for the first time.
    pub fn arrived(&self, visitor: VisitorId, iat: i64) {
        let mut a = self.arrivals.lock();
        if a.len() < MAX_ARRIVALS {
            a.push((visitor, iat));
        }
    }

    /// Requests in flight on this instance.
    pub fn in_flight(&self) -> u64 {
        // Finished is read first: a request finishing between the two reads
        // then shows as still in flight, never as a negative count.
        let finished = self.finished.load(Ordering::Relaxed);
        self.started.load(Ordering::Relaxed).saturating_sub(finished)
    }

    /// Everything since the last call, as a report of `instance`.
    pub fn take(&self, instance: u64) -> Report {
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .filter_map(|(i, b)| Some((i, b.swap(0, Ordering::Relaxed))).filter(|(_, c)| *c > 0))
            .collect();
        Report {
            instance,
            buckets,
            samples: self.samples.swap(0, Ordering::Relaxed),
            errors: self.errors.swap(0, Ordering::Relaxed),
            in_flight: self.in_flight(),
            arrivals: std::mem::take(&mut *self.arrivals.lock()),
        }
    }

    /// Whether `r` tells the store anything: a quiet instance whose last
    /// in-flight count was 0 costs Redis no call per tick.
    pub fn worth_reporting(&self, r: &Report) -> bool {
        !r.is_quiet() || self.reported_in_flight.load(Ordering::Relaxed) != 0
    }

    /// The store took `r`.
    pub fn reported(&self, r: &Report) {
        self.reported_in_flight.store(r.in_flight, Ordering::Relaxed);
    }

    /// A report the store did not take: keep its counts for the next one.
    pub fn put_back(&self, r: Report) {
        for (i, c) in r.buckets {
            if let Some(b) = self.buckets.get(i) {
                b.fetch_add(c, Ordering::Relaxed);
            }
        }
        self.samples.fetch_add(r.samples, Ordering::Relaxed);
        self.errors.fetch_add(r.errors, Ordering::Relaxed);
        let mut a = self.arrivals.lock();
        let room = MAX_ARRIVALS.saturating_sub(a.len());
        a.extend(r.arrivals.into_iter().take(room));
    }
}

/// A worker thread's own tallies of one queue (fast lane), added to the
/// queue's [`Tally`] by [`Local::flush`].
pub struct Local {
    buckets: [u64; BUCKETS],
    samples: u64,
    errors: u64,
    started: u64,
    finished: u64,
}

impl Default for Local {
    fn default() -> Self {
        Local { buckets: [0; BUCKETS], samples: 0, errors: 0, started: 0, finished: 0 }
    }
}

impl Local {
    /// As [`Tally::start`].
    pub fn start(&mut self) {
        self.started += 1;
    }

    /// As [`Tally::finish`].
    pub fn finish(&mut self, latency: Duration, failed: bool) {
        self.buckets[bucket(latency.as_secs_f64() * 1000.0)] += 1;
        self.samples += 1;
        self.errors += u64::from(failed);
        self.finished += 1;
    }

    /// Add everything to `to` and start again from zero.
    pub fn flush(&mut self, to: &Tally) {
        if self.started == 0 && self.finished == 0 {
            return;
        }
        for (i, c) in self.buckets.iter_mut().enumerate() {
            if *c > 0 {
                to.buckets[i].fetch_add(std::mem::take(c), Ordering::Relaxed);
            }
        }
        // Finished before started, for the same reason as in `in_flight`'s reads.
        to.samples.fetch_add(std::mem::take(&mut self.samples), Ordering::Relaxed);
        to.errors.fetch_add(std::mem::take(&mut self.errors), Ordering::Relaxed);
        to.started.fetch_add(std::mem::take(&mut self.started), Ordering::Relaxed);
        to.finished.fetch_add(std::mem::take(&mut self.finished), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_takes_everything_once_and_a_failed_one_is_kept() {
        let t = Tally::default();
        t.start();
        t.start();
        t.finish(Duration::from_millis(10), false);
        let v = VisitorId::from_bytes([1; 16]);
        t.arrived(v, 7);
        let r = t.take(3);
        assert_eq!((r.instance, r.samples, r.errors, r.in_flight), (3, 1, 0, 1));
        assert_eq!(r.buckets, vec![(bucket(10.0), 1)]);
        assert_eq!(r.arrivals, vec![(v, 7)]);
        assert!(t.take(3).buckets.is_empty());
        t.put_back(r.clone());
        let again = t.take(3);
        assert_eq!((again.samples, again.buckets, again.arrivals), (1, r.buckets, r.arrivals));
    }

    #[test]
    fn a_worker_tally_adds_up_in_the_shared_one() {
        let t = Tally::default();
        let mut l = Local::default();
        l.start();
        l.finish(Duration::from_millis(500), true);
        l.start();
        l.flush(&t);
        l.flush(&t);
        let r = t.take(1);
        assert_eq!((r.samples, r.errors, r.in_flight), (1, 1, 1));
        assert_eq!(r.buckets, vec![(bucket(500.0), 1)]);
    }

    #[test]
    fn a_quiet_instance_reports_only_to_clear_its_last_in_flight_count() {
        let t = Tally::default();
        assert!(!t.worth_reporting(&t.take(1)), "nothing to tell");
        t.start();
        let busy = t.take(1);
        assert!(t.worth_reporting(&busy));
        t.reported(&busy);
        t.finish(Duration::from_millis(5), false);
        let done = t.take(1);
        assert!(t.worth_reporting(&done), "its sample, and in flight back to 0");
        t.reported(&done);
        assert!(!t.worth_reporting(&t.take(1)));
    }
}
