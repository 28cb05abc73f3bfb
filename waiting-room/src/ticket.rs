//! Queue tickets: a visitor's signed receipt for a place in line, so a store
//! that forgets (Redis restarted empty, a failover to a replica that missed
//! writes) does not cost anybody their turn.
//!
//! Every join that leaves the visitor waiting hands out a ticket — in the
//! `wr_ticket_<queue>` cookie (path `/wr/<queue>`, so it travels only with
//! that queue's own requests) and as `ticket` in the JSON and WebSocket
//! answer. It signs (queue, visitor, epoch, sequence number):
//! `v1.<epoch: 16 hex digits>.<seq: decimal>.<mac: base64url>`, the MAC an
//! HMAC-SHA256 keyed from the cookie secret, so every instance sharing the
//! key directory verifies every other's tickets.
//!
//! After a loss the line has a new epoch. A visitor who joins again with a
//! ticket of another epoch is placed by the ticket's sequence number, which
//! sorts ahead of every arrival of the new epoch (see `store/lua/standing.lua`)
//! and behind the restored visitors who joined before them, so the original
//! order comes back. What a ticket cannot do:
//!
//! - be forged or altered: the MAC covers every field;
//! - serve another visitor or queue: both are in the MAC but not in the
//!   ticket, so a ticket verifies only with its own visitor cookie on its own
//!   queue's path;
//! - be replayed: the store honours a ticket once per visitor and lost epoch,
//!   and never one of the current epoch (a visitor who was let in, left or
//!   lapsed joins at the back like anyone).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use pingora::prelude::Session;
use sha2::Sha256;
use shared::visitor::{CookieSigner, VisitorId};

use crate::store::Place;

/// How long the ticket cookie lives: longer than anybody waits.
const COOKIE_MAX_AGE_SECS: u64 = 24 * 3600;

/// The name of `queue`'s ticket cookie.
pub fn cookie_name(queue: &str) -> String {
    format!("wr_ticket_{queue}")
}

/// Signs and verifies queue tickets.
pub struct Tickets {
    key: Hmac<Sha256>,
}

impl Tickets {
    /// Keyed from the cookie secret, like every instance sharing it.
    pub fn new(cookies: &CookieSigner) -> Self {
        // HMAC takes keys of any length; 32 bytes never fail.
        let key = Hmac::<Sha256>::new_from_slice(&cookies.derive("queue ticket v1")).unwrap_or_else(|_| unreachable!());
        Tickets { key }
    }

    fn mac(&self, queue: &str, visitor: VisitorId, epoch: &str, seq: &str) -> Hmac<Sha256> {
        let mut mac = self.key.clone();
        // Queue ids and the other fields hold no '|', so the fields cannot run together.
        mac.update(format!("{queue}|{visitor}|{epoch}|{seq}").as_bytes());
        mac
    }

    /// The ticket of `visitor`'s `place` in `queue`.
    pub fn sign(&self, queue: &str, visitor: VisitorId, place: Place) -> String {
        let (epoch, seq) = (format!("{:016x}", place.epoch), place.seq.to_string());
        let tag = self.mac(queue, visitor, &epoch, &seq).finalize().into_bytes();
        format!("v1.{epoch}.{seq}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// The place a ticket signs for `visitor` in `queue`; `None` for anything
    /// else (malformed, forged, another visitor's or queue's).
    pub fn verify(&self, queue: &str, visitor: VisitorId, ticket: &str) -> Option<Place> {
        let mut parts = ticket.split('.');
        let (Some("v1"), Some(epoch), Some(seq), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        // Canonical forms only, so one place has exactly one ticket.
        if epoch.len() != 16 || !epoch.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return None;
        }
        if seq.is_empty() || seq.len() > 20 || !seq.bytes().all(|b| b.is_ascii_digit()) || seq.starts_with('0') {
            return None;
        }
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(queue, visitor, epoch, seq).verify_slice(&tag).ok()?;
        Some(Place { epoch: u64::from_str_radix(epoch, 16).ok()?, seq: seq.parse().ok()? })
    }

    /// The place of the first ticket cookie of `queue` in the request that
    /// verifies for `visitor`.
    pub fn place_in_request(&self, session: &Session, queue: &str, visitor: VisitorId) -> Option<Place> {
        let name = cookie_name(queue);
        crate::reply::cookie_values(session, &name).find_map(|t| self.verify(queue, visitor, t))
    }
}

/// The `Set-Cookie` value carrying `ticket` for `queue`.
pub fn set_cookie(queue: &str, ticket: &str, secure: bool) -> String {
    let mut c = format!(
        "{}={ticket}; Path=/wr/{queue}; HttpOnly; SameSite=Lax; Max-Age={COOKIE_MAX_AGE_SECS}",
        cookie_name(queue)
    );
    if secure {
        c.push_str("; Secure");
    }
    c
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn tickets() -> Tickets {
        Tickets::new(&CookieSigner::new(b"test secret"))
    }

    #[test]
    fn a_ticket_verifies_only_for_its_visitor_and_queue() {
        let t = tickets();
        let (a, b) = (VisitorId::random(), VisitorId::random());
        let place = Place { epoch: 0x0123_4567_89ab_cdef, seq: 1_764_612_345_123_456 };
        let ticket = t.sign("sale", a, place);
        assert_eq!(t.verify("sale", a, &ticket), Some(place));
        assert_eq!(t.verify("sale", b, &ticket), None, "another visitor");
        assert_eq!(t.verify("other", a, &ticket), None, "another queue");
        let other_key = Tickets::new(&CookieSigner::new(b"another deployment"));
        assert_eq!(other_key.verify("sale", a, &ticket), None, "another deployment's key");
        // Any change to a signed field breaks it.
        let earlier = ticket.replacen(".1764612345123456.", ".1764612345123455.", 1);
        assert_eq!(t.verify("sale", a, &earlier), None);
        let leading_zero = ticket.replacen(".1764612345123456.", ".01764612345123456.", 1);
        assert_eq!(t.verify("sale", a, &leading_zero), None);
        assert_eq!(t.verify("sale", a, &ticket.to_uppercase()), None);
    }

    proptest! {
        /// Whatever a client sends as a ticket: no panic, and nothing but
        /// a ticket we signed verifies.
        #[test]
        fn arbitrary_tickets_never_verify(s in "\\PC{0,120}", v in "v1\\.[0-9a-f]{16}\\.[1-9][0-9]{0,19}\\.[A-Za-z0-9_-]{0,50}") {
            let t = tickets();
            let visitor = VisitorId::from_bytes([7; 16]);
            prop_assert_eq!(t.verify("q", visitor, &s), None);
            prop_assert_eq!(t.verify("q", visitor, &v), None);
        }

        /// Every place round-trips.
        #[test]
        fn signed_places_round_trip(epoch in 1u64.., seq in 1u64..=u64::MAX) {
            let t = tickets();
            let visitor = VisitorId::from_bytes([9; 16]);
            let place = Place { epoch, seq };
            prop_assert_eq!(t.verify("q", visitor, &t.sign("q", visitor, place)), Some(place));
        }
    }
}
