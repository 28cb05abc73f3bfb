//! The end-of-run report: printed as text, written as JSON with `--out`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::audit::Audit;
use crate::cli::Args;
use crate::metrics::{BookingRequests, StepStats};
use crate::record::{Fate, Mode, VisitorRecord};

/// How well the harness kept to the schedule.
#[derive(Debug, Clone, Serialize)]
pub struct Arrivals {
    /// Visitors scheduled.
    pub planned: usize,
    /// Expected arrivals per second over the run (the profile's arrivals / duration; a drop's
    /// later arrivals are not counted in the three rate figures).
    pub planned_per_second: f64,
    /// Visitors started per second of the arrival phase, as it really went.
    pub achieved_per_second: f64,
    /// Arrival phase length (s): until the profile's last arrival started.
    pub arrival_seconds: f64,
    /// p99 of how late visitors were started against their intended time (ms).
    pub start_lag_p99_ms: f64,
    /// Latest start (ms).
    pub start_lag_max_ms: f64,
}

/// How visitors' flows ended, and how they waited.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Visitors {
    /// Admitted and booked (as far as seats and stock allowed).
    pub done: usize,
    /// Admitted and, on purpose, never came (`--no-show`).
    pub no_shows: usize,
    /// Left the line on purpose.
    pub abandoned: usize,
    /// Told SOLD_OUT before being admitted.
    pub sold_out: usize,
    /// Not admitted when the run stopped.
    pub still_waiting: usize,
    /// Stopped while booking.
    pub stopped: usize,
    /// Failed, by kind.
    pub failed: BTreeMap<String, usize>,
    /// Admitted at once by free entry.
    pub free_entry: usize,
    /// Admitted by a tick.
    pub admitted_by_tick: usize,
    /// Waited on a WebSocket (by plan).
    pub websocket: usize,
    /// Polled (by plan).
    pub polling: usize,
    /// Lost their place and joined again.
    pub rejoined: usize,
    /// Visitors who had to solve a proof-of-work challenge to join.
    pub challenged: usize,
    /// Challenges solved in all.
    pub challenges: u64,
    /// Nonces tried for them.
    pub hashes: u64,
    /// Holds granted.
    pub holds: usize,
    /// Bookings (confirmed holds).
    pub bookings: usize,
    /// Coupon claims acknowledged.
    pub claims: usize,
}

impl Visitors {
    /// Tally the records.
    pub fn of(records: &[VisitorRecord]) -> Visitors {
        let mut v = Visitors::default();
        for r in records {
            match &r.fate {
                Fate::Done => v.done += 1,
                Fate::NoShow => v.no_shows += 1,
                Fate::Abandoned => v.abandoned += 1,
                Fate::SoldOut => v.sold_out += 1,
                Fate::StillWaiting => v.still_waiting += 1,
                Fate::Running | Fate::Stopped => v.stopped += 1,
                Fate::Failed(kind) => *v.failed.entry(kind.clone()).or_default() += 1,
            }
            if r.free_entry {
                v.free_entry += 1;
            } else if r.admitted_at_ms.is_some() {
                v.admitted_by_tick += 1;
            }
            match r.mode {
                Mode::WebSocket => v.websocket += 1,
                Mode::Polling => v.polling += 1,
            }
            v.rejoined += usize::from(r.rejoined);
            v.challenged += usize::from(r.challenges > 0);
            v.challenges += u64::from(r.challenges);
            v.hashes += r.hashes;
            v.holds += r.holds.len();
            v.bookings += r.holds.iter().filter(|h| h.confirmed).count();
            v.claims += r.claims.len();
        }
        v
    }
}

/// What admitted visitors did at the booking core: the load the waiting
/// room let through, and how the booking core coped with it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AdmittedPhase {
    /// Visitors admitted (by a tick or by free entry).
    pub admitted: usize,
    /// Of them, no-shows (`--no-show`): admitted, no request.
    pub no_shows: usize,
    /// Of them, visitors who went through the whole booking flow.
    pub completed: usize,
    /// From the first admission to the last completed flow (s, harness clock).
    pub window_seconds: f64,
    /// Admitted throughput: completed flows per second of that window.
    pub visitors_per_second: f64,
    /// Booking requests answered with an expected status per second of that window.
    pub requests_per_second: f64,
    /// The booking requests (seat map, holds, claims, confirms) together.
    pub requests: BookingRequests,
}

impl AdmittedPhase {
    /// From the visitors' records and the booking steps' measurements.
    pub fn of(records: &[VisitorRecord], requests: BookingRequests) -> AdmittedPhase {
        let first = records.iter().filter_map(|r| r.admitted_ns).min();
        let last = records.iter().filter(|r| r.fate == Fate::Done).filter_map(|r| r.finished_ns).max();
        let window_seconds = match (first, last) {
            (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
            _ => 0.0,
        };
        let completed = records.iter().filter(|r| r.fate == Fate::Done).count();
        let per_second = |n: f64| if window_seconds > 0.0 { n / window_seconds } else { 0.0 };
        AdmittedPhase {
            admitted: records.iter().filter(|r| r.admitted_ns.is_some()).count(),
            no_shows: records.iter().filter(|r| r.fate == Fate::NoShow).count(),
            completed,
            window_seconds,
            visitors_per_second: per_second(completed as f64),
            requests_per_second: per_second(requests.completed as f64),
            requests,
        }
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Harness version.
    pub harness: &'static str,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// Wall time of the whole run (s).
    pub elapsed_seconds: f64,
    /// The flags.
    pub config: Args,
    /// Event booked.
    pub event: i64,
    /// Campaign claimed.
    pub campaign: i64,
    /// Socket budget: (HTTP in flight, WebSockets).
    pub socket_budget: (usize, usize),
    /// Arrival statistics.
    pub arrivals: Arrivals,
    /// Visitor fates.
    pub visitors: Visitors,
    /// Per-step latencies and outcomes.
    pub steps: Vec<StepStats>,
    /// The admitted visitors' load on the booking core.
    pub admitted: AdmittedPhase,
    /// Audit results (with admissions per tick and the order statistics).
    pub audit: Audit,
}

impl Report {
    /// Whether every audit check passed.
    pub fn passed(&self) -> bool {
        self.audit.passed()
    }

    /// The report as text for a terminal.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let a = &self.arrivals;
        let _ = writeln!(
            s,
            "loadtest {} — {} visitors planned at {:.0}/s; started {:.0}/s over {:.1}s (start lag p99 {:.1} ms, max {:.1} ms); \
             run took {:.1}s",
            self.harness,
            a.planned,
            a.planned_per_second,
            a.achieved_per_second,
            a.arrival_seconds,
            a.start_lag_p99_ms,
            a.start_lag_max_ms,
            self.elapsed_seconds
        );
        let v = &self.visitors;
        let _ = writeln!(
            s,
            "visitors: {} done, {} no-shows, {} abandoned, {} sold out, {} still waiting, {} stopped, {} failed {:?}; {} by tick, \
             {} free entry; {} WebSocket / {} polling, {} rejoined; {} holds, {} bookings, {} coupons",
            v.done,
            v.no_shows,
            v.abandoned,
            v.sold_out,
            v.still_waiting,
            v.stopped,
            v.failed.values().sum::<usize>(),
            v.failed,
            v.admitted_by_tick,
            v.free_entry,
            v.websocket,
            v.polling,
            v.rejoined,
            v.holds,
            v.bookings,
            v.claims
        );
        if v.challenges > 0 {
            let _ = writeln!(
                s,
                "challenges: {} solved by {} visitors, {} hashes (solve times: step `challenge` below, CPU time on the \
                 harness)",
                v.challenges, v.challenged, v.hashes
            );
        }
        let _ = writeln!(s, "\nlatency from intended start (ms), corrected for coordinated omission:");
        let _ = writeln!(
            s,
            "{:<18} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}  outcomes / errors",
            "step", "count", "errors", "p50", "p90", "p99", "p99.9", "max"
        );
        for st in &self.steps {
            let _ = writeln!(
                s,
                "{:<18} {:>8} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}  {:?}{}",
                st.step,
                st.count,
                st.errors,
                st.p50_ms,
                st.p90_ms,
                st.p99_ms,
                st.p999_ms,
                st.max_ms,
                st.outcomes,
                if st.error_kinds.is_empty() { String::new() } else { format!(" / {:?}", st.error_kinds) }
            );
        }
        let ad = &self.admitted;
        let b = &ad.requests;
        let _ = writeln!(
            s,
            "\nadmitted phase: {} admitted ({} no-shows), {} completed the booking flow in {:.1}s from the first \
             admission: {:.1} visitors/s, {:.1} completed requests/s",
            ad.admitted, ad.no_shows, ad.completed, ad.window_seconds, ad.visitors_per_second, ad.requests_per_second
        );
        let _ = writeln!(
            s,
            "booking requests: {} sent, {} answered, {} 5xx, {} transport errors, {} unexpected; \
             p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            b.requests,
            b.answered,
            b.server_errors,
            b.transport_errors,
            b.other_errors,
            b.p50_ms,
            b.p90_ms,
            b.p99_ms,
            b.max_ms
        );
        let t = &self.audit.ticks;
        let sizes: Vec<String> = t.releases.iter().take(30).map(|r| r.admitted.to_string()).collect();
        let _ = writeln!(
            s,
            "\nadmissions per tick: {} releases, max {}, mean {:.1}, closest {} ms apart: [{}{}]",
            t.releases.len(),
            t.max_per_release,
            t.mean_per_release,
            t.min_gap_ms.map_or("-".into(), |g| g.to_string()),
            sizes.join(" "),
            if t.releases.len() > 30 { " …" } else { "" }
        );
        if let Some(a) = &self.audit.adaptive {
            let _ = writeln!(
                s,
                "tick log ({} admission): {} ticks in the run, n {}–{} (mean {:.1}), {} released; by reason {:?}",
                a.mode, a.ticks, a.n_min, a.n_max, a.n_mean, a.released, a.reasons
            );
        }
        if let Some(d) = &self.audit.drop {
            let _ = writeln!(s, "\n{}", d.describe());
        }
        let _ = writeln!(s, "\naudit:");
        for c in &self.audit.checks {
            let _ = writeln!(s, "  {:<4} {:<22} {}", c.status.to_string(), c.name, c.detail);
        }
        let _ = writeln!(s, "\naudit {}", if self.passed() { "PASSED" } else { "FAILED" });
        let _ = writeln!(s, "{}", self.summary_line());
        s
    }

    /// One `summary key=value …` line for scripts (bench/sale.sh reads it).
    pub fn summary_line(&self) -> String {
        let failed: Vec<&str> =
            self.audit.checks.iter().filter(|c| c.status == crate::audit::Status::Fail).map(|c| c.name).collect();
        let mut line = format!(
            "summary passed={} planned_per_second={:.1} achieved_per_second={:.1} start_lag_p99_ms={:.1} visitors={} \
             admitted_by_tick={} failed_visitors={} bookings={} claims={} tau={} failed_checks={}",
            self.passed(),
            self.arrivals.planned_per_second,
            self.arrivals.achieved_per_second,
            self.arrivals.start_lag_p99_ms,
            self.arrivals.planned,
            self.visitors.admitted_by_tick,
            self.visitors.failed.values().sum::<usize>(),
            self.visitors.bookings,
            self.visitors.claims,
            self.audit.order.tau.map_or("none".into(), |t| format!("{t:.6}")),
            if failed.is_empty() { "none".into() } else { failed.join(",") },
        );
        for st in &self.steps {
            let _ = write!(line, " p99_{}_ms={:.1}", st.step, st.p99_ms);
        }
        let ad = &self.admitted;
        let _ = write!(
            line,
            " admitted={} no_shows={} completed={} admitted_window_s={:.2} admitted_visitors_per_second={:.2} \
             admitted_requests_per_second={:.2} booking_requests={} booking_p50_ms={:.1} booking_p99_ms={:.1} \
             booking_5xx={} booking_transport_errors={} booking_unexpected={}",
            ad.admitted,
            ad.no_shows,
            ad.completed,
            ad.window_seconds,
            ad.visitors_per_second,
            ad.requests_per_second,
            ad.requests.requests,
            ad.requests.p50_ms,
            ad.requests.p99_ms,
            ad.requests.server_errors,
            ad.requests.transport_errors,
            ad.requests.other_errors,
        );
        match &self.audit.adaptive {
            Some(a) => {
                let _ = write!(
                    line,
                    " admission={} logged_ticks={} n_min={} n_max={} n_mean={:.1}",
                    a.mode, a.ticks, a.n_min, a.n_max, a.n_mean
                );
            }
            None => line.push_str(" admission=unknown logged_ticks=0 n_min=none n_max=none n_mean=none"),
        }
        if let Some(d) = &self.audit.drop {
            let _ = write!(line, " {}", d.summary());
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visitor(index: usize, fate: Fate, admitted_s: Option<f64>, finished_s: Option<f64>) -> VisitorRecord {
        let mut r = VisitorRecord::new(index, Mode::WebSocket, false);
        let ns = |s: f64| (s * 1e9) as u64;
        r.admitted_ns = admitted_s.map(ns);
        r.finished_ns = finished_s.map(ns);
        r.fate = fate;
        r
    }

    #[test]
    fn admitted_throughput_counts_completed_flows_from_the_first_admission_to_the_last_completion() {
        let records = [
            // First admission at 2 s; a no-show admitted then, never finishing.
            visitor(0, Fate::NoShow, Some(2.0), None),
            visitor(1, Fate::Done, Some(3.0), Some(4.0)),
            visitor(2, Fate::Done, Some(5.0), Some(12.0)),
            // A failed flow finished later but does not count as completed.
            visitor(3, Fate::Failed("hold:5xx:503".into()), Some(6.0), None),
            visitor(4, Fate::StillWaiting, None, None),
        ];
        let requests = BookingRequests { completed: 50, ..BookingRequests::default() };
        let a = AdmittedPhase::of(&records, requests);
        assert_eq!((a.admitted, a.no_shows, a.completed), (4, 1, 2));
        assert!((a.window_seconds - 10.0).abs() < 1e-6, "{a:?}");
        assert!((a.visitors_per_second - 0.2).abs() < 1e-6, "{a:?}");
        assert!((a.requests_per_second - 5.0).abs() < 1e-6, "{a:?}");
        // Nobody finished: no window, no rates (not a division by zero).
        let none = AdmittedPhase::of(&records[..1], BookingRequests::default());
        assert_eq!((none.window_seconds, none.visitors_per_second), (0.0, 0.0));
    }
}
