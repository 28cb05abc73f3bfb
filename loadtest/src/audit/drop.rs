//! A drop (`--drop`): visitors gather in a pre-queue, a lottery orders them
//! at the opening, and the sale sells out. Four checks on top of the
//! others, from the published draw (`GET /wr/{q}/lottery`, read after the
//! run), the booking core's stock (`GET /admin/stock`, read every
//! `--stock-poll` during the run) and what each visitor saw:
//!
//! | check | fails when |
//! |---|---|
//! | `lottery_verified` | the seed does not hash to the commitment or the entrants are not in the rule's order (`waiting_room::lottery::verify`, what `waiting-room verify-lottery` runs), or a visitor who joined the pre-queue is not in the draw |
//! | `lottery_order` | an entrant admitted by an earlier tick than one drawn before them, or told SOLD_OUT while one drawn after them was admitted; an entrant admitted after a later arrival; later arrivals out of FIFO order (pairs of provably ordered joins, as `fifo_order`) |
//! | `no_admission_after_sold_out` | more visitors admitted after the stock first read zero (plus `--sold-out-grace`, the age the waiting room's own reading may have) than seats freed since |
//! | `sold_out_heard` | a socket waiting when the sale sold out heard `SOLD_OUT` more than `--sold-out-within` after the last booking the harness saw confirmed, or never |
//!
//! Visitors admitted by the same tick share `admitted_at` and are not
//! ordered among themselves. Entrants are the visitors whose public id is in
//! the published draw; the others who stood in line are later arrivals.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use waiting_room::lottery::Published;

use super::order::{self, Joined};
use super::{Check, check, skipped};
use crate::record::{Fate, VisitorRecord};

/// One reading of the event's free seats during the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StockReading {
    /// When the answer arrived (epoch ms, this machine's clock).
    pub at_ms: i64,
    /// Free seats (`AVAILABLE` or an expired hold).
    pub free_seats: i64,
}

/// What a drop's checks use besides the records.
#[derive(Debug, Clone, Default)]
pub struct DropEvidence {
    /// The published lottery after the run (`None`: unreadable, see `sources`).
    pub lottery: Option<Published>,
    /// The stock readings, oldest first (empty: not read).
    pub stock: Vec<StockReading>,
    /// How old the waiting room's stock reading may be (its `poll_interval`
    /// and the read itself): admissions this long after the stock reached
    /// zero are not "after sell-out".
    pub grace: Duration,
    /// How soon after the last booking every waiting socket must hear `SOLD_OUT`.
    pub heard_within: Duration,
    /// The run's start on the wall clock (epoch ms): client time 0.
    pub start_ms: i64,
}

/// The drop's numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DropStats {
    /// Entrants in the published draw.
    pub entrants: usize,
    /// Harness visitors who joined the pre-queue.
    pub harness_entrants: usize,
    /// When the draw happened (epoch ms, published).
    pub drawn_at_ms: Option<i64>,
    /// Entrants admitted.
    pub admitted_entrants: usize,
    /// Visitors who joined after the draw.
    pub later_arrivals: usize,
    /// Of them, admitted.
    pub admitted_later: usize,
    /// The first admission (epoch ms, `admitted_at`).
    pub first_admission_ms: Option<i64>,
    /// When the stock first read zero (epoch ms).
    pub sold_out_at_ms: Option<i64>,
    /// Admitted after that (plus the grace).
    pub admitted_after_sold_out: usize,
    /// Seats freed after it (the readings' rises).
    pub freed_after_sold_out: i64,
    /// The last booking the harness saw confirmed (epoch ms).
    pub last_booking_ms: Option<i64>,
    /// Sockets that heard `SOLD_OUT`.
    pub sockets_told: usize,
    /// The latest of them, after the last booking (ms; negative: before it).
    pub slowest_socket_ms: Option<i64>,
    /// Visitors told `SOLD_OUT` in all (join, socket, poll).
    pub sold_out_visitors: usize,
}

impl DropStats {
    /// Milliseconds from the draw to `at` (both epoch ms).
    fn since_draw(&self, at: Option<i64>) -> String {
        match (self.drawn_at_ms, at) {
            (Some(d), Some(a)) => (a - d).to_string(),
            _ => "none".into(),
        }
    }

    /// The numbers as `(key, value)`, for the report and the summary line.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let opt = |v: Option<i64>| v.map_or("none".into(), |t| t.to_string());
        vec![
            ("entrants", self.entrants.to_string()),
            ("harness_entrants", self.harness_entrants.to_string()),
            ("drawn_at_ms", opt(self.drawn_at_ms)),
            ("first_admission_after_draw_ms", self.since_draw(self.first_admission_ms)),
            ("admitted_entrants", self.admitted_entrants.to_string()),
            ("later_arrivals", self.later_arrivals.to_string()),
            ("admitted_later", self.admitted_later.to_string()),
            ("sold_out_after_draw_ms", self.since_draw(self.sold_out_at_ms)),
            ("admitted_after_sold_out", self.admitted_after_sold_out.to_string()),
            ("freed_after_sold_out", self.freed_after_sold_out.to_string()),
            ("last_booking_after_draw_ms", self.since_draw(self.last_booking_ms)),
            ("sold_out_visitors", self.sold_out_visitors.to_string()),
            ("sockets_told", self.sockets_told.to_string()),
            ("slowest_socket_after_last_booking_ms", opt(self.slowest_socket_ms)),
        ]
    }

    /// The report's line.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self.fields().iter().map(|(k, v)| format!("{} {v}", k.replace('_', " "))).collect();
        format!("drop: {}", parts.join(", "))
    }

    /// `key=value` pairs for the summary line.
    pub fn summary(&self) -> String {
        self.fields().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    }
}

/// Client time (ns since the start) on the wall clock.
fn wall_ms(start_ms: i64, ns: u64) -> i64 {
    start_ms + i64::try_from(ns / 1_000_000).unwrap_or(i64::MAX / 2)
}

/// The public ids of the draw, by place (0-based).
fn places(d: &DropEvidence) -> Option<HashMap<&str, usize>> {
    let entrants = d.lottery.as_ref()?.entrants.as_ref()?;
    Some(entrants.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect())
}

/// Whether `r` is in the published draw.
pub fn drawn(places: &HashMap<&str, usize>, r: &VisitorRecord) -> Option<usize> {
    places.get(r.public_id.as_deref()?).copied()
}

/// The four checks and their numbers.
pub fn checks(records: &[VisitorRecord], d: &DropEvidence) -> (Vec<Check>, DropStats) {
    let mut stats = DropStats {
        harness_entrants: records.iter().filter(|r| r.prequeue).count(),
        sold_out_visitors: records.iter().filter(|r| r.fate == Fate::SoldOut).count(),
        first_admission_ms: records.iter().filter(|r| r.queued()).filter_map(|r| r.admitted_at_ms).min(),
        ..DropStats::default()
    };
    let checks = vec![
        lottery_verified(records, d, &mut stats),
        lottery_order(records, d, &mut stats),
        after_sold_out(records, d, &mut stats),
        sold_out_heard(records, d, &mut stats),
    ];
    (checks, stats)
}

fn lottery_verified(records: &[VisitorRecord], d: &DropEvidence, stats: &mut DropStats) -> Check {
    const NAME: &str = "lottery_verified";
    let Some(p) = &d.lottery else {
        return skipped(NAME, "the published lottery could not be read (see `sources`)");
    };
    stats.drawn_at_ms = p.drawn_at.as_deref().and_then(crate::visitor::epoch_ms);
    let mut v = Vec::new();
    match waiting_room::lottery::verify(p) {
        Ok(n) => stats.entrants = n,
        Err(e) => v.push(format!("queue {:?}: {e}", p.queue)),
    }
    if let Some(places) = places(d) {
        for r in records.iter().filter(|r| r.prequeue) {
            match &r.public_id {
                None => v.push(format!("visitor #{} joined the pre-queue without a public id", r.index)),
                Some(id) if !places.contains_key(id.as_str()) => {
                    v.push(format!("visitor #{} (public id {id}) joined the pre-queue but is not in the draw", r.index))
                }
                Some(_) => {}
            }
        }
    }
    check(
        NAME,
        &v,
        format!(
            "seed matches the commitment and the {} entrants are in the rule's order ({}); all {} harness visitors \
             who joined the pre-queue are in the draw",
            stats.entrants, p.algorithm, stats.harness_entrants
        ),
    )
}

/// An admitted visitor in the order check.
#[derive(Clone, Copy)]
struct Admitted {
    index: usize,
    place: usize,
    at_ms: i64,
}

fn lottery_order(records: &[VisitorRecord], d: &DropEvidence, stats: &mut DropStats) -> Check {
    const NAME: &str = "lottery_order";
    let Some(places) = places(d) else {
        return skipped(NAME, "no drawn lottery to compare with (see `lottery_verified`)");
    };
    let in_line = || records.iter().filter(|r| r.queued() && !r.rejoined);
    let mut entrants: Vec<(usize, &VisitorRecord)> =
        in_line().filter_map(|r| drawn(&places, r).map(|p| (p, r))).collect();
    entrants.sort_by_key(|(p, _)| *p);
    let later: Vec<&VisitorRecord> = in_line().filter(|r| !r.prequeue && drawn(&places, r).is_none()).collect();
    let admitted: Vec<Admitted> = entrants
        .iter()
        .filter_map(|(place, r)| Some(Admitted { index: r.index, place: *place, at_ms: r.admitted_at_ms? }))
        .collect();
    stats.admitted_entrants = admitted.len();
    stats.later_arrivals = later.len();
    stats.admitted_later = later.iter().filter(|r| r.admitted_at_ms.is_some()).count();

    let mut v = Vec::new();
    // Drawn order: nobody admitted by an earlier tick than someone drawn before them.
    let mut latest: Option<Admitted> = None;
    for a in &admitted {
        if let Some(l) = latest
            && a.at_ms < l.at_ms
        {
            v.push(format!(
                "visitor #{} (place {}) admitted at {} ms, before #{} (place {}) at {} ms",
                a.index,
                a.place + 1,
                a.at_ms,
                l.index,
                l.place + 1,
                l.at_ms
            ));
        }
        if latest.is_none_or(|l| a.at_ms > l.at_ms) {
            latest = Some(*a);
        }
    }
    // Nobody passed over: told SOLD_OUT while someone drawn after them got in.
    if let Some(last) = admitted.iter().max_by_key(|a| a.place) {
        for (place, r) in entrants.iter().filter(|(p, r)| *p < last.place && r.fate == Fate::SoldOut) {
            v.push(format!(
                "visitor #{} (place {}) was told SOLD_OUT, #{} (place {}) was admitted",
                r.index,
                place + 1,
                last.index,
                last.place + 1
            ));
        }
    }
    // Later arrivals after every entrant.
    let first_later = later.iter().filter_map(|r| r.admitted_at_ms.map(|at| (at, r.index))).min();
    if let Some((at, index)) = first_later {
        for a in admitted.iter().filter(|a| a.at_ms > at) {
            v.push(format!(
                "entrant #{} (place {}) admitted at {} ms, after later arrival #{index} at {at} ms",
                a.index,
                a.place + 1,
                a.at_ms
            ));
        }
        for (place, r) in entrants.iter().filter(|(_, r)| r.fate == Fate::SoldOut) {
            v.push(format!(
                "entrant #{} (place {}) was told SOLD_OUT, later arrival #{index} was admitted",
                r.index,
                place + 1
            ));
        }
    }
    // Later arrivals among themselves: first come, first served.
    let joined = Joined::of(later.iter().copied());
    let fifo = order::order_stats(&joined);
    if fifo.discordant > 0 {
        let (a, b) = fifo.example.unwrap_or_default();
        v.push(format!(
            "{} pair(s) of later arrivals admitted against join order; e.g. #{b} before #{a}, who joined first",
            fifo.discordant
        ));
    }
    let releases = {
        let mut ticks: Vec<i64> = admitted.iter().map(|a| a.at_ms).collect();
        ticks.dedup();
        ticks.len()
    };
    check(
        NAME,
        &v,
        format!(
            "{} of {} entrants admitted in drawn order over {releases} releases (the first {} of the draw), the rest \
             told SOLD_OUT; {} later arrivals, {} admitted after them ({} ordered pairs FIFO)",
            admitted.len(),
            entrants.len(),
            admitted.last().map_or(0, |a| a.place + 1),
            later.len(),
            stats.admitted_later,
            fifo.concordant
        ),
    )
}

fn after_sold_out(records: &[VisitorRecord], d: &DropEvidence, stats: &mut DropStats) -> Check {
    const NAME: &str = "no_admission_after_sold_out";
    if d.stock.is_empty() {
        return skipped(NAME, "the stock was not read: needs --booking-admin and --admin-token");
    }
    let Some(zero) = d.stock.iter().position(|s| s.free_seats <= 0) else {
        let left = d.stock.last().map_or(0, |s| s.free_seats);
        return skipped(NAME, &format!("the stock never reached zero during the run ({left} seats left)"));
    };
    let zero_ms = d.stock[zero].at_ms;
    let freed: i64 = d.stock[zero..].windows(2).map(|w| (w[1].free_seats - w[0].free_seats).max(0)).sum();
    let grace = i64::try_from(d.grace.as_millis()).unwrap_or(i64::MAX / 2);
    let mut after: Vec<(i64, usize)> = records
        .iter()
        .filter(|r| r.queued())
        .filter_map(|r| r.admitted_at_ms.map(|at| (at, r.index)))
        .filter(|(at, _)| *at > zero_ms + grace)
        .collect();
    after.sort_unstable();
    let within = records
        .iter()
        .filter(|r| r.queued())
        .filter_map(|r| r.admitted_at_ms)
        .filter(|at| (zero_ms + 1..=zero_ms + grace).contains(at))
        .count();
    stats.sold_out_at_ms = Some(zero_ms);
    stats.admitted_after_sold_out = after.len();
    stats.freed_after_sold_out = freed;
    let v: Vec<String> = if after.len() as i64 > freed {
        vec![format!(
            "{} admitted more than {grace} ms after the stock reached zero at {zero_ms} ms, only {freed} seat(s) freed \
             since; e.g. visitor #{} at {} ms",
            after.len(),
            after[0].1,
            after[0].0
        )]
    } else {
        Vec::new()
    };
    check(
        NAME,
        &v,
        format!(
            "stock reached zero at {zero_ms} ms; {} admitted after it (≤ {freed} seats freed since), {within} within \
             the {grace} ms the waiting room's reading may lag",
            after.len()
        ),
    )
}

fn sold_out_heard(records: &[VisitorRecord], d: &DropEvidence, stats: &mut DropStats) -> Check {
    const NAME: &str = "sold_out_heard";
    let Some(last_ns) = records.iter().flat_map(|r| &r.holds).filter_map(|h| h.confirmed_ns).max() else {
        return skipped(NAME, "no booking was confirmed");
    };
    stats.last_booking_ms = Some(wall_ms(d.start_ms, last_ns));
    if !d.stock.is_empty() && d.stock.iter().all(|s| s.free_seats > 0) {
        return skipped(NAME, "the sale did not sell out during the run");
    }
    let within_ms = i64::try_from(d.heard_within.as_millis()).unwrap_or(i64::MAX / 2);
    let delays: Vec<(i64, usize)> = records
        .iter()
        .filter(|r| r.sold_out_on_socket)
        .filter_map(|r| r.sold_out_ns.map(|ns| ((ns as i64 - last_ns as i64) / 1_000_000, r.index)))
        .collect();
    stats.sockets_told = delays.len();
    stats.slowest_socket_ms = delays.iter().map(|(ms, _)| *ms).max();
    let mut v: Vec<String> = delays
        .iter()
        .filter(|(ms, _)| *ms > within_ms)
        .map(|(ms, i)| format!("visitor #{i}'s socket heard SOLD_OUT {ms} ms after the last booking"))
        .collect();
    v.extend(
        records
            .iter()
            .filter(|r| r.on_socket && matches!(r.fate, Fate::StillWaiting | Fate::Stopped | Fate::Running))
            .map(|r| format!("visitor #{}'s socket was still waiting at the end, never told SOLD_OUT", r.index)),
    );
    check(
        NAME,
        &v,
        format!(
            "{} waiting sockets heard SOLD_OUT, the last {} ms after the last booking (≤ {within_ms} ms)",
            delays.len(),
            stats.slowest_socket_ms.map_or("-".into(), |ms| ms.to_string())
        ),
    )
}
