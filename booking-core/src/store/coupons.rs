//! Coupon campaigns and their codes.
//!
//! A campaign is created with exactly `stock` code rows. Claiming sets
//! `visitor_id` on one free row, so the number of claims can never exceed the
//! stock (there is nothing else to take), and the unique constraint
//! `coupon_codes_campaign_visitor_key` allows one code per visitor. On
//! PostgreSQL the free row is picked with `FOR UPDATE SKIP LOCKED`, so
//! concurrent claimers take different rows instead of queueing on one;
//! SQLite serializes writers on its single connection anyway.

use super::{Backend, Store, StoreError, on_reader, on_writer};
use crate::clock::now_ms;

/// A coupon campaign.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CampaignRow {
    /// Campaign id.
    pub id: i64,
    /// The event it belongs to (and whose queue may claim).
    pub event_id: i64,
    /// Display name.
    pub name: String,
    /// Codes available in total.
    pub stock: i64,
    /// Claims accepted from (epoch ms, inclusive).
    pub opens_at: i64,
    /// Claims accepted until (epoch ms, exclusive).
    pub closes_at: i64,
}

/// A claimed code.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimRow {
    /// The claim id (the code row).
    pub claim_id: i64,
    /// Its campaign.
    pub campaign_id: i64,
    /// The coupon code.
    pub code: String,
    /// When it was claimed, epoch ms.
    pub claimed_at: i64,
}

/// A campaign to create.
#[derive(Debug, Clone)]
pub struct NewCampaign {
    /// Its event.
    pub event_id: i64,
    /// Display name.
    pub name: String,
    /// Number of codes.
    pub stock: i64,
    /// Window start, epoch ms.
    pub opens_at: i64,
    /// Window end, epoch ms.
    pub closes_at: i64,
}

/// Result of one claim attempt against the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimAttempt {
    /// A code was committed to the visitor.
    Claimed(ClaimRow),
    /// No free code is left (committed state).
    SoldOut,
    /// Every free code is locked by claims still in flight; try again shortly.
    Busy,
    /// The claim's deadline passed before a code was taken; nothing was written.
    TooLate,
}

const CLAIM_COLUMNS: &str = "id AS claim_id, campaign_id, code, claimed_at";

/// The database's clock in epoch ms: a claim's deadline is checked by the
/// clock of the database that commits it, not by the claimant's.
const PG_NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";
const SQLITE_NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";

fn claim_sql(lock: &str, now_ms: &str) -> String {
    format!(
        "UPDATE coupon_codes SET visitor_id = $2, claimed_at = $3 \
         WHERE id = (SELECT id FROM coupon_codes WHERE campaign_id = $1 AND visitor_id IS NULL AND slot >= $4 \
                     AND $5 > {now_ms} ORDER BY slot LIMIT 1 {lock}) \
         RETURNING id AS claim_id, campaign_id, code, claimed_at"
    )
}

/// Pairs the free codes found (in slot order, skipping rows other claims have
/// locked) with the visitors of the batch whose deadline ($6) has not passed,
/// by position.
const PG_CLAIM_BATCH: &str = "WITH want AS (\
        SELECT v, row_number() OVER (ORDER BY ord) AS ord \
        FROM unnest($2::text[], $6::bigint[]) WITH ORDINALITY AS w(v, d, ord) \
        WHERE d > (extract(epoch FROM clock_timestamp()) * 1000)::bigint), \
     free AS (\
        SELECT id, row_number() OVER (ORDER BY slot) AS ord FROM (\
            SELECT id, slot FROM coupon_codes WHERE campaign_id = $1 AND visitor_id IS NULL AND slot >= $4 \
            ORDER BY slot LIMIT $5 FOR UPDATE SKIP LOCKED) AS f) \
     UPDATE coupon_codes AS c SET visitor_id = want.v, claimed_at = $3 \
     FROM free JOIN want USING (ord) WHERE c.id = free.id \
     RETURNING c.id AS claim_id, c.campaign_id, c.code, c.claimed_at, c.visitor_id";

#[derive(sqlx::FromRow)]
struct BatchRow {
    claim_id: i64,
    campaign_id: i64,
    code: String,
    claimed_at: i64,
    visitor_id: String,
}

impl Store {
    /// Create a campaign and its `stock` codes in one transaction. Codes are
    /// `C<campaign>-<7-digit sequence>-<6 random hex>`: unique by construction.
    pub async fn create_campaign(&self, c: &NewCampaign, now: i64) -> Result<CampaignRow, StoreError> {
        self.timed("create_campaign", async {
            match &self.backend {
                Backend::Postgres(pool) => {
                    let mut tx = pool.begin().await?;
                    let row: CampaignRow = insert_campaign(c, now).fetch_one(&mut *tx).await?;
                    sqlx::query(
                        "INSERT INTO coupon_codes (campaign_id, slot, code) \
                         SELECT $1::bigint, g, 'C' || ($1::bigint)::text || '-' || lpad(g::text, 7, '0') || '-' \
                                || upper(substr(md5(random()::text), 1, 6)) \
                         FROM generate_series(1, $2::bigint) AS g",
                    )
                    .bind(row.id)
                    .bind(c.stock)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(row)
                }
                Backend::Sqlite { writer, .. } => {
                    let mut tx = writer.begin().await?;
                    let row: CampaignRow = insert_campaign(c, now).fetch_one(&mut *tx).await?;
                    sqlx::query(
                        "WITH RECURSIVE n(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM n WHERE v < $2) \
                         INSERT INTO coupon_codes (campaign_id, slot, code) \
                         SELECT $1, v, 'C' || $1 || '-' || printf('%07d', v) || '-' || upper(hex(randomblob(3))) FROM n",
                    )
                    .bind(row.id)
                    .bind(c.stock)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(row)
                }
            }
        })
        .await
    }

    /// A campaign by id.
    pub async fn campaign(&self, id: i64) -> Result<Option<CampaignRow>, StoreError> {
        on_reader!(self, "get_campaign", |pool| {
            sqlx::query_as("SELECT id, event_id, name, stock, opens_at, closes_at FROM coupon_campaigns WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
        })
    }

    /// Take one free code for `visitor_id`, searching from `start_slot` (then
    /// from the first slot), if the database's clock is still before
    /// `commit_by` (epoch ms): a single autocommitted statement, so a `Claimed`
    /// result is durable when this returns. A second claim by the same visitor
    /// fails with `Constraint("coupon_codes_campaign_visitor_key")`.
    pub async fn claim_code(
        &self,
        campaign_id: i64,
        visitor_id: &str,
        now: i64,
        start_slot: i64,
        commit_by: i64,
    ) -> Result<ClaimAttempt, StoreError> {
        let sql = match &self.backend {
            Backend::Postgres(_) => claim_sql("FOR UPDATE SKIP LOCKED", PG_NOW_MS),
            Backend::Sqlite { .. } => claim_sql("", SQLITE_NOW_MS),
        };
        for start in [start_slot, 1] {
            if now_ms() >= commit_by {
                return Ok(ClaimAttempt::TooLate);
            }
            let claimed: Option<ClaimRow> = on_writer!(self, "claim", |pool| {
                sqlx::query_as(&sql)
                    .bind(campaign_id)
                    .bind(visitor_id)
                    .bind(now)
                    .bind(start)
                    .bind(commit_by)
                    .fetch_optional(pool)
                    .await
            })?;
            if let Some(row) = claimed {
                return Ok(ClaimAttempt::Claimed(row));
            }
            if start <= 1 {
                break;
            }
        }
        if now_ms() >= commit_by {
            return Ok(ClaimAttempt::TooLate);
        }
        // SKIP LOCKED also skips rows that in-flight claims have locked; one of
        // those may still roll back. Only committed state may say "sold out".
        Ok(if self.free_codes(campaign_id).await? == 0 { ClaimAttempt::SoldOut } else { ClaimAttempt::Busy })
    }

    /// PostgreSQL only: claim one code for each of `visitors` in a single
    /// statement (one commit for the whole batch), searching from
    /// `start_slot`, each only while the database's clock is before its
    /// entry in `commit_by`. Returns (visitor, claim) for those who got a
    /// code; visitors left out (fewer free codes past `start_slot`, deadline
    /// passed) must claim one by one. If any visitor already holds a code the
    /// whole statement fails with the one-per-visitor constraint and nothing
    /// is claimed.
    pub async fn claim_codes_batch(
        &self,
        campaign_id: i64,
        visitors: &[String],
        commit_by: &[i64],
        now: i64,
        start_slot: i64,
    ) -> Result<Vec<(String, ClaimRow)>, StoreError> {
        let Backend::Postgres(pool) = &self.backend else { return Ok(Vec::new()) };
        let rows: Vec<BatchRow> = self
            .timed("claim_batch", async {
                sqlx::query_as(PG_CLAIM_BATCH)
                    .bind(campaign_id)
                    .bind(visitors)
                    .bind(now)
                    .bind(start_slot)
                    .bind(i64::try_from(visitors.len()).unwrap_or(i64::MAX))
                    .bind(commit_by)
                    .fetch_all(pool)
                    .await
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let claim = ClaimRow {
                    claim_id: r.claim_id,
                    campaign_id: r.campaign_id,
                    code: r.code,
                    claimed_at: r.claimed_at,
                };
                (r.visitor_id, claim)
            })
            .collect())
    }

    /// Which of `visitors` hold a code of the campaign (committed state).
    pub async fn claimed_among(&self, campaign_id: i64, visitors: &[String]) -> Result<Vec<String>, StoreError> {
        match &self.backend {
            Backend::Postgres(pool) => {
                self.timed("claimed_among", async {
                    sqlx::query_scalar(
                        "SELECT visitor_id FROM coupon_codes WHERE campaign_id = $1 AND visitor_id = ANY($2)",
                    )
                    .bind(campaign_id)
                    .bind(visitors)
                    .fetch_all(pool)
                    .await
                })
                .await
            }
            Backend::Sqlite { writer, .. } => {
                let list =
                    serde_json::to_string(visitors).map_err(|e| StoreError::Other(sqlx::Error::Encode(Box::new(e))))?;
                self.timed("claimed_among", async {
                    sqlx::query_scalar(
                        "SELECT visitor_id FROM coupon_codes WHERE campaign_id = $1 \
                         AND visitor_id IN (SELECT value FROM json_each($2))",
                    )
                    .bind(campaign_id)
                    .bind(list)
                    .fetch_all(writer)
                    .await
                })
                .await
            }
        }
    }

    /// Campaigns closing after `after` (epoch ms): the ones the reconciler looks at.
    pub async fn campaigns_closing_after(&self, after: i64) -> Result<Vec<CampaignRow>, StoreError> {
        on_reader!(self, "campaigns", |pool| {
            sqlx::query_as(
                "SELECT id, event_id, name, stock, opens_at, closes_at FROM coupon_campaigns WHERE closes_at > $1 ORDER BY id",
            )
            .bind(after)
            .fetch_all(pool)
            .await
        })
    }

    /// The campaigns of one event (the event page lists them: there is no listing route).
    pub async fn campaigns_of_event(&self, event_id: i64) -> Result<Vec<CampaignRow>, StoreError> {
        on_reader!(self, "page_campaigns", |pool| {
            sqlx::query_as(
                "SELECT id, event_id, name, stock, opens_at, closes_at FROM coupon_campaigns WHERE event_id = $1 ORDER BY id",
            )
            .bind(event_id)
            .fetch_all(pool)
            .await
        })
    }

    /// Codes not yet claimed (committed state).
    pub async fn free_codes(&self, campaign_id: i64) -> Result<i64, StoreError> {
        on_writer!(self, "free_codes", |pool| {
            sqlx::query_scalar("SELECT count(*) FROM coupon_codes WHERE campaign_id = $1 AND visitor_id IS NULL")
                .bind(campaign_id)
                .fetch_one(pool)
                .await
        })
    }

    /// Visitors who hold a code of the campaign (committed state).
    pub async fn claimants(&self, campaign_id: i64) -> Result<Vec<String>, StoreError> {
        on_writer!(self, "claimants", |pool| {
            sqlx::query_scalar("SELECT visitor_id FROM coupon_codes WHERE campaign_id = $1 AND visitor_id IS NOT NULL")
                .bind(campaign_id)
                .fetch_all(pool)
                .await
        })
    }

    /// The visitor's claim in a campaign, if any.
    pub async fn claim_of(&self, campaign_id: i64, visitor_id: &str) -> Result<Option<ClaimRow>, StoreError> {
        let sql = format!("SELECT {CLAIM_COLUMNS} FROM coupon_codes WHERE campaign_id = $1 AND visitor_id = $2");
        on_writer!(self, "get_claim", |pool| {
            sqlx::query_as(&sql).bind(campaign_id).bind(visitor_id).fetch_optional(pool).await
        })
    }

    /// Every code the visitor holds, oldest first.
    pub async fn claims_of(&self, visitor_id: &str) -> Result<Vec<ClaimRow>, StoreError> {
        let sql = format!("SELECT {CLAIM_COLUMNS} FROM coupon_codes WHERE visitor_id = $1 ORDER BY claimed_at, id");
        on_reader!(self, "my_coupons", |pool| sqlx::query_as(&sql).bind(visitor_id).fetch_all(pool).await)
    }
}

fn insert_campaign<'q, DB: sqlx::Database>(
    c: &'q NewCampaign,
    now: i64,
) -> sqlx::query::QueryAs<'q, DB, CampaignRow, <DB as sqlx::Database>::Arguments<'q>>
where
    CampaignRow: for<'r> sqlx::FromRow<'r, DB::Row>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    sqlx::query_as(
        "INSERT INTO coupon_campaigns (event_id, name, stock, opens_at, closes_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, event_id, name, stock, opens_at, closes_at",
    )
    .bind(c.event_id)
    .bind(c.name.as_str())
    .bind(c.stock)
    .bind(c.opens_at)
    .bind(c.closes_at)
    .bind(now)
}
