//! What a queue does while its store is down: `on_store_down` per queue.
//!
//! - `closed` (the default): joins and polls answer 503 with `Retry-After`;
//!   tokens already issued keep working (the gate needs no store); nobody
//!   new gets in. Right for a sale, where fairness is the product.
//! - `open`: visitors are let through without the line, at most the queue's
//!   own release rate (N per tick T, a burst of N) **per instance**, each
//!   with a short session (`store_down_session`). Right for a site whose
//!   queue only guards against surges: a Redis outage in a quiet hour must
//!   not take it down. A join answers READY with a token; a request to a
//!   protected path without a valid token gets one minted and is passed on
//!   with it (`Authorization: Bearer`), the token also set as `wr_entry`.
//!
//! "Down" means the circuit breaker in front of the store is open (a few
//! calls in a row failed, see `store::breaker`) or the store was never
//! reached: a single slow call does not open the door. The mode of each
//! queue is exported as `waiting_room_queue_mode{queue,mode}`.

use std::time::Instant;

use shared::visitor::VisitorId;

use crate::clock::now_ms;
use crate::config::StoreDownPolicy;
use crate::metrics::METRICS;
use crate::queues::Queue;
use crate::state::State;
use crate::store::Standing;

/// The modes a queue can be in.
pub const MODES: [&str; 3] = ["normal", "closed", "open"];

/// Is the store known to be down (or not reached yet)?
pub fn store_down(state: &State) -> bool {
    state.store().is_none_or(|s| s.known_down())
}

/// The queue's mode now, exported as a gauge.
pub fn observe(state: &State, queue: &Queue) -> &'static str {
    let mode = match (store_down(state), queue.def().config.on_store_down) {
        (false, _) => "normal",
        (true, StoreDownPolicy::Closed) => "closed",
        (true, StoreDownPolicy::Open) => "open",
    };
    for m in MODES {
        METRICS.queue_mode.with_label_values(&[queue.id(), m]).set(i64::from(m == mode));
    }
    mode
}

/// Let `visitor` in without the store, if the store is down, the queue is
/// `open` and this instance's allowance has room: the standing of a short
/// session starting now.
pub fn let_in(state: &State, queue: &Queue) -> Option<Standing> {
    if queue.def().config.on_store_down != StoreDownPolicy::Open || observe(state, queue) != "open" {
        return None;
    }
    let admission = queue.admission();
    let burst = admission.release_per_tick.max(1) as f64;
    let rate = burst / admission.tick.as_secs_f64().max(0.001);
    if !queue.open_door.take(rate, burst, Instant::now()) {
        return None;
    }
    METRICS.admissions.with_label_values(&[queue.id(), "store_down"]).inc();
    let now = now_ms();
    let session = i64::try_from(queue.def().config.store_down_session.as_millis()).unwrap_or(i64::MAX);
    Some(Standing::Ready { admitted_at_ms: now, expires_at_ms: now.saturating_add(session) })
}

/// A token for `visitor` let in by [`let_in`]: (token, its `Set-Cookie`).
pub fn token_for(state: &State, queue: &Queue, visitor: VisitorId, standing: Standing) -> Option<(String, String)> {
    let issued = crate::tokens::for_standing(&state.keys.signer, queue.id(), visitor, standing, now_ms())?;
    let cookie =
        crate::reply::set_cookie(shared::ENTRY_COOKIE, &issued.token, Some(issued.max_age), state.cookie_secure);
    Some((issued.token, cookie))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::queues::OpenDoor;

    #[test]
    fn the_door_lets_a_burst_through_then_the_rate() {
        let door = OpenDoor::default();
        let t0 = Instant::now();
        let through = (0..10).filter(|_| door.take(2.0, 3.0, t0)).count();
        assert_eq!(through, 3, "the burst");
        assert!(!door.take(2.0, 3.0, t0 + Duration::from_millis(400)), "not yet a whole token");
        assert!(door.take(2.0, 3.0, t0 + Duration::from_millis(600)));
        assert!(!door.take(2.0, 3.0, t0 + Duration::from_millis(600)));
        // A long quiet spell refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| door.take(2.0, 3.0, later)).count(), 3);
    }
}
