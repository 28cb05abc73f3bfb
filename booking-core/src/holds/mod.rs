//! Seat holds, confirmation into bookings, release, and the expiry sweeper.
//!
//! A hold is one conditional statement ([`crate::store::holds`]): it wins only
//! on a seat that is available or whose hold has expired, so an expired hold
//! frees its seat for the next taker immediately, whether or not the sweeper
//! has run. Confirming checks expiry in its own conditional `UPDATE`, so a
//! hold that expired (or was taken over) cannot become a booking → 410.
//!
//! Hold ids are `<event id>-<32 hex>`: the event is readable from the id, so
//! confirm and release check the token's queue before any database work.
//!
//! A hold never outlives the session it belongs to: it ends at the hold period
//! or at the entry token's `exp`, whichever comes first, so a seat held late
//! in a session is free for the next visitor the moment that session ends
//! (the visitor could not have confirmed it anyway). A visitor may have at
//! most `holds.max_per_visitor` live holds and bookings per event, enforced by
//! the hold statement itself.

mod batch;

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde::{Deserialize, Serialize};
use shared::problem::Problem;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::batch::Batched;
use crate::catalogue::Catalogue;
use crate::clock::{self, now_ms};
use crate::config::HoldsConfig;
use crate::metrics::Metrics;
use crate::problem::ApiError;
use crate::store::holds::NewHold;
use crate::store::{BookingRow, HoldRow, Store, StoreError};

/// Hold errors.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    /// → 404: the seat is not a seat of this event.
    #[error("event {event_id} has no seat {seat_id}; GET /api/events/{event_id}/seats lists them")]
    NoSeat {
        /// The event.
        event_id: i64,
        /// The seat asked for.
        seat_id: i64,
    },
    /// → 409: someone else holds the seat, or it is booked.
    #[error("seat {seat_id} is {state}; pick another seat")]
    SeatTaken {
        /// The seat.
        seat_id: i64,
        /// `held by another visitor` or `already booked`.
        state: &'static str,
    },
    /// → 409: the caller has reached `holds.max_per_visitor` on this event.
    #[error(
        "you already hold or booked {limit} seats of event {event_id}, the most one visitor may; \
         confirm or release a hold first"
    )]
    LimitReached {
        /// The event.
        event_id: i64,
        /// `holds.max_per_visitor`.
        limit: i64,
    },
    /// → 401: the session ends before a hold could start.
    #[error("your session has ended, so no seat can be held for you; join the waiting room again")]
    SessionOver,
    /// → 409: the caller already holds this seat.
    #[error("you already hold seat {seat_id} (hold {hold_id}); confirm it or release it")]
    AlreadyYours {
        /// The seat.
        seat_id: i64,
        /// The caller's live hold.
        hold_id: String,
    },
    /// → 404: no such hold, or not the caller's.
    #[error("you have no hold {0}")]
    NoHold(String),
    /// → 410: the hold ran out before it was confirmed.
    #[error("hold {0} has expired; hold the seat again if it is still available")]
    Expired(String),
    /// → 410: the hold was released.
    #[error("hold {0} was released; hold the seat again if it is still available")]
    Released(String),
    /// → 409: a confirmed hold cannot be released.
    #[error("hold {0} is already confirmed as a booking and cannot be released")]
    Confirmed(String),
    /// → 500/503.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError for HoldError {
    fn status(&self) -> StatusCode {
        match self {
            HoldError::NoSeat { .. } | HoldError::NoHold(_) => StatusCode::NOT_FOUND,
            HoldError::SeatTaken { .. }
            | HoldError::AlreadyYours { .. }
            | HoldError::Confirmed(_)
            | HoldError::LimitReached { .. } => StatusCode::CONFLICT,
            HoldError::SessionOver => StatusCode::UNAUTHORIZED,
            HoldError::Expired(_) | HoldError::Released(_) => StatusCode::GONE,
            // A double booking reaching the database's unique constraint is a
            // conflict, not a server error.
            HoldError::Store(StoreError::Constraint(c)) if c == "bookings_seat_key" => StatusCode::CONFLICT,
            HoldError::Store(e) => e.status(),
        }
    }

    fn extend(&self, problem: Problem) -> Problem {
        match self {
            HoldError::AlreadyYours { hold_id, .. } => problem.with("hold_id", hold_id.as_str()),
            HoldError::LimitReached { limit, .. } => problem.with("limit", *limit),
            HoldError::SessionOver => problem.with("reason", "expired"),
            _ => problem,
        }
    }
}

/// A granted hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HoldView {
    /// Hold id.
    pub hold_id: String,
    /// The held seat.
    pub seat_id: i64,
    /// Its event.
    pub event_id: i64,
    /// When the hold ends (RFC 3339): the hold period, or the end of the
    /// caller's session if that comes first.
    #[serde(with = "clock::serde_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: i64,
    /// True when the hold ends with the session, before the full hold period.
    pub ends_with_session: bool,
}

impl HoldView {
    fn new(h: &HoldRow, ends_with_session: bool) -> Self {
        HoldView {
            hold_id: h.id.clone(),
            seat_id: h.seat_id,
            event_id: h.event_id,
            expires_at: h.expires_at,
            ends_with_session,
        }
    }
}

/// A booking.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BookingView {
    /// Booking id.
    pub booking_id: i64,
    /// The hold it came from.
    pub hold_id: String,
    /// The seat.
    pub seat_id: i64,
    /// The seat label.
    pub seat_label: String,
    /// The event.
    pub event_id: i64,
    /// Price in cents.
    pub price_cents: i64,
    /// When it was booked (RFC 3339).
    #[serde(with = "clock::serde_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub booked_at: i64,
}

impl From<&BookingRow> for BookingView {
    fn from(b: &BookingRow) -> Self {
        BookingView {
            booking_id: b.id,
            hold_id: b.hold_id.clone(),
            seat_id: b.seat_id,
            seat_label: b.seat_label.clone(),
            event_id: b.event_id,
            price_cents: b.price_cents,
            booked_at: b.created_at,
        }
    }
}

/// The event a hold id belongs to, if it is well-formed.
pub fn hold_event(hold_id: &str) -> Option<i64> {
    let (event, rest) = hold_id.split_once('-')?;
    let event: i64 = event.parse().ok().filter(|e| *e > 0)?;
    (rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit())).then_some(event)
}

/// Seat holds; cheap to clone.
#[derive(Clone)]
pub struct Holds {
    store: Store,
    catalogue: Catalogue,
    metrics: Metrics,
    length_ms: i64,
    max_per_visitor: i64,
    batcher: Arc<batch::HoldBatches>,
}

impl Holds {
    /// Holds as `config` says (period, per-visitor limit).
    pub fn new(store: Store, catalogue: Catalogue, metrics: Metrics, config: &HoldsConfig) -> Holds {
        let length_ms = i64::try_from(config.length.as_millis()).unwrap_or(i64::MAX);
        let batcher = Arc::new(batch::HoldBatches::new(store.clone(), length_ms));
        Holds { store, catalogue, metrics, length_ms, max_per_visitor: config.max_per_visitor, batcher }
    }

    /// Hold `seat_id` of `event_id` for `visitor_id` until the hold period
    /// ends or `session_ends_at` (epoch ms), whichever is first.
    pub async fn hold(
        &self,
        event_id: i64,
        seat_id: i64,
        visitor_id: &str,
        session_ends_at: i64,
    ) -> Result<HoldView, HoldError> {
        // One more try when the refusal cannot be explained (a hold of the
        // visitor's ended between the attempt and the explanation).
        for _ in 0..2 {
            let hold_id = format!("{event_id}-{}", uuid::Uuid::new_v4().simple());
            let now = now_ms();
            let full_period = now.saturating_add(self.length_ms);
            let expires_at = full_period.min(session_ends_at);
            if expires_at <= now {
                return Err(HoldError::SessionOver);
            }
            let attempt = NewHold {
                event_id,
                seat_id,
                hold_id: &hold_id,
                visitor_id,
                now,
                expires_at,
                max_per_visitor: self.max_per_visitor,
            };
            let granted = match self.batcher.hold(&attempt, session_ends_at).await {
                // The batch read the clock when it ran: its end is the hold's.
                Batched::Held(expires_at) => Some(HoldRow::granted(&NewHold { expires_at, ..attempt.clone() })),
                Batched::Refused => None,
                Batched::Undecided => self.store.try_hold(&attempt).await?,
            };
            if let Some(hold) = granted {
                self.metrics.holds.inc();
                self.catalogue.seats_changed(event_id).await;
                return Ok(HoldView::new(&hold, hold.expires_at == session_ends_at));
            }
            // Lost: say why. These reads explain the refusal; they decide nothing.
            self.metrics.hold_conflicts.inc();
            if let Some(refusal) = self.explain(event_id, seat_id, visitor_id, now).await? {
                return Err(refusal);
            }
        }
        Err(HoldError::SeatTaken { seat_id, state: "held by another visitor" })
    }

    async fn explain(
        &self,
        event_id: i64,
        seat_id: i64,
        visitor_id: &str,
        now: i64,
    ) -> Result<Option<HoldError>, HoldError> {
        let seat = self.store.seat(event_id, seat_id).await?.ok_or(HoldError::NoSeat { event_id, seat_id })?;
        let live = seat.hold_expires_at.is_some_and(|t| t > now);
        Ok(Some(match (seat.status.as_str(), seat.held_by.as_deref()) {
            ("BOOKED", _) => HoldError::SeatTaken { seat_id, state: "already booked" },
            ("HELD", Some(v)) if live && v == visitor_id => {
                // Their own live hold; its id is on the seat row.
                let hold_id = self.store.seat_hold_id(seat_id).await?.unwrap_or_default();
                HoldError::AlreadyYours { seat_id, hold_id }
            }
            ("HELD", _) if live => HoldError::SeatTaken { seat_id, state: "held by another visitor" },
            _ if self.store.live_seats_of(event_id, visitor_id, now).await? >= self.max_per_visitor => {
                HoldError::LimitReached { event_id, limit: self.max_per_visitor }
            }
            _ => return Ok(None),
        }))
    }

    /// Confirm the visitor's hold into a booking. Confirming again returns the
    /// same booking.
    pub async fn confirm(&self, hold_id: &str, visitor_id: &str) -> Result<BookingView, HoldError> {
        let hold = self.own_hold(hold_id, visitor_id).await?;
        match hold.state.as_str() {
            "CONFIRMED" => {
                let booking = self.store.booking_for_hold(hold_id).await?.ok_or_else(|| no_hold(hold_id))?;
                return Ok(BookingView::from(&booking));
            }
            "RELEASED" => return Err(HoldError::Released(hold_id.to_owned())),
            _ => {}
        }
        let now = now_ms();
        if hold.expires_at <= now {
            return Err(HoldError::Expired(hold_id.to_owned()));
        }
        match self.store.confirm(&hold, now).await? {
            Some(booking) => {
                self.metrics.confirms.inc();
                self.catalogue.seats_changed(hold.event_id).await;
                Ok(BookingView::from(&booking))
            }
            // Expired (or released) between the read and the update.
            None => Err(HoldError::Expired(hold_id.to_owned())),
        }
    }

    /// Release the visitor's hold. Releasing an expired or released hold is a
    /// no-op (DELETE is idempotent); a confirmed one is a conflict.
    pub async fn release(&self, hold_id: &str, visitor_id: &str) -> Result<(), HoldError> {
        let hold = self.own_hold(hold_id, visitor_id).await?;
        if hold.state == "CONFIRMED" {
            return Err(HoldError::Confirmed(hold_id.to_owned()));
        }
        if self.store.release(hold_id).await? {
            self.metrics.releases.inc();
            self.catalogue.seats_changed(hold.event_id).await;
        }
        Ok(())
    }

    async fn own_hold(&self, hold_id: &str, visitor_id: &str) -> Result<HoldRow, HoldError> {
        match self.store.hold(hold_id).await? {
            Some(h) if h.visitor_id == visitor_id => Ok(h),
            _ => Err(no_hold(hold_id)),
        }
    }

    /// Return expired holds' seats to available and refresh their seat maps.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let mut events = self.store.sweep_expired(now_ms()).await?;
        let freed = events.len();
        self.metrics.expiries.inc_by(freed as u64);
        events.sort_unstable();
        events.dedup();
        for event_id in events {
            self.catalogue.seats_changed(event_id).await;
        }
        Ok(freed)
    }

    /// Run [`Holds::sweep`] every `interval` until `shutdown` flips.
    pub fn spawn_sweeper(self, interval: Duration, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        crate::tasks::every(interval, false, shutdown, move || {
            let holds = self.clone();
            async move {
                if let Err(e) = holds.sweep().await {
                    tracing::warn!(error = %e, "hold sweep failed; retrying next tick");
                }
            }
        })
    }
}

pub(crate) fn no_hold(hold_id: &str) -> HoldError {
    HoldError::NoHold(hold_id.chars().take(100).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_ids_carry_their_event() {
        assert_eq!(hold_event(&format!("42-{}", "a".repeat(32))), Some(42));
        assert_eq!(hold_event("42-short"), None);
        assert_eq!(hold_event(&format!("x-{}", "a".repeat(32))), None);
        assert_eq!(hold_event(&format!("0-{}", "a".repeat(32))), None);
        assert_eq!(hold_event("nothing"), None);
    }
}
