//! Idempotency records, keyed by (visitor, `Idempotency-Key`).

use super::{Store, StoreError, on_writer};

/// A stored idempotency record.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct IdempotencyRecord {
    /// Hash of method, route and body of the first request.
    pub fingerprint: String,
    /// `running` or `done`.
    pub state: String,
    /// The first response's status (when done).
    pub status: Option<i64>,
    /// The first response's body (when done).
    pub body: Option<String>,
}

/// Outcome of claiming a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// This request owns the key now and must finish or abandon it.
    New,
    /// Another request used the key first.
    Existing(IdempotencyRecord),
}

impl Store {
    /// Claim `key` for a new request, or return the record already there. A
    /// `running` record older than `stale_before` (its request died with its
    /// process) is taken over.
    pub async fn idempotency_begin(
        &self,
        visitor_id: &str,
        key: &str,
        fingerprint: &str,
        now: i64,
        stale_before: i64,
    ) -> Result<Started, StoreError> {
        on_writer!(self, "idempotency_begin", |pool| {
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (visitor_id, key, fingerprint, state, created_at) \
                 VALUES ($1, $2, $3, 'running', $4) ON CONFLICT (visitor_id, key) DO NOTHING",
            )
            .bind(visitor_id)
            .bind(key)
            .bind(fingerprint)
            .bind(now)
            .execute(pool)
            .await?;
            if inserted.rows_affected() == 1 {
                return Ok(Started::New);
            }
            let taken_over = sqlx::query(
                "UPDATE idempotency_keys SET fingerprint = $3, created_at = $4 \
                 WHERE visitor_id = $1 AND key = $2 AND state = 'running' AND created_at < $5",
            )
            .bind(visitor_id)
            .bind(key)
            .bind(fingerprint)
            .bind(now)
            .bind(stale_before)
            .execute(pool)
            .await?;
            if taken_over.rows_affected() == 1 {
                return Ok(Started::New);
            }
            let record: Option<IdempotencyRecord> = sqlx::query_as(
                "SELECT fingerprint, state, status, body FROM idempotency_keys WHERE visitor_id = $1 AND key = $2",
            )
            .bind(visitor_id)
            .bind(key)
            .fetch_optional(pool)
            .await?;
            // Gone between the insert and the read: its owner abandoned it. Report
            // it as running; the client's retry will find the key free.
            Ok(Started::Existing(record.unwrap_or(IdempotencyRecord {
                fingerprint: fingerprint.to_owned(),
                state: "running".into(),
                status: None,
                body: None,
            })))
        })
    }

    /// Store the response of the request that owns `key`.
    pub async fn idempotency_finish(
        &self,
        visitor_id: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<(), StoreError> {
        on_writer!(self, "idempotency_finish", |pool| {
            sqlx::query(
                "UPDATE idempotency_keys SET state = 'done', status = $3, body = $4 WHERE visitor_id = $1 AND key = $2",
            )
            .bind(visitor_id)
            .bind(key)
            .bind(i64::from(status))
            .bind(body)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    /// Forget a key whose request failed in a way worth retrying (5xx).
    pub async fn idempotency_abandon(&self, visitor_id: &str, key: &str) -> Result<(), StoreError> {
        on_writer!(self, "idempotency_abandon", |pool| {
            sqlx::query("DELETE FROM idempotency_keys WHERE visitor_id = $1 AND key = $2 AND state = 'running'")
                .bind(visitor_id)
                .bind(key)
                .execute(pool)
                .await
                .map(|_| ())
        })
    }
}
