//! Events and their seats.

use super::{Store, StoreError, on_reader, on_writer};

/// An event, with how many seats it has.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EventRow {
    /// Event id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Where it happens.
    pub venue: String,
    /// When it starts, epoch ms.
    pub starts_at: i64,
    /// Number of seats.
    pub seat_count: i64,
}

/// One seat as the seat map shows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SeatRow {
    /// Seat id.
    pub id: i64,
    /// `A12`: row label and number.
    pub label: String,
    /// `A`.
    pub row_label: String,
    /// `12`.
    pub number: i64,
    /// Price in cents.
    pub price_cents: i64,
    /// `AVAILABLE`, `HELD` or `BOOKED` as stored (an expired `HELD` is shown available).
    pub status: String,
    /// Visitor holding or having booked the seat.
    pub held_by: Option<String>,
    /// When the hold ends, epoch ms (while `HELD`).
    pub hold_expires_at: Option<i64>,
}

/// What an event is created with.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Display name.
    pub name: String,
    /// Venue.
    pub venue: String,
    /// Start, epoch ms.
    pub starts_at: i64,
    /// Row labels, front to back (`A`, `B`, …).
    pub rows: Vec<String>,
    /// Seats in each row, numbered from 1.
    pub seats_per_row: i64,
    /// Price of every seat, in cents.
    pub price_cents: i64,
}

const EVENT_COLUMNS: &str = "SELECT e.id, e.name, e.venue, e.starts_at, (SELECT count(*) FROM seats s WHERE s.event_id = e.id) AS seat_count \
     FROM events e";

impl Store {
    /// Create an event and its seat layout in one transaction.
    pub async fn create_event(&self, event: &NewEvent, now: i64) -> Result<EventRow, StoreError> {
        let seat_count = i64::try_from(event.rows.len()).unwrap_or(i64::MAX).saturating_mul(event.seats_per_row);
        let id = on_writer!(self, "create_event", |pool| {
            let mut tx = pool.begin().await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO events (name, venue, starts_at, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(&event.name)
            .bind(&event.venue)
            .bind(event.starts_at)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            tx.insert_seats(id, event).await?;
            tx.commit().await?;
            Ok(id)
        })?;
        Ok(EventRow {
            id,
            name: event.name.clone(),
            venue: event.venue.clone(),
            starts_at: event.starts_at,
            seat_count,
        })
    }

    /// Every event, soonest first.
    pub async fn list_events(&self) -> Result<Vec<EventRow>, StoreError> {
        let sql = format!("{EVENT_COLUMNS} ORDER BY e.starts_at, e.id");
        on_reader!(self, "list_events", |pool| sqlx::query_as(&sql).fetch_all(pool).await)
    }

    /// One event.
    pub async fn event(&self, id: i64) -> Result<Option<EventRow>, StoreError> {
        let sql = format!("{EVENT_COLUMNS} WHERE e.id = $1");
        on_reader!(self, "get_event", |pool| sqlx::query_as(&sql).bind(id).fetch_optional(pool).await)
    }

    /// The seats of an event in layout order.
    pub async fn seat_map(&self, event_id: i64) -> Result<Vec<SeatRow>, StoreError> {
        on_reader!(self, "seat_map", |pool| {
            sqlx::query_as(
                "SELECT id, label, row_label, number, price_cents, status, held_by, hold_expires_at \
                 FROM seats WHERE event_id = $1 ORDER BY id",
            )
            .bind(event_id)
            .fetch_all(pool)
            .await
        })
    }
}

/// Insert `rows × seats_per_row` seats. The backends generate the cross product
/// differently: `UNNEST` + `generate_series` on PostgreSQL, `json_each` + a
/// recursive CTE on SQLite.
trait SeatInsert {
    async fn insert_seats(&mut self, event_id: i64, event: &NewEvent) -> Result<(), sqlx::Error>;
}

impl SeatInsert for sqlx::Transaction<'_, sqlx::Postgres> {
    async fn insert_seats(&mut self, event_id: i64, event: &NewEvent) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO seats (event_id, label, row_label, number, price_cents) \
             SELECT $1, r.label || n, r.label, n, $2 \
             FROM UNNEST($3::text[]) WITH ORDINALITY AS r(label, ord) CROSS JOIN generate_series(1, $4::bigint) AS n \
             ORDER BY r.ord, n",
        )
        .bind(event_id)
        .bind(event.price_cents)
        .bind(&event.rows)
        .bind(event.seats_per_row)
        .execute(&mut **self)
        .await
        .map(|_| ())
    }
}

impl SeatInsert for sqlx::Transaction<'_, sqlx::Sqlite> {
    async fn insert_seats(&mut self, event_id: i64, event: &NewEvent) -> Result<(), sqlx::Error> {
        let rows = serde_json::to_string(&event.rows).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        sqlx::query(
            "WITH RECURSIVE n(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM n WHERE v < $4) \
             INSERT INTO seats (event_id, label, row_label, number, price_cents) \
             SELECT $1, r.value || n.v, r.value, n.v, $2 FROM json_each($3) AS r, n ORDER BY r.key, n.v",
        )
        .bind(event_id)
        .bind(event.price_cents)
        .bind(rows)
        .bind(event.seats_per_row)
        .execute(&mut **self)
        .await
        .map(|_| ())
    }
}
