//! The booking core's database, read after the run (PostgreSQL or SQLite).
//!
//! Only the rows of the sale's event and campaign are read, with the same
//! SQL on both backends. This couples the audit to the booking core's schema
//! (`booking-core/migrations/`) on purpose: the database is the record of
//! what was really granted, independent of what the service answered.

use std::str::FromStr;

use anyhow::{Context, Result};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

/// A hold row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HoldRow {
    /// Hold id.
    pub id: String,
    /// Seat.
    pub seat_id: i64,
    /// Holder.
    pub visitor_id: String,
    /// Created (epoch ms).
    pub created_at: i64,
    /// Ends (epoch ms).
    pub expires_at: i64,
    /// ACTIVE, CONFIRMED, RELEASED or EXPIRED.
    pub state: String,
}

/// A booking row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BookingRow {
    /// Seat.
    pub seat_id: i64,
    /// Hold it came from.
    pub hold_id: String,
    /// Booker.
    pub visitor_id: String,
}

/// A claimed coupon code.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimRow {
    /// Claim id (the code row's id).
    pub id: i64,
    /// Claimer.
    pub visitor_id: String,
    /// The code.
    pub code: String,
}

/// What the database holds for the sale.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbView {
    /// Holds on the event's seats.
    pub holds: Vec<HoldRow>,
    /// Bookings of the event.
    pub bookings: Vec<BookingRow>,
    /// Claimed codes of the campaign.
    pub claims: Vec<ClaimRow>,
    /// The campaign's stock.
    pub stock: i64,
}

macro_rules! read_all {
    ($pool:expr, $event:expr, $campaign:expr) => {{
        let pool = &$pool;
        let holds = sqlx::query_as::<_, HoldRow>(
            "SELECT id, seat_id, visitor_id, created_at, expires_at, state FROM holds WHERE event_id = $1",
        )
        .bind($event)
        .fetch_all(pool)
        .await
        .context("reading holds")?;
        let bookings =
            sqlx::query_as::<_, BookingRow>("SELECT seat_id, hold_id, visitor_id FROM bookings WHERE event_id = $1")
                .bind($event)
                .fetch_all(pool)
                .await
                .context("reading bookings")?;
        let claims = sqlx::query_as::<_, ClaimRow>(
            "SELECT id, visitor_id, code FROM coupon_codes WHERE campaign_id = $1 AND visitor_id IS NOT NULL",
        )
        .bind($campaign)
        .fetch_all(pool)
        .await
        .context("reading coupon codes")?;
        let stock: i64 = sqlx::query_scalar("SELECT stock FROM coupon_campaigns WHERE id = $1")
            .bind($campaign)
            .fetch_one(pool)
            .await
            .with_context(|| format!("reading campaign {}", $campaign))?;
        DbView { holds, bookings, claims, stock }
    }};
}

/// Read the sale's rows from `url` (`postgres://…` or `sqlite://…`).
pub async fn read(url: &str, event: i64, campaign: i64) -> Result<DbView> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let pool = PgPoolOptions::new().max_connections(1).connect(url).await.context("connecting to PostgreSQL")?;
        let view = read_all!(pool, event, campaign);
        pool.close().await;
        Ok(view)
    } else if url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(url).context("SQLite URL")?.read_only(true);
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.context("opening SQLite")?;
        let view = read_all!(pool, event, campaign);
        pool.close().await;
        Ok(view)
    } else {
        anyhow::bail!("--database-url must start with postgres:// or sqlite:, got {url:?}")
    }
}
