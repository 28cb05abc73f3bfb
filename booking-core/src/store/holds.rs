//! Seat holds and bookings.
//!
//! The hold is decided by one conditional `UPDATE` on the seat row: it matches
//! only a seat that is `AVAILABLE`, or `HELD` with a hold that has already
//! expired. Concurrent attempts queue on the row lock and re-check the
//! condition against the winner's version of the row, so exactly one wins and
//! no application lock or read-then-write is involved.
//!
//! The same statement enforces the per-visitor limit (`holds.max_per_visitor`
//! live holds and bookings per event). On PostgreSQL it is the `take_hold`
//! function (see its migration): an advisory lock on (visitor, event), the
//! count, the conditional `UPDATE` and the hold record, all in one call.
//! SQLite, with a single writer, puts the count into the `UPDATE`'s condition
//! and runs it and the insert in one transaction.

use super::{Backend, Store, StoreError, on_reader, on_writer};
use crate::clock::now_ms;

/// A hold record.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HoldRow {
    /// `<event id>-<32 hex>`.
    pub id: String,
    /// The held seat.
    pub seat_id: i64,
    /// The seat's event.
    pub event_id: i64,
    /// Who holds it.
    pub visitor_id: String,
    /// When the hold ends, epoch ms.
    pub expires_at: i64,
    /// `ACTIVE`, `CONFIRMED`, `RELEASED` or `EXPIRED` (an `ACTIVE` hold past
    /// `expires_at` is expired too; the sweeper catches up on the label).
    pub state: String,
}

impl HoldRow {
    /// The record a granted attempt inserted: exactly the attempt.
    pub fn granted(h: &NewHold<'_>) -> HoldRow {
        HoldRow {
            id: h.hold_id.to_owned(),
            seat_id: h.seat_id,
            event_id: h.event_id,
            visitor_id: h.visitor_id.to_owned(),
            expires_at: h.expires_at,
            state: "ACTIVE".to_owned(),
        }
    }
}

/// A confirmed booking.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BookingRow {
    /// Booking id.
    pub id: i64,
    /// The hold it was confirmed from.
    pub hold_id: String,
    /// The seat.
    pub seat_id: i64,
    /// The seat's label.
    pub seat_label: String,
    /// The event.
    pub event_id: i64,
    /// Price paid, in cents.
    pub price_cents: i64,
    /// When it was confirmed, epoch ms.
    pub created_at: i64,
}

/// One of a visitor's live holds, as the event page's script needs it after
/// a reload (serialized into the page as it is).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LiveHold {
    /// The hold id.
    pub hold_id: String,
    /// The held seat.
    pub seat_id: i64,
    /// Its label.
    pub label: String,
    /// When the hold ends (RFC 3339 in the page).
    #[serde(with = "crate::clock::serde_ms")]
    pub expires_at: i64,
}

/// A hold to try.
#[derive(Debug, Clone)]
pub struct NewHold<'a> {
    /// The event in the request path.
    pub event_id: i64,
    /// The seat to hold.
    pub seat_id: i64,
    /// Id for the new hold.
    pub hold_id: &'a str,
    /// Who asks.
    pub visitor_id: &'a str,
    /// Now, epoch ms: holds ending at or before this are expired.
    pub now: i64,
    /// When the new hold ends.
    pub expires_at: i64,
    /// Most live holds plus bookings the visitor may have on the event.
    pub max_per_visitor: i64,
}

const PG_HOLD: &str = "SELECT take_hold($1, $2, $3, $4, $5, $6, $7)";

const PG_HOLDS: &str = "SELECT take_holds($1, $2, $3, $4, $5, $6, $7)";

/// Attempts on one event, side by side (the holds' group commit).
#[derive(Debug, Default)]
pub struct HoldBatch {
    /// The event in the requests' paths.
    pub event_id: i64,
    /// Seat asked for, per attempt.
    pub seats: Vec<i64>,
    /// Id for the new hold, per attempt.
    pub hold_ids: Vec<String>,
    /// Who asks, per attempt.
    pub visitors: Vec<String>,
    /// When each asker's session ends, epoch ms: no hold outlives it.
    pub session_ends: Vec<i64>,
    /// The hold period, ms.
    pub length_ms: i64,
    /// Most live holds plus bookings a visitor may have on the event.
    pub max_per_visitor: i64,
}

const SQLITE_HOLD_SEAT: &str = "UPDATE seats SET status = 'HELD', hold_id = $3, held_by = $4, hold_expires_at = $6 \
     WHERE id = $2 AND event_id = $1 \
       AND (status = 'AVAILABLE' OR (status = 'HELD' AND hold_expires_at <= $5)) \
       AND (SELECT count(*) FROM seats WHERE held_by = $4 AND event_id = $1 \
            AND (status = 'BOOKED' OR (status = 'HELD' AND hold_expires_at > $5))) < $7 \
     RETURNING id";

const SQLITE_HOLD_RECORD: &str = "INSERT INTO holds (id, seat_id, event_id, visitor_id, created_at, expires_at) \
     VALUES ($3, $2, $1, $4, $5, $6) \
     RETURNING id, seat_id, event_id, visitor_id, expires_at, state";

const BOOKING_SELECT: &str = "SELECT b.id, b.hold_id, b.seat_id, s.label AS seat_label, b.event_id, b.price_cents, \
     b.created_at FROM bookings b JOIN seats s ON s.id = b.seat_id";

const FREE_SEAT: &str = "status = 'AVAILABLE', hold_id = NULL, held_by = NULL, hold_expires_at = NULL";

impl Store {
    /// Try to hold a seat. `None`: the seat is taken, or is not a seat of this event.
    pub async fn try_hold(&self, h: &NewHold<'_>) -> Result<Option<HoldRow>, StoreError> {
        self.timed("hold", async {
            match &self.backend {
                Backend::Postgres(pool) => {
                    let held: bool = sqlx::query_scalar(PG_HOLD)
                        .bind(h.event_id)
                        .bind(h.seat_id)
                        .bind(h.hold_id)
                        .bind(h.visitor_id)
                        .bind(h.now)
                        .bind(h.expires_at)
                        .bind(h.max_per_visitor)
                        .fetch_one(pool)
                        .await?;
                    Ok(held.then(|| HoldRow::granted(h)))
                }
                Backend::Sqlite { writer, .. } => {
                    let mut tx = writer.begin().await?;
                    let taken: Option<i64> = sqlx::query_scalar(SQLITE_HOLD_SEAT)
                        .bind(h.event_id)
                        .bind(h.seat_id)
                        .bind(h.hold_id)
                        .bind(h.visitor_id)
                        .bind(h.now)
                        .bind(h.expires_at)
                        .bind(h.max_per_visitor)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if taken.is_none() {
                        return Ok(None);
                    }
                    let row = sqlx::query_as(SQLITE_HOLD_RECORD)
                        .bind(h.event_id)
                        .bind(h.seat_id)
                        .bind(h.hold_id)
                        .bind(h.visitor_id)
                        .bind(h.now)
                        .bind(h.expires_at)
                        .fetch_one(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(Some(row))
                }
            }
        })
        .await
    }

    /// Many holds on one event in one transaction and one commit (the
    /// `take_holds` function; PostgreSQL only): per attempt, the granted
    /// hold's end, or `None` (refused; each is decided as
    /// [`Store::try_hold`] decides it). "Now" is read once the connection is
    /// in hand, so every hold of the batch starts when its statement runs
    /// and ends a hold period later (or with its session), however long
    /// the batch waited for a connection; an attempt whose session has
    /// ended by then is refused.
    pub async fn try_holds(&self, batch: &HoldBatch) -> Result<Vec<Option<i64>>, StoreError> {
        let Backend::Postgres(pool) = &self.backend else {
            return Err(StoreError::Other(sqlx::Error::Protocol("hold batches need PostgreSQL".into())));
        };
        self.timed("hold_batch", async {
            let mut conn = pool.acquire().await?;
            let now = now_ms();
            let full = now.saturating_add(batch.length_ms);
            let expires: Vec<i64> = batch.session_ends.iter().map(|end| full.min(*end)).collect();
            let granted: Vec<bool> = sqlx::query_scalar(PG_HOLDS)
                .bind(batch.event_id)
                .bind(&batch.seats)
                .bind(&batch.hold_ids)
                .bind(&batch.visitors)
                .bind(now)
                .bind(&expires)
                .bind(batch.max_per_visitor)
                .fetch_one(&mut *conn)
                .await?;
            Ok(granted.into_iter().zip(expires).map(|(held, until)| held.then_some(until)).collect())
        })
        .await
    }

    /// One seat of an event, to explain why a hold failed.
    pub async fn seat(&self, event_id: i64, seat_id: i64) -> Result<Option<super::SeatRow>, StoreError> {
        on_reader!(self, "get_seat", |pool| {
            sqlx::query_as(
                "SELECT id, label, row_label, number, price_cents, status, held_by, hold_expires_at \
                 FROM seats WHERE id = $2 AND event_id = $1",
            )
            .bind(event_id)
            .bind(seat_id)
            .fetch_optional(pool)
            .await
        })
    }

    /// How many seats of `event_id` the visitor has booked or holds live at
    /// `now` (what the per-visitor limit counts), to explain a refused hold.
    pub async fn live_seats_of(&self, event_id: i64, visitor_id: &str, now: i64) -> Result<i64, StoreError> {
        on_writer!(self, "count_live", |pool| {
            sqlx::query_scalar(
                "SELECT count(*) FROM seats WHERE held_by = $2 AND event_id = $1 \
                 AND (status = 'BOOKED' OR (status = 'HELD' AND hold_expires_at > $3))",
            )
            .bind(event_id)
            .bind(visitor_id)
            .bind(now)
            .fetch_one(pool)
            .await
        })
    }

    /// The events on which the visitor holds a live hold at `now` (one entry per hold).
    pub async fn live_hold_events(&self, visitor_id: &str, now: i64) -> Result<Vec<i64>, StoreError> {
        on_writer!(self, "live_holds", |pool| {
            sqlx::query_scalar(
                "SELECT event_id FROM seats WHERE held_by = $1 AND status = 'HELD' AND hold_expires_at > $2",
            )
            .bind(visitor_id)
            .bind(now)
            .fetch_all(pool)
            .await
        })
    }

    /// The visitor's live holds on one event, read from the seat rows
    /// (indexed by event), not the holds table (not indexed by visitor): the
    /// seat row is what decides a hold anyway.
    pub async fn live_holds_on(&self, event_id: i64, visitor: &str, now: i64) -> Result<Vec<LiveHold>, StoreError> {
        let rows: Vec<(i64, String, Option<String>, Option<i64>)> = on_reader!(self, "page_holds", |pool| {
            sqlx::query_as(
                "SELECT id, label, hold_id, hold_expires_at FROM seats \
                 WHERE event_id = $1 AND status = 'HELD' AND held_by = $2 AND hold_expires_at > $3 ORDER BY id",
            )
            .bind(event_id)
            .bind(visitor)
            .bind(now)
            .fetch_all(pool)
            .await
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(seat_id, label, hold_id, expires_at)| {
                Some(LiveHold { hold_id: hold_id?, seat_id, label, expires_at: expires_at? })
            })
            .collect())
    }

    /// The id of the hold on a seat (held or booked), if any.
    pub async fn seat_hold_id(&self, seat_id: i64) -> Result<Option<String>, StoreError> {
        let id: Option<Option<String>> = on_reader!(self, "get_seat", |pool| {
            sqlx::query_scalar("SELECT hold_id FROM seats WHERE id = $1").bind(seat_id).fetch_optional(pool).await
        })?;
        Ok(id.flatten())
    }

    /// A hold by id.
    pub async fn hold(&self, hold_id: &str) -> Result<Option<HoldRow>, StoreError> {
        on_writer!(self, "get_hold", |pool| {
            sqlx::query_as("SELECT id, seat_id, event_id, visitor_id, expires_at, state FROM holds WHERE id = $1")
                .bind(hold_id)
                .fetch_optional(pool)
                .await
        })
    }

    /// Turn a live hold into a booking. `None`: the hold is no longer live
    /// (expired, released or taken over), checked by the conditional `UPDATE`.
    pub async fn confirm(&self, hold: &HoldRow, now: i64) -> Result<Option<BookingRow>, StoreError> {
        let select = format!("{BOOKING_SELECT} WHERE b.hold_id = $1");
        on_writer!(self, "confirm", |pool| {
            let mut tx = pool.begin().await?;
            let booked = sqlx::query(
                "UPDATE seats SET status = 'BOOKED', hold_expires_at = NULL \
                 WHERE id = $1 AND hold_id = $2 AND status = 'HELD' AND hold_expires_at > $3",
            )
            .bind(hold.seat_id)
            .bind(&hold.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if booked.rows_affected() == 0 {
                return Ok(None);
            }
            sqlx::query(
                "INSERT INTO bookings (hold_id, seat_id, event_id, visitor_id, price_cents, created_at) \
                 SELECT $1, id, event_id, held_by, price_cents, $3 FROM seats WHERE id = $2",
            )
            .bind(&hold.id)
            .bind(hold.seat_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE holds SET state = 'CONFIRMED' WHERE id = $1").bind(&hold.id).execute(&mut *tx).await?;
            let booking = sqlx::query_as(&select).bind(&hold.id).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok(Some(booking))
        })
    }

    /// The booking made from a hold, if any.
    pub async fn booking_for_hold(&self, hold_id: &str) -> Result<Option<BookingRow>, StoreError> {
        let select = format!("{BOOKING_SELECT} WHERE b.hold_id = $1");
        on_writer!(self, "get_booking", |pool| sqlx::query_as(&select).bind(hold_id).fetch_optional(pool).await)
    }

    /// Release a hold: the seat becomes available if this hold still owns it.
    /// Returns whether the seat changed.
    pub async fn release(&self, hold_id: &str) -> Result<bool, StoreError> {
        let free = format!("UPDATE seats SET {FREE_SEAT} WHERE hold_id = $1 AND status = 'HELD'");
        on_writer!(self, "release", |pool| {
            let mut tx = pool.begin().await?;
            let freed = sqlx::query(&free).bind(hold_id).execute(&mut *tx).await?.rows_affected();
            sqlx::query("UPDATE holds SET state = 'RELEASED' WHERE id = $1 AND state = 'ACTIVE'")
                .bind(hold_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(freed > 0)
        })
    }

    /// Turn every expired hold back into an available seat; returns the events
    /// whose seat maps changed (one entry per freed seat).
    pub async fn sweep_expired(&self, now: i64) -> Result<Vec<i64>, StoreError> {
        // On PostgreSQL the sweep skips seats another transaction has locked
        // (a hold batch retaking an expired seat, a confirm): it frees them on
        // its next round if they are still expired, and never waits in a lock
        // order of its own that a batch, locking seats by id, could cross.
        let free = if self.is_postgres() {
            format!(
                "UPDATE seats SET {FREE_SEAT} WHERE id IN (SELECT id FROM seats \
                 WHERE status = 'HELD' AND hold_expires_at <= $1 FOR UPDATE SKIP LOCKED) RETURNING event_id"
            )
        } else {
            format!("UPDATE seats SET {FREE_SEAT} WHERE status = 'HELD' AND hold_expires_at <= $1 RETURNING event_id")
        };
        let events: Vec<i64> =
            on_writer!(self, "sweep", |pool| sqlx::query_scalar(&free).bind(now).fetch_all(pool).await)?;
        on_writer!(self, "sweep", |pool| {
            sqlx::query("UPDATE holds SET state = 'EXPIRED' WHERE state = 'ACTIVE' AND expires_at <= $1")
                .bind(now)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(events)
    }

    /// A visitor's bookings, oldest first.
    pub async fn bookings_of(&self, visitor_id: &str) -> Result<Vec<BookingRow>, StoreError> {
        let select = format!("{BOOKING_SELECT} WHERE b.visitor_id = $1 ORDER BY b.id");
        on_reader!(self, "my_bookings", |pool| sqlx::query_as(&select).bind(visitor_id).fetch_all(pool).await)
    }
}
