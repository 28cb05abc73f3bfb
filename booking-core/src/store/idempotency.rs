//! Idempotency records, keyed by (visitor, `Idempotency-Key`), expiring by
//! `created_at`.

use super::{Backend, Store, StoreError, on_writer};

/// Records deleted per statement by the sweeper, so a large backlog never
/// holds a long lock.
const SWEEP_BATCH: i64 = 5_000;

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
    /// The session end the first response carried (`confirm`/`claim`).
    pub session_end: Option<String>,
}

/// The answer to store with a key.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: &'a str,
    /// `wr-session` reason, if the answer ended the session.
    pub session_end: Option<&'a str>,
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
    /// process), or any record older than `expired_before`, is taken over.
    pub async fn idempotency_begin(
        &self,
        visitor_id: &str,
        key: &str,
        fingerprint: &str,
        now: i64,
        stale_before: i64,
        expired_before: i64,
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
                "UPDATE idempotency_keys \
                 SET fingerprint = $3, created_at = $4, state = 'running', status = NULL, body = NULL, session_end = NULL \
                 WHERE visitor_id = $1 AND key = $2 \
                   AND ((state = 'running' AND created_at < $5) OR created_at < $6)",
            )
            .bind(visitor_id)
            .bind(key)
            .bind(fingerprint)
            .bind(now)
            .bind(stale_before)
            .bind(expired_before)
            .execute(pool)
            .await?;
            if taken_over.rows_affected() == 1 {
                return Ok(Started::New);
            }
            let record: Option<IdempotencyRecord> = sqlx::query_as(
                "SELECT fingerprint, state, status, body, session_end FROM idempotency_keys \
                 WHERE visitor_id = $1 AND key = $2",
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
                session_end: None,
            })))
        })
    }

    /// Store the response of the request that owns `key`.
    pub async fn idempotency_finish(
        &self,
        visitor_id: &str,
        key: &str,
        outcome: &Outcome<'_>,
    ) -> Result<(), StoreError> {
        on_writer!(self, "idempotency_finish", |pool| {
            sqlx::query(
                "UPDATE idempotency_keys SET state = 'done', status = $3, body = $4, session_end = $5 \
                 WHERE visitor_id = $1 AND key = $2",
            )
            .bind(visitor_id)
            .bind(key)
            .bind(i64::from(outcome.status))
            .bind(outcome.body)
            .bind(outcome.session_end)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    /// Delete records created before `before` (epoch ms), in batches; returns how many.
    pub async fn idempotency_sweep(&self, before: i64) -> Result<u64, StoreError> {
        let mut deleted = 0;
        loop {
            let sql = match self.backend {
                Backend::Postgres(_) => {
                    "DELETE FROM idempotency_keys WHERE ctid IN \
                     (SELECT ctid FROM idempotency_keys WHERE created_at < $1 LIMIT $2)"
                }
                Backend::Sqlite { .. } => {
                    "DELETE FROM idempotency_keys WHERE rowid IN \
                     (SELECT rowid FROM idempotency_keys WHERE created_at < $1 LIMIT $2)"
                }
            };
            let n = on_writer!(self, "idempotency_sweep", |pool| {
                sqlx::query(sql).bind(before).bind(SWEEP_BATCH).execute(pool).await.map(|r| r.rows_affected())
            })?;
            deleted += n;
            if n < u64::try_from(SWEEP_BATCH).unwrap_or(u64::MAX) {
                return Ok(deleted);
            }
        }
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
