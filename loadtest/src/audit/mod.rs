//! The audit after the run: every invariant of the product, checked from
//! what the visitors saw plus the services' own records.
//!
//! | check | from | fails when |
//! |---|---|---|
//! | `no_5xx` | every answer | any 5xx (a queue-API 503 with `Retry-After`, waited out and retried as the page does, is counted in the detail, not failed) |
//! | `gate_closed` | the unauthenticated request | a protected URL answered 2xx without a token |
//! | `tick_limit` | `admitted_at` of every admission; admin tick counters | a window of length T holds more than N (adaptive admission: more than the `n` the tick log gives the ticks around it, or `max_per_tick` where it gives none) |
//! | `adaptive_ticks` | the waiting room's tick log (`GET /admin/queues/{q}/ticks`), ticks of the run only; `max_per_tick`, `max_active` | a tick released more than its `n`; adaptive mode set `n` above `max_per_tick`; a tick left visitors waiting but released fewer than `n` with no `max_active` cap. Skipped when the endpoint answers 404 (a build without adaptive admission), or in fixed mode with no tick logged |
//! | `fifo_order` | join timings vs `admitted_at` ([`order`]) | any pair admitted against proven join order |
//! | `positions_never_rise` | WAITING messages and polls | a position went up |
//! | `seat_single_holder` | 201 holds, 200 confirms; `holds`/`bookings` rows | a seat held or booked by two visitors at once |
//! | `grants_recorded` | 201 holds, 200 confirms; database | a granted hold or booking is not in the database |
//! | `coupons_within_stock` | distinct 201 claims; database or `/admin/stats` | more codes issued than stock |
//! | `one_coupon_per_visitor` | 201 claims; database | a visitor with two codes |
//! | `claims_durable` | 201 claims; database, or each visitor's `/api/me/coupons`, or `/admin/stats` | an acknowledged claim does not exist |
//! | `flows_completed` | each visitor's fate | more failed flows than `--allowed-errors` |
//! | `sources` | reading the above | an audit source given on the command line could not be read |
//! | `lottery_verified`, `lottery_order`, `no_admission_after_sold_out`, `sold_out_heard` | a drop (`--drop`): the published draw, the stock read during the run ([`drop`]) | see [`drop`] |
//!
//! A check without the data it needs is `skipped` (and says which flag
//! provides it); skipped checks do not fail the run.

pub mod adaptive;
pub mod booking;
pub mod db;
pub mod drop;
pub mod evidence;
pub mod order;
pub mod ticks;

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use adaptive::AdaptiveStats;
pub use evidence::Evidence;
use order::{Joined, OrderStats};
use ticks::TickStats;

use crate::record::{Fate, VisitorRecord};

/// A check's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Held.
    Pass,
    /// Violated (or its source failed).
    Fail,
    /// Not enough data to check.
    Skipped,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skipped => "skip",
        })
    }
}

/// One check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// Name (see the module table).
    pub name: &'static str,
    /// Result.
    pub status: Status,
    /// What was checked, or the first violations.
    pub detail: String,
}

/// All checks and the numbers behind the two order audits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Audit {
    /// Every check.
    pub checks: Vec<Check>,
    /// Admission order vs join order.
    pub order: OrderStats,
    /// Admissions per tick.
    pub ticks: TickStats,
    /// The tick log's ticks of the run (when the waiting room keeps one).
    pub adaptive: Option<AdaptiveStats>,
    /// A drop's numbers (`--drop`).
    pub drop: Option<drop::DropStats>,
}

impl Audit {
    /// Whether no check failed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    /// The check named `name`.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }
}

fn check(name: &'static str, violations: &[String], ok: String) -> Check {
    if violations.is_empty() {
        Check { name, status: Status::Pass, detail: ok }
    } else {
        let mut detail = format!("{} violation(s): ", violations.len());
        detail.push_str(&violations.iter().take(5).cloned().collect::<Vec<_>>().join("; "));
        if violations.len() > 5 {
            detail.push_str("; …");
        }
        Check { name, status: Status::Fail, detail }
    }
}

fn skipped(name: &'static str, why: &str) -> Check {
    Check { name, status: Status::Skipped, detail: why.to_owned() }
}

/// Run every check on the visitors' records and the evidence gathered after the run.
pub fn audit(records: &[VisitorRecord], e: &Evidence) -> Audit {
    let mut checks = Vec::new();

    // No 5xx anywhere.
    let five: u64 = e.server_errors.values().sum();
    checks.push(if five == 0 {
        let detail = match e.retried_503 {
            0 => "no 5xx answer".into(),
            n => format!("no 5xx answer that ended a step; {n} queue-API 503 with Retry-After waited out and retried"),
        };
        Check { name: "no_5xx", status: Status::Pass, detail }
    } else {
        Check { name: "no_5xx", status: Status::Fail, detail: format!("{five} 5xx answer(s): {:?}", e.server_errors) }
    });

    // The gate never let a tokenless request through.
    let open: Vec<String> = records
        .iter()
        .filter(|r| r.gate_status.is_some_and(|s| (200..300).contains(&s)))
        .map(|r| format!("visitor #{} got {:?} without a token", r.index, r.gate_status.unwrap_or_default()))
        .collect();
    let gated = records.iter().filter(|r| r.gate_status.is_some()).count();
    checks.push(check("gate_closed", &open, format!("{gated} requests without a token, none let through")));

    // At most N per window of T.
    let tick = e.tick();
    let release_per_tick = e.release_per_tick();
    let ticks = ticks::tick_stats(records.iter().filter(|r| r.queued()).filter_map(|r| r.admitted_at_ms), tick);
    checks.push(match (release_per_tick, ticks.max_in_window) {
        // N moves from tick to tick: bound each window by its own tick's.
        _ if e.adaptive() => adaptive::tick_limit(&ticks, e),
        (Some(n), Some(max)) => {
            let mut v = Vec::new();
            if max > n {
                v.push(format!(
                    "{max} admissions within one tick interval from {} ms (N = {n})",
                    ticks.worst_window_start_ms.unwrap_or_default()
                ));
            }
            if let Some(counters) = e.counter_violation(n) {
                v.push(counters);
            }
            check(
                "tick_limit",
                &v,
                format!(
                    "{} releases seen, largest {}, fullest window of T {max} ≤ N = {n}, closest releases {} ms apart",
                    ticks.releases.len(),
                    ticks.max_per_release,
                    ticks.min_gap_ms.map_or("-".into(), |g| g.to_string())
                ),
            )
        }
        _ => skipped(
            "tick_limit",
            "N and T unknown: pass --proxy-admin (and --admin-token), or --release-per-tick and --tick",
        ),
    });

    // The tick log: each tick within its own N, and all of it while people wait.
    let admitted_by_tick = records.iter().filter(|r| r.queued() && r.admitted_at_ms.is_some()).count();
    let (adaptive_check, adaptive) = adaptive::adaptive_ticks(e, admitted_by_tick);
    checks.push(adaptive_check);

    // FIFO, over the visitors whose admission was seen. Visitors still in
    // line when the drain ran out and the run stopped them are left out:
    // their admission is unknown, not "never" — the stop races the READY
    // of the latest releases, and a poller learns of its release only at
    // its next poll, seconds later — so ranking them last would accuse the
    // releases they were part of. A visitor passed over for good is not
    // missed: it is still waiting at the end, which fails `flows_completed`.
    let stopped_in_line = records.iter().filter(|r| r.queued() && r.fate == Fate::StillWaiting).count();
    // A drop's entrants stand in the lottery's order, not their joins' (the
    // `lottery_order` check); only the later arrivals are FIFO.
    let drawn = e.drop.as_ref().and_then(|d| d.lottery.as_ref()).and_then(|p| p.entrants.as_ref());
    let drawn: std::collections::HashSet<&str> = drawn.into_iter().flatten().map(String::as_str).collect();
    let joined = Joined::of(
        records
            .iter()
            .filter(|r| r.queued() && !r.rejoined && !r.prequeue)
            .filter(|r| r.public_id.as_deref().is_none_or(|id| !drawn.contains(id))),
    );
    let stopped_note = if stopped_in_line > 0 {
        format!("; {stopped_in_line} stopped in line at the end left out (admission unseen)")
    } else {
        String::new()
    };
    let order = order::order_stats(&joined);
    checks.push(if order.concordant + order.discordant == 0 {
        skipped("fifo_order", "no two queued visitors with non-overlapping joins and different admission ticks")
    } else {
        let v: Vec<String> = if order.discordant > 0 {
            let (a, b) = order.example.unwrap_or_default();
            vec![format!(
                "{} pair(s) admitted against join order (tau {:.6}); e.g. visitor #{b} admitted before #{a}, who joined first",
                order.discordant,
                order.tau.unwrap_or_default()
            )]
        } else {
            Vec::new()
        };
        check(
            "fifo_order",
            &v,
            format!(
                "tau = {:.6} over {} ordered pairs of {} visitors{stopped_note}",
                order.tau.unwrap_or(1.0),
                order.concordant,
                order.visitors
            ),
        )
    });

    // Positions never go up.
    let rises: Vec<String> = records
        .iter()
        .flat_map(|r| {
            r.position_increases.iter().map(move |(a, b)| format!("visitor #{}: position {a} → {b}", r.index))
        })
        .collect();
    checks.push(check("positions_never_rise", &rises, "no waiting position went up".into()));

    // Seats.
    let mut seat_v = booking::client_seat_conflicts(records, e.hold_length, e.db.is_none());
    let holds: usize = records.iter().map(|r| r.holds.len()).sum();
    let bookings: usize = records.iter().flat_map(|r| &r.holds).filter(|h| h.confirmed).count();
    if let Some(db) = &e.db {
        seat_v.extend(booking::db_seat_conflicts(db));
    }
    let db_note = if e.db.is_some() { " and in the database" } else { "" };
    checks.push(check(
        "seat_single_holder",
        &seat_v,
        format!("{holds} holds and {bookings} bookings granted, no seat with two holders{db_note}"),
    ));
    checks.push(match &e.db {
        Some(db) => check(
            "grants_recorded",
            &booking::db_missing_grants(records, db),
            format!("all {holds} holds and {bookings} bookings are in the database"),
        ),
        None => skipped("grants_recorded", "needs --database-url"),
    });

    // Coupons.
    let (acked, twice) = booking::client_claims(records);
    let stock = e.db.as_ref().map(|d| d.stock).or(e.stats.map(|s| s.stock)).or(e.stock);
    let issued = e.db.as_ref().map(|d| d.claims.len() as i64).or(e.stats.map(|s| s.claimed));
    checks.push(match stock {
        Some(stock) => {
            let mut v = Vec::new();
            if acked.len() as i64 > stock {
                v.push(format!("{} distinct claims acknowledged, stock {stock}", acked.len()));
            }
            if let Some(n) = issued
                && n > stock
            {
                v.push(format!("{n} codes issued, stock {stock}"));
            }
            let issued_note = issued.map_or(String::new(), |n| format!(", {n} issued in all"));
            check("coupons_within_stock", &v, format!("{} acknowledged{issued_note} ≤ stock {stock}", acked.len()))
        }
        None => skipped(
            "coupons_within_stock",
            "stock unknown: pass --database-url, --booking with --admin-token, or --stock",
        ),
    });
    let mut twice_v = twice;
    if let Some(db) = &e.db {
        twice_v.extend(booking::db_claims_twice(db));
    }
    checks.push(check("one_coupon_per_visitor", &twice_v, "no visitor holds two coupons".into()));
    checks.push(if let Some(db) = &e.db {
        check(
            "claims_durable",
            &booking::db_missing_claims(records, db),
            format!("all {} acknowledged claims are in the database", acked.len()),
        )
    } else if let Some(me) = &e.me_claims {
        let v: Vec<String> =
            me.missing.iter().map(|c| format!("claim {c} missing from its visitor's /api/me/coupons")).collect();
        check(
            "claims_durable",
            &v,
            format!(
                "{} claims found in their visitors' /api/me/coupons ({} tokens expired, unchecked)",
                me.checked, me.unverifiable
            ),
        )
    } else if let Some(n) = issued {
        let v = if (acked.len() as i64) > n {
            vec![format!("{} claims acknowledged but only {n} issued", acked.len())]
        } else {
            Vec::new()
        };
        check("claims_durable", &v, format!("{} acknowledged ≤ {n} issued (counts only)", acked.len()))
    } else {
        skipped("claims_durable", "needs --database-url, or --booking with --admin-token")
    });

    // Flows.
    let mut fates: BTreeMap<String, usize> = BTreeMap::new();
    for r in records {
        match &r.fate {
            Fate::Failed(kind) => *fates.entry(kind.clone()).or_default() += 1,
            Fate::StillWaiting => *fates.entry("still_waiting_at_end".into()).or_default() += 1,
            Fate::Running | Fate::Stopped => *fates.entry("stopped_at_end".into()).or_default() += 1,
            Fate::Done | Fate::NoShow | Fate::Abandoned | Fate::SoldOut => {}
        }
    }
    let failed: usize = fates.values().sum();
    let allowed = (e.allowed_errors * records.len() as f64).floor() as usize;
    checks.push(if failed <= allowed {
        Check {
            name: "flows_completed",
            status: Status::Pass,
            detail: format!("{} visitors, {failed} unfinished (allowed {allowed}) {fates:?}", records.len()),
        }
    } else {
        Check {
            name: "flows_completed",
            status: Status::Fail,
            detail: format!("{failed} of {} visitors did not finish (allowed {allowed}): {fates:?}", records.len()),
        }
    });

    let drop = e.drop.as_ref().map(|d| {
        let (drop_checks, stats) = drop::checks(records, d);
        checks.extend(drop_checks);
        stats
    });

    checks.push(check("sources", &e.source_errors, "every audit source given could be read".into()));
    Audit { checks, order, ticks, adaptive, drop }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{JoinObs, Mode};

    /// A visitor who joined at `joined_ms` (a 1 ms join) and was admitted at
    /// `admitted_ms`, or is still waiting (`None`).
    fn queued(index: usize, joined_ms: u64, admitted_ms: Option<i64>) -> VisitorRecord {
        let mut r = VisitorRecord::new(index, Mode::WebSocket, false);
        let ns = joined_ms * 1_000_000;
        r.join = Some(JoinObs { sent_ns: ns, received_ns: ns + 1_000_000, position: Some(1) });
        r.admitted_at_ms = admitted_ms;
        r.fate = if admitted_ms.is_some() { Fate::Done } else { Fate::StillWaiting };
        r
    }

    #[test]
    fn visitors_stopped_in_line_are_left_out_of_the_order_audit_and_fail_flows_completed() {
        // #1 joined before #2 and #3 and was stopped in line at the end: it may
        // have been in #3's release (2000) without seeing it yet, or even in
        // #2's (1000), as a poller between two polls. No order is proven.
        let records =
            [queued(0, 0, Some(500)), queued(1, 10, None), queued(2, 20, Some(1000)), queued(3, 30, Some(2000))];
        let a = audit(&records, &Evidence::default());
        let fifo = a.check("fifo_order").unwrap_or_else(|| panic!("no fifo_order"));
        assert_eq!(fifo.status, Status::Pass, "{}", fifo.detail);
        assert_eq!((a.order.visitors, a.order.concordant, a.order.discordant), (3, 3, 0));
        assert!(fifo.detail.contains("1 stopped in line"), "{}", fifo.detail);
        // Still waiting at the end is not a pass: the flows check says so.
        let flows = a.check("flows_completed").unwrap_or_else(|| panic!("no flows_completed"));
        assert_eq!(flows.status, Status::Fail, "{}", flows.detail);
        assert!(flows.detail.contains("still_waiting_at_end"), "{}", flows.detail);
    }

    #[test]
    fn an_admitted_visitor_passed_over_by_a_later_joiner_is_out_of_order() {
        let records = [queued(0, 0, Some(2000)), queued(1, 10, Some(1000))];
        let a = audit(&records, &Evidence::default());
        let fifo = a.check("fifo_order").unwrap_or_else(|| panic!("no fifo_order"));
        assert_eq!(fifo.status, Status::Fail, "{}", fifo.detail);
        assert_eq!(a.order.example, Some((0, 1)));
    }
}
