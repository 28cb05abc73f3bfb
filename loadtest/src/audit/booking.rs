//! Seats and coupons: what clients were granted, cross-checked with the database.
//!
//! Client side, two visitors' 201 holds on one seat overlap when their
//! expiries are less than a hold length apart (both holds last that long), a
//! hold granted after another visitor's booking of the seat is a double
//! booking, and so are two bookings. The database side applies the same
//! rules to the `holds` and `bookings` rows, which also catches grants the
//! harness never heard about. A hold can end before its expiry (the booking
//! core releases a visitor's other holds when a purchase ends the session,
//! a visitor releases it), which only the database sees: with the database
//! at hand, overlapping holds are judged there, and the client side judges
//! bookings only.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use crate::audit::db::DbView;
use crate::record::VisitorRecord;

/// Descriptions of seats two visitors held or booked at once, from client
/// answers; `holds_too`: also two holds whose expiries say they overlapped
/// (off when the database judges holds, see the module docs).
pub fn client_seat_conflicts(records: &[VisitorRecord], hold_length: Duration, holds_too: bool) -> Vec<String> {
    let length = i64::try_from(hold_length.as_millis()).unwrap_or(i64::MAX);
    let mut by_seat: BTreeMap<i64, Vec<(usize, i64, bool)>> = BTreeMap::new();
    for r in records {
        for h in &r.holds {
            by_seat.entry(h.seat_id).or_default().push((r.index, h.expires_at_ms, h.confirmed));
        }
    }
    let mut out = Vec::new();
    for (seat, mut holds) in by_seat {
        holds.sort_by_key(|h| h.1);
        for (i, a) in holds.iter().enumerate() {
            for b in &holds[i + 1..] {
                if a.0 == b.0 {
                    continue;
                }
                if a.2 && b.2 {
                    out.push(format!("seat {seat} booked by visitors #{} and #{}", a.0, b.0));
                } else if a.2 {
                    out.push(format!("seat {seat} held by visitor #{} after visitor #{} booked it", b.0, a.0));
                } else if holds_too && b.1 - a.1 < length {
                    out.push(format!(
                        "seat {seat} held by visitors #{} and #{} at once (expiries {} ms apart, holds last {length} ms)",
                        a.0,
                        b.0,
                        b.1 - a.1
                    ));
                }
            }
        }
    }
    out
}

/// Descriptions of seats two visitors held or booked at once, from the database rows.
pub fn db_seat_conflicts(db: &DbView) -> Vec<String> {
    let mut out = Vec::new();
    let mut booked: HashMap<i64, Vec<&str>> = HashMap::new();
    for b in &db.bookings {
        booked.entry(b.seat_id).or_default().push(&b.visitor_id);
    }
    for (seat, visitors) in &booked {
        if visitors.len() > 1 {
            out.push(format!("database: seat {seat} has {} bookings", visitors.len()));
        }
    }
    let mut by_seat: BTreeMap<i64, Vec<&crate::audit::db::HoldRow>> = BTreeMap::new();
    for h in &db.holds {
        by_seat.entry(h.seat_id).or_default().push(h);
    }
    for (seat, mut holds) in by_seat {
        holds.sort_by_key(|h| h.created_at);
        for pair in holds.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if a.state == "RELEASED" || a.visitor_id == b.visitor_id {
                continue;
            }
            if a.state == "CONFIRMED" {
                out.push(format!("database: seat {seat} held again (hold {}) after booking (hold {})", b.id, a.id));
            } else if b.created_at < a.expires_at {
                out.push(format!("database: seat {seat} holds {} and {} overlap", a.id, b.id));
            }
        }
    }
    out
}

/// Acknowledged holds and bookings that the database does not have (as the visitor who got them).
pub fn db_missing_grants(records: &[VisitorRecord], db: &DbView) -> Vec<String> {
    let holds: HashMap<&str, &str> = db.holds.iter().map(|h| (h.id.as_str(), h.visitor_id.as_str())).collect();
    let bookings: HashMap<&str, &str> =
        db.bookings.iter().map(|b| (b.hold_id.as_str(), b.visitor_id.as_str())).collect();
    let mut out = Vec::new();
    for r in records {
        let me = r.visitor_id.as_deref().unwrap_or("");
        for h in &r.holds {
            if holds.get(h.hold_id.as_str()) != Some(&me) {
                out.push(format!(
                    "hold {} granted to visitor #{} is not in the database as theirs",
                    h.hold_id, r.index
                ));
            }
            if h.confirmed && bookings.get(h.hold_id.as_str()) != Some(&me) {
                out.push(format!("booking of hold {} (visitor #{}) is not in the database", h.hold_id, r.index));
            }
        }
    }
    out
}

/// Distinct claim ids acknowledged with 201, and visitors who got two.
pub fn client_claims(records: &[VisitorRecord]) -> (BTreeSet<i64>, Vec<String>) {
    let mut ids = BTreeSet::new();
    let mut twice = Vec::new();
    for r in records {
        let mine: BTreeSet<i64> = r.claims.iter().map(|c| c.claim_id).collect();
        if mine.len() > 1 {
            twice.push(format!("visitor #{} was granted {} coupons ({mine:?})", r.index, mine.len()));
        }
        ids.extend(mine);
    }
    (ids, twice)
}

/// Visitors with two claimed codes in the database.
pub fn db_claims_twice(db: &DbView) -> Vec<String> {
    let mut per: HashMap<&str, usize> = HashMap::new();
    for c in &db.claims {
        *per.entry(&c.visitor_id).or_default() += 1;
    }
    per.into_iter().filter(|(_, n)| *n > 1).map(|(v, n)| format!("database: visitor {v} holds {n} codes")).collect()
}

/// Acknowledged claims missing from the database (as the visitor's, with the same code).
pub fn db_missing_claims(records: &[VisitorRecord], db: &DbView) -> Vec<String> {
    let rows: HashMap<i64, (&str, &str)> =
        db.claims.iter().map(|c| (c.id, (c.visitor_id.as_str(), c.code.as_str()))).collect();
    let mut out = Vec::new();
    for r in records {
        let me = r.visitor_id.as_deref().unwrap_or("");
        for c in &r.claims {
            if rows.get(&c.claim_id) != Some(&(me, c.code.as_str())) {
                out.push(format!(
                    "claim {} ({}) acknowledged to visitor #{} is not in the database",
                    c.claim_id, c.code, r.index
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{HoldObs, Mode};

    fn holder(index: usize, seat: i64, expires: i64, confirmed: bool) -> VisitorRecord {
        let mut r = VisitorRecord::new(index, Mode::WebSocket, false);
        r.holds.push(HoldObs {
            hold_id: format!("h{index}"),
            seat_id: seat,
            expires_at_ms: expires,
            confirmed,
            confirmed_ns: None,
        });
        r
    }

    #[test]
    fn two_live_holds_on_one_seat_conflict_but_a_hold_after_expiry_does_not() {
        let five = Duration::from_secs(300);
        assert!(
            client_seat_conflicts(&[holder(0, 7, 300_000, false), holder(1, 8, 300_010, false)], five, true).is_empty()
        );
        assert_eq!(
            client_seat_conflicts(&[holder(0, 7, 300_000, false), holder(1, 7, 300_010, false)], five, true).len(),
            1
        );
        // Judged by the database instead (a hold may have been released early).
        assert!(
            client_seat_conflicts(&[holder(0, 7, 300_000, false), holder(1, 7, 300_010, false)], five, false)
                .is_empty()
        );
        assert!(
            client_seat_conflicts(&[holder(0, 7, 300_000, false), holder(1, 7, 600_001, false)], five, true).is_empty()
        );
        assert_eq!(
            client_seat_conflicts(&[holder(0, 7, 300_000, true), holder(1, 7, 900_000, false)], five, false).len(),
            1
        );
    }
}
