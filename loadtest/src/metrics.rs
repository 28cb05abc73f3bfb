//! Latency histograms and counters, per step of the visitor flow.
//!
//! Every latency is measured from the step's *intended* start: the arrival
//! time from the schedule for the first request, and the moment the previous
//! step finished for the others. Time a visitor spent waiting for the harness
//! (a late timer, a busy runtime, the socket budget) is therefore part of the
//! number, which is the open-model correction for coordinated omission.
//!
//! Histograms are HdrHistograms in microseconds (1 µs to 1 h, 3 significant
//! digits) behind a `parking_lot` mutex per step: recording is a few
//! nanoseconds under the lock and nothing is awaited while holding it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

/// A step of the visitor flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The protected URL without a token (expects 401).
    Gate,
    /// `POST /wr/{q}/join` (each request: a 428 or 429 answer, then the one that joins).
    Join,
    /// Solving a proof-of-work challenge (CPU time on the harness; not a request).
    Challenge,
    /// WebSocket connect → first message.
    WsFirst,
    /// One `GET /wr/{q}/status` poll.
    Poll,
    /// Join answered → READY received (the time in line; not a request).
    AdmissionWait,
    /// `GET /api/events/{id}/seats`.
    SeatMap,
    /// `POST /api/events/{id}/holds`.
    Hold,
    /// `POST /api/holds/{id}/confirm`.
    Confirm,
    /// `POST /api/coupons/{id}/claims`.
    Claim,
}

impl Step {
    /// Every step, in flow order.
    pub const ALL: [Step; 10] = [
        Step::Gate,
        Step::Join,
        Step::Challenge,
        Step::WsFirst,
        Step::Poll,
        Step::AdmissionWait,
        Step::SeatMap,
        Step::Hold,
        Step::Confirm,
        Step::Claim,
    ];

    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Step::Gate => "gate",
            Step::Join => "join",
            Step::Challenge => "challenge",
            Step::WsFirst => "ws_first_message",
            Step::Poll => "poll",
            Step::AdmissionWait => "admission_wait",
            Step::SeatMap => "seat_map",
            Step::Hold => "hold",
            Step::Confirm => "confirm",
            Step::Claim => "claim",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Whether the step is one HTTP request (counted in the live p99).
    fn is_request(self) -> bool {
        !matches!(self, Step::AdmissionWait | Step::WsFirst | Step::Challenge)
    }

    /// Whether the step is a request an admitted visitor sends to the booking
    /// core (through the proxy, with its entry token).
    pub fn is_booking(self) -> bool {
        matches!(self, Step::SeatMap | Step::Hold | Step::Confirm | Step::Claim)
    }
}

/// A fresh histogram in microseconds, 1 µs to 1 h.
fn histogram() -> Histogram<u64> {
    // Bounds are constants that satisfy HdrHistogram's preconditions.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| unreachable!("valid histogram bounds"))
}

#[derive(Debug)]
struct StepData {
    latency: Histogram<u64>,
    /// Answers that are part of a normal sale (201, 409 taken, 410 sold out…).
    outcomes: BTreeMap<String, u64>,
    /// Failures: transport errors, timeouts, 5xx, unexpected statuses, bad bodies.
    errors: BTreeMap<String, u64>,
}

/// Live counters for the progress line (relaxed atomics: they are only read for display).
#[derive(Debug, Default)]
pub struct Live {
    /// Visitors started.
    pub arrivals: AtomicU64,
    /// Visitors in line right now.
    pub waiting: AtomicU64,
    /// Visitors admitted so far.
    pub admitted: AtomicU64,
    /// Visitors whose flow ended (any way).
    pub finished: AtomicU64,
    /// Errors of any step.
    pub errors: AtomicU64,
    /// 5xx answers.
    pub server_errors: AtomicU64,
    /// WebSockets open right now.
    pub sockets: AtomicU64,
}

impl Live {
    /// Add one to `counter`.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Take one from `counter`.
    pub fn dec(counter: &AtomicU64) {
        counter.fetch_sub(1, Ordering::Relaxed);
    }

    /// Read `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// All measurements of a run; shared by every visitor task.
#[derive(Debug)]
pub struct Metrics {
    steps: Vec<Mutex<StepData>>,
    /// Request latencies since the last progress line (the "current p99").
    recent: Mutex<Histogram<u64>>,
    /// Live counters.
    pub live: Live,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            steps: Step::ALL
                .iter()
                .map(|_| {
                    Mutex::new(StepData { latency: histogram(), outcomes: BTreeMap::new(), errors: BTreeMap::new() })
                })
                .collect(),
            recent: Mutex::new(histogram()),
            live: Live::default(),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

impl Metrics {
    /// A completed step: its latency and the outcome (usually the status code).
    pub fn record(&self, step: Step, latency: Duration, outcome: &str) {
        let us = micros(latency);
        {
            let mut s = self.steps[step.index()].lock();
            s.latency.saturating_record(us);
            *s.outcomes.entry(outcome.to_owned()).or_default() += 1;
        }
        if step.is_request() {
            self.recent.lock().saturating_record(us);
        }
    }

    /// An outcome without a latency (e.g. no seat left to try).
    pub fn count(&self, step: Step, outcome: &str) {
        *self.steps[step.index()].lock().outcomes.entry(outcome.to_owned()).or_default() += 1;
    }

    /// A failed step; `latency` when an answer arrived (a 5xx, an unexpected status).
    pub fn error(&self, step: Step, kind: &str, latency: Option<Duration>) {
        {
            let mut s = self.steps[step.index()].lock();
            if let Some(l) = latency {
                s.latency.saturating_record(micros(l));
            }
            *s.errors.entry(kind.to_owned()).or_default() += 1;
        }
        Live::inc(&self.live.errors);
        if kind.starts_with("5xx") {
            Live::inc(&self.live.server_errors);
        }
    }

    /// p99 of requests since the last call, in ms, and reset.
    pub fn take_recent_p99_ms(&self) -> Option<f64> {
        let mut h = self.recent.lock();
        let p99 = (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1000.0);
        h.reset();
        p99
    }

    /// The booking steps' requests taken together (what admitted visitors
    /// asked of the booking core): one histogram merged from the steps' own,
    /// and their errors sorted by kind.
    pub fn booking_requests(&self) -> BookingRequests {
        let mut all = histogram();
        let mut b = BookingRequests::default();
        for step in Step::ALL.into_iter().filter(|s| s.is_booking()) {
            let s = self.steps[step.index()].lock();
            // Same bounds on both sides, so the merge cannot fail; were it
            // to, the counts below still stand and only percentiles shrink.
            let _ = all.add(&s.latency);
            for (kind, n) in &s.errors {
                if kind.starts_with("5xx") {
                    b.server_errors += n;
                } else if kind.starts_with("transport:") {
                    b.transport_errors += n;
                } else {
                    b.other_errors += n;
                }
            }
        }
        // Every answer (expected or not) recorded a latency; transport errors
        // are the requests that got none.
        b.answered = all.len();
        b.requests = b.answered + b.transport_errors;
        b.completed = b.answered.saturating_sub(b.server_errors + b.other_errors);
        if !all.is_empty() {
            let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
            (b.p50_ms, b.p90_ms, b.p99_ms, b.max_ms) = (ms(0.5), ms(0.9), ms(0.99), all.max() as f64 / 1000.0);
        }
        b
    }

    /// Summaries of every step that saw anything.
    pub fn snapshot(&self) -> Vec<StepStats> {
        Step::ALL
            .iter()
            .filter_map(|&step| {
                let s = self.steps[step.index()].lock();
                let count = s.outcomes.values().sum::<u64>();
                let errors = s.errors.values().sum::<u64>();
                if count + errors == 0 {
                    return None;
                }
                let ms = |q: f64| s.latency.value_at_quantile(q) as f64 / 1000.0;
                let has = !s.latency.is_empty();
                Some(StepStats {
                    step: step.name(),
                    count,
                    errors,
                    outcomes: s.outcomes.clone(),
                    error_kinds: s.errors.clone(),
                    p50_ms: if has { ms(0.5) } else { 0.0 },
                    p90_ms: if has { ms(0.9) } else { 0.0 },
                    p99_ms: if has { ms(0.99) } else { 0.0 },
                    p999_ms: if has { ms(0.999) } else { 0.0 },
                    max_ms: if has { s.latency.max() as f64 / 1000.0 } else { 0.0 },
                    mean_ms: if has { s.latency.mean() / 1000.0 } else { 0.0 },
                })
            })
            .collect()
    }
}

/// The requests admitted visitors sent to the booking core (seat map,
/// holds, claims, confirms), all together; latencies from the intended start
/// like every step's.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BookingRequests {
    /// Requests sent.
    pub requests: u64,
    /// Requests answered (any status).
    pub answered: u64,
    /// Answered with an expected status (201, 409 taken, 410 sold out…).
    pub completed: u64,
    /// Answered 5xx.
    pub server_errors: u64,
    /// No answer: timeout, refused or broken connection.
    pub transport_errors: u64,
    /// Answered with a status the flow does not expect (not 5xx).
    pub other_errors: u64,
    /// Median latency of the answered requests (ms).
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

/// One step's summary in the report.
#[derive(Debug, Clone, Serialize)]
pub struct StepStats {
    /// Step name.
    pub step: &'static str,
    /// Completed with an expected outcome.
    pub count: u64,
    /// Failed.
    pub errors: u64,
    /// Expected outcomes by kind (status code or state).
    pub outcomes: BTreeMap<String, u64>,
    /// Errors by kind.
    pub error_kinds: BTreeMap<String, u64>,
    /// Median latency (ms, from the intended start).
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_and_errors_are_counted_apart_and_percentiles_come_from_the_histogram() {
        let m = Metrics::default();
        for i in 1..=100u64 {
            m.record(Step::Hold, Duration::from_millis(i), "201");
        }
        m.record(Step::Hold, Duration::from_millis(5), "409");
        m.error(Step::Hold, "5xx:502", Some(Duration::from_millis(1)));
        m.error(Step::Claim, "transport:timeout", None);
        let snap = m.snapshot();
        let hold = snap.iter().find(|s| s.step == "hold").unwrap_or_else(|| panic!("no hold step"));
        assert_eq!(hold.count, 101);
        assert_eq!(hold.errors, 1);
        assert_eq!(hold.outcomes.get("409"), Some(&1));
        assert!((48.0..=51.0).contains(&hold.p50_ms), "{}", hold.p50_ms);
        assert!((hold.max_ms - 100.0).abs() < 0.5, "{}", hold.max_ms);
        let claim = snap.iter().find(|s| s.step == "claim").unwrap_or_else(|| panic!("no claim step"));
        assert_eq!((claim.count, claim.errors, claim.p99_ms), (0, 1, 0.0));
        assert_eq!(Live::get(&m.live.server_errors), 1);
        assert!(m.take_recent_p99_ms().is_some());
        assert!(m.take_recent_p99_ms().is_none(), "reset after reading");
    }

    #[test]
    fn booking_requests_merge_the_booking_steps_and_sort_their_errors() {
        let m = Metrics::default();
        for i in 1..=98u64 {
            m.record(Step::Claim, Duration::from_millis(i), "201");
        }
        m.record(Step::SeatMap, Duration::from_millis(900), "200");
        m.record(Step::Confirm, Duration::from_millis(1000), "200");
        // Not booking requests: the time in line and a join.
        m.record(Step::AdmissionWait, Duration::from_secs(60), "READY");
        m.record(Step::Join, Duration::from_secs(50), "200");
        // Not a request either: no seat left to try.
        m.count(Step::Hold, "no_seat_available");
        m.error(Step::Hold, "5xx:503", Some(Duration::from_millis(5000)));
        m.error(Step::Hold, "status:400", Some(Duration::from_millis(2)));
        m.error(Step::Claim, "transport:timeout", None);
        m.error(Step::Join, "5xx:502", Some(Duration::from_millis(1)));
        let b = m.booking_requests();
        assert_eq!((b.requests, b.answered, b.completed), (103, 102, 100), "{b:?}");
        assert_eq!((b.server_errors, b.transport_errors, b.other_errors), (1, 1, 1), "{b:?}");
        assert!((49.0..=52.0).contains(&b.p50_ms), "{b:?}");
        assert!((990.0..=1010.0).contains(&b.p99_ms), "{b:?}");
        assert!((4990.0..=5010.0).contains(&b.max_ms), "the 503's latency counts: {b:?}");
        assert_eq!(Metrics::default().booking_requests(), BookingRequests::default());
    }
}
