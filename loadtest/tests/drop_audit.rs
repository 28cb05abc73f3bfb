//! The drop's audit checks on synthetic records: a correct drop passes every
//! check, and each injected fault (a swapped admission, a tampered draw, a
//! visitor left out of it, an admission after sell-out, a late or missing
//! SOLD_OUT on a socket) fails the matching check and only that one.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use loadtest::audit::drop::{DropEvidence, StockReading};
use loadtest::audit::{Audit, Evidence, Status, audit};
use loadtest::record::{Fate, HoldObs, JoinObs, Mode, VisitorRecord};
use waiting_room::lottery::{self, Published};

/// Epoch ms of the run's start (client time 0).
const START_MS: i64 = 1_800_000_000_000;
/// The draw, 10 s into the run.
const DRAW_MS: i64 = START_MS + 10_000;
const ENTRANTS: usize = 20;
/// Seats: the first 8 of the draw get in, 4 a tick.
const SEATS: usize = 8;
const MS: u64 = 1_000_000;

fn ns_at(epoch_ms: i64) -> u64 {
    u64::try_from(epoch_ms - START_MS).unwrap() * MS
}

/// Tick `k`'s `admitted_at`: a second apart from a second after the draw.
fn tick(k: usize) -> i64 {
    DRAW_MS + 1000 * (k as i64 + 1)
}

/// A drop: 20 entrants drawn by the rule, the first 8 admitted 4 a tick and
/// booking, the other 12 told SOLD_OUT on their sockets 200 ms after the
/// last booking, 3 later arrivals told SOLD_OUT at the join; the stock
/// falls to zero 100 ms after the last admission.
struct Drop {
    records: Vec<VisitorRecord>,
    evidence: DropEvidence,
}

impl Drop {
    fn new() -> Drop {
        let seed = lottery::new_seed();
        let ids: Vec<String> = (0..ENTRANTS).map(|i| format!("{:016x}", 0xabc0_0000 + i * 7919)).collect();
        let drawn = lottery::order_by(&seed, ids.clone(), |s| s.as_str());
        let published = Published {
            queue: "drop".into(),
            algorithm: lottery::ALGORITHM.into(),
            state: "drawn".into(),
            commitment: lottery::commitment(&seed),
            committed_at: "2027-01-15T08:00:00Z".into(),
            prequeue_from: "2027-01-15T08:00:00Z".into(),
            opens_at: "2027-01-15T08:00:10Z".into(),
            seed: Some(seed),
            drawn_at: Some(rfc3339(DRAW_MS)),
            entrants: Some(drawn.clone()),
        };
        let last_admission = tick((SEATS - 1) / 4);
        let last_booking_ms = last_admission + 300;
        let mut records = Vec::new();
        // Visitors arrive in the order of `ids` (join order), one every 100 ms.
        for (index, id) in ids.iter().enumerate() {
            let place = drawn.iter().position(|d| d == id).unwrap();
            let mut r = VisitorRecord::new(index, Mode::WebSocket, false);
            let joined = index as u64 * 100 * MS;
            r.join = Some(JoinObs { sent_ns: joined, received_ns: joined + MS, position: None });
            r.public_id = Some(id.clone());
            r.prequeue = true;
            if place < SEATS {
                let at = tick(place / 4);
                r.admitted_at_ms = Some(at);
                r.admitted_ns = Some(ns_at(at + 5));
                let booked = if place == SEATS - 1 { last_booking_ms } else { at + 100 };
                r.holds.push(HoldObs {
                    hold_id: format!("h{index}"),
                    seat_id: place as i64 + 1,
                    expires_at_ms: at + 300_000,
                    confirmed: true,
                    confirmed_ns: Some(ns_at(booked)),
                });
                r.fate = Fate::Done;
            } else {
                r.sold_out_ns = Some(ns_at(last_booking_ms + 200));
                r.sold_out_on_socket = true;
                r.fate = Fate::SoldOut;
            }
            records.push(r);
        }
        // Later arrivals, after the opening: told SOLD_OUT by the join.
        for k in 0..3 {
            let index = ENTRANTS + k;
            let mut r = VisitorRecord::new(index, Mode::Polling, false);
            let joined = ns_at(DRAW_MS + 5000) + k as u64 * 100 * MS;
            r.join = Some(JoinObs { sent_ns: joined, received_ns: joined + MS, position: None });
            r.sold_out_ns = Some(joined + MS);
            r.fate = Fate::SoldOut;
            records.push(r);
        }
        let mut stock = Vec::new();
        let mut free = SEATS as i64;
        for t in (0..8000).step_by(100) {
            let at = DRAW_MS + t;
            // Each admitted visitor holds 50 ms after their tick.
            free =
                SEATS as i64 - records.iter().filter(|r| r.admitted_at_ms.is_some_and(|a| a + 50 <= at)).count() as i64;
            stock.push(StockReading { at_ms: at, free_seats: free });
        }
        assert_eq!(free, 0);
        let evidence = DropEvidence {
            lottery: Some(published),
            stock,
            grace: Duration::from_secs(1),
            heard_within: Duration::from_secs(1),
            start_ms: START_MS,
        };
        Drop { records, evidence }
    }

    /// Let the visitor at `place` in at `at_ms` (it hears no SOLD_OUT then).
    fn admit(&mut self, place: usize, at_ms: i64) {
        let r = self.at_place(place);
        r.admitted_at_ms = Some(at_ms);
        r.sold_out_ns = None;
        r.sold_out_on_socket = false;
        r.fate = Fate::Done;
    }

    fn audit(&self) -> Audit {
        audit(&self.records, &Evidence { drop: Some(self.evidence.clone()), ..Evidence::default() })
    }

    /// The record at `place` of the draw.
    fn at_place(&mut self, place: usize) -> &mut VisitorRecord {
        let id = self.evidence.lottery.as_ref().unwrap().entrants.as_ref().unwrap()[place].clone();
        self.records.iter_mut().find(|r| r.public_id.as_deref() == Some(id.as_str())).unwrap()
    }
}

fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
    t.format(&time::format_description::well_known::Rfc3339).unwrap()
}

const DROP_CHECKS: [&str; 4] = ["lottery_verified", "lottery_order", "no_admission_after_sold_out", "sold_out_heard"];

/// `failing` fails and no other check does; returns its detail.
fn only_fails(a: &Audit, failing: &str) -> String {
    for c in &a.checks {
        assert_eq!(c.status == Status::Fail, c.name == failing, "{}: {}", c.name, c.detail);
    }
    a.check(failing).unwrap().detail.clone()
}

#[test]
fn a_correct_drop_passes_every_check() {
    let d = Drop::new();
    let a = d.audit();
    assert!(a.passed(), "{:#?}", a.checks);
    for name in DROP_CHECKS {
        let c = a.check(name).unwrap();
        assert_eq!(c.status, Status::Pass, "{name}: {}", c.detail);
    }
    let s = a.drop.clone().unwrap();
    assert_eq!((s.entrants, s.harness_entrants, s.admitted_entrants), (20, 20, 8));
    assert_eq!((s.later_arrivals, s.admitted_later, s.sold_out_visitors), (3, 0, 15));
    assert_eq!(s.sockets_told, 12);
    assert_eq!(s.slowest_socket_ms, Some(200));
    assert_eq!(s.drawn_at_ms, Some(DRAW_MS));
    assert_eq!(s.sold_out_at_ms, Some(tick(1) + 100));
    assert_eq!(s.admitted_after_sold_out, 0);
    // The entrants are admitted in drawn order, not join order: fifo_order
    // leaves them out (only later arrivals are first come, first served).
    assert_ne!(a.check("fifo_order").unwrap().status, Status::Fail);
}

#[test]
fn an_admission_out_of_the_drawn_order_fails_lottery_order() {
    let mut d = Drop::new();
    // Places 2 and 5 (ticks 1 and 2) swap their admissions.
    let (a, b) = (d.at_place(2).admitted_at_ms, d.at_place(5).admitted_at_ms);
    d.at_place(2).admitted_at_ms = b;
    d.at_place(5).admitted_at_ms = a;
    let detail = only_fails(&d.audit(), "lottery_order");
    assert!(detail.contains("(place 6) admitted at"), "{detail}");
    // Within one tick the order is free: places 0 and 3 share tick 1.
    let mut d = Drop::new();
    d.at_place(0).admitted_at_ms = Some(tick(0));
    d.at_place(3).admitted_at_ms = Some(tick(0));
    assert!(d.audit().passed());
}

#[test]
fn an_entrant_passed_over_fails_lottery_order() {
    let mut d = Drop::new();
    // Place 3 told SOLD_OUT while places 4..8 got in.
    let r = d.at_place(3);
    r.admitted_at_ms = None;
    r.holds.clear();
    r.fate = Fate::SoldOut;
    let detail = only_fails(&d.audit(), "lottery_order");
    assert!(detail.contains("(place 4) was told SOLD_OUT"), "{detail}");
}

#[test]
fn a_later_arrival_admitted_before_an_entrant_fails_lottery_order() {
    let mut d = Drop::new();
    let r = &mut d.records[ENTRANTS];
    r.admitted_at_ms = Some(tick(0));
    r.fate = Fate::Done;
    let detail = only_fails(&d.audit(), "lottery_order");
    assert!(detail.contains("after later arrival #20"), "{detail}");
}

#[test]
fn a_tampered_draw_or_a_missing_entrant_fails_lottery_verified() {
    let mut d = Drop::new();
    d.evidence.lottery.as_mut().unwrap().seed = Some(lottery::new_seed());
    let a = d.audit();
    let detail = &a.check("lottery_verified").unwrap().detail;
    assert_eq!(a.check("lottery_verified").unwrap().status, Status::Fail, "{detail}");
    assert!(detail.contains("commitment"), "{detail}");

    let mut d = Drop::new();
    // A visitor who joined the pre-queue and is not in the published list
    // (the draw is cut to 19 entrants, in the rule's order still).
    let p = d.evidence.lottery.as_mut().unwrap();
    let entrants = p.entrants.as_mut().unwrap();
    let gone = entrants.pop().unwrap();
    let detail = only_fails(&d.audit(), "lottery_verified");
    assert!(detail.contains(&format!("(public id {gone}) joined the pre-queue but is not in the draw")), "{detail}");
}

#[test]
fn an_admission_after_sell_out_fails_unless_stock_was_freed() {
    let mut d = Drop::new();
    // Place 8 let in 2 s after the stock reached zero (beyond the 1 s grace).
    let zero = tick(1) + 100;
    d.admit(SEATS, zero + 2000);
    let detail = only_fails(&d.audit(), "no_admission_after_sold_out");
    assert!(detail.contains("1 admitted more than 1000 ms after the stock reached zero"), "{detail}");
    // A hold that expired freed a seat in between: that admission is fine.
    let i = d.evidence.stock.iter().position(|s| s.at_ms > zero + 1000).unwrap();
    d.evidence.stock[i].free_seats = 1;
    assert!(d.audit().passed(), "{:#?}", d.audit().checks);
    // Within the grace (the waiting room's reading may be that old): fine too.
    let mut d = Drop::new();
    d.admit(SEATS, zero + 900);
    assert!(d.audit().passed(), "{:#?}", d.audit().checks);
}

#[test]
fn a_late_or_missing_sold_out_on_a_socket_fails_sold_out_heard() {
    let mut d = Drop::new();
    let late = d.at_place(15);
    late.sold_out_ns = late.sold_out_ns.map(|ns| ns + 1000 * MS);
    let index = late.index;
    let detail = only_fails(&d.audit(), "sold_out_heard");
    assert!(detail.contains(&format!("visitor #{index}'s socket heard SOLD_OUT 1200 ms after")), "{detail}");

    let mut d = Drop::new();
    // A socket still open at the end, never told. (Still waiting also fails
    // flows_completed, so only this check is looked at.)
    let open = d.at_place(12);
    open.sold_out_ns = None;
    open.sold_out_on_socket = false;
    open.on_socket = true;
    open.fate = Fate::StillWaiting;
    let a = d.audit();
    let c = a.check("sold_out_heard").unwrap();
    assert_eq!(c.status, Status::Fail, "{}", c.detail);
    assert!(c.detail.contains("still waiting at the end, never told SOLD_OUT"), "{}", c.detail);
    // Heard before the last booking (the stock hit zero on the last hold): fine.
    let mut d = Drop::new();
    d.at_place(10).sold_out_ns = Some(ns_at(tick(1) + 120));
    assert!(d.audit().passed());
}
