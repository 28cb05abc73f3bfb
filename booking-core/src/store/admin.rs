//! Operator statistics.

use super::{Store, StoreError, on_reader};

/// Counts across the whole database.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Stats {
    /// Events.
    pub events: i64,
    /// Seats across all events.
    pub seats: i64,
    /// Holds live right now (held and not yet expired).
    pub active_holds: i64,
    /// Confirmed bookings.
    pub bookings: i64,
    /// Coupon codes claimed.
    pub claims: i64,
    /// Per campaign.
    pub campaigns: Vec<CampaignStats>,
}

/// One campaign's stock.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct CampaignStats {
    /// Campaign id.
    pub id: i64,
    /// Its event.
    pub event_id: i64,
    /// Codes in total.
    pub stock: i64,
    /// Codes claimed.
    pub claimed: i64,
    /// Codes left.
    pub stock_left: i64,
    /// The claim gate's counts (free + reserved + issued == stock), when it
    /// has been built; read after the database columns.
    #[sqlx(skip)]
    pub gate: Option<GateCounts>,
}

/// What the claim gate (`crate::coupons::gate`) counts for one campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct GateCounts {
    /// The campaign's stock.
    pub total: i64,
    /// Units nobody holds or reserves.
    pub free: i64,
    /// Units reserved by claims in flight (leases).
    pub reserved: i64,
    /// Units the gate knows are claimed.
    pub issued: i64,
}

/// What is left to sell, for the waiting room's sold-out check
/// (`GET /admin/stock`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Stock {
    /// Per event: seats neither booked nor under a live hold.
    pub events: Vec<EventStock>,
    /// Per open campaign: codes nobody has claimed.
    pub campaigns: Vec<CampaignStock>,
}

/// One event's free seats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct EventStock {
    /// Event id.
    pub id: i64,
    /// Seats available now (an expired hold's seat counts: it is free to take).
    pub free_seats: i64,
}

/// One campaign's codes left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct CampaignStock {
    /// Campaign id.
    pub id: i64,
    /// Codes not claimed yet.
    pub codes_left: i64,
}

impl GateCounts {
    /// free + reserved + issued == total.
    pub fn conserved(&self) -> bool {
        self.free + self.reserved + self.issued == self.total
    }
}

impl Store {
    /// Counts for `/admin/stats`.
    pub async fn stats(&self, now: i64) -> Result<Stats, StoreError> {
        on_reader!(self, "stats", |pool| {
            let (events, seats, active_holds, bookings, claims): (i64, i64, i64, i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM seats), \
                        (SELECT count(*) FROM seats WHERE status = 'HELD' AND hold_expires_at > $1), \
                        (SELECT count(*) FROM bookings), \
                        (SELECT count(*) FROM coupon_codes WHERE visitor_id IS NOT NULL)",
            )
            .bind(now)
            .fetch_one(pool)
            .await?;
            let campaigns = sqlx::query_as(
                "SELECT c.id, c.event_id, c.stock, \
                        (SELECT count(*) FROM coupon_codes k WHERE k.campaign_id = c.id AND k.visitor_id IS NOT NULL) \
                          AS claimed, \
                        (SELECT count(*) FROM coupon_codes k WHERE k.campaign_id = c.id AND k.visitor_id IS NULL) \
                          AS stock_left \
                 FROM coupon_campaigns c ORDER BY c.id",
            )
            .fetch_all(pool)
            .await?;
            Ok(Stats { events, seats, active_holds, bookings, claims, campaigns })
        })
    }

    /// Free seats per event and codes left per open campaign at `now`.
    /// Seats by event walk the seats' primary key; codes as `stock_left`.
    pub async fn stock(&self, now: i64) -> Result<Stock, StoreError> {
        let events: Vec<EventStock> = on_reader!(self, "stock_events", |pool| {
            sqlx::query_as(
                "SELECT event_id AS id, \
                        SUM(CASE WHEN status = 'AVAILABLE' OR (status = 'HELD' AND hold_expires_at <= $1) \
                            THEN 1 ELSE 0 END) AS free_seats \
                 FROM seats GROUP BY event_id ORDER BY event_id",
            )
            .bind(now)
            .fetch_all(pool)
            .await
        })?;
        let campaigns = self
            .stock_left(now)
            .await?
            .into_iter()
            .map(|(id, _, codes_left)| CampaignStock { id, codes_left })
            .collect();
        Ok(Stock { events, campaigns })
    }

    /// `(campaign id, stock, codes left)` of every campaign not closed at
    /// `now`, for the `booking_core_coupon_stock…` gauges. Counting free codes
    /// walks the partial index `coupon_codes_free_idx`.
    pub async fn stock_left(&self, now: i64) -> Result<Vec<(i64, i64, i64)>, StoreError> {
        on_reader!(self, "stock_left", |pool| {
            sqlx::query_as(
                "SELECT c.id, c.stock, \
                        (SELECT count(*) FROM coupon_codes k WHERE k.campaign_id = c.id AND k.visitor_id IS NULL) \
                 FROM coupon_campaigns c WHERE c.closes_at > $1 ORDER BY c.id",
            )
            .bind(now)
            .fetch_all(pool)
            .await
        })
    }
}
