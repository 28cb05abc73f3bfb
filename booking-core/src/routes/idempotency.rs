//! `Idempotency-Key` for `POST` holds, confirms and claims.
//!
//! The first request with a key (per visitor) records a fingerprint of its
//! method, path and body and runs; its response is stored with the key. A
//! retry with the same key and the same request gets that response again,
//! byte for byte (so a replayed hold keeps its original `expires_at`) with
//! `idempotent-replayed: true`. The same key with a different request is a
//! client bug → 422. A retry while the first is still running → 409. Server
//! failures (5xx) are not stored: the key is freed so the retry runs again.
//!
//! Storage is bounded: refusals that change nothing (401, 403, 404, 422) are
//! not stored either — replaying them would only echo the refusal, and a
//! script confirming made-up hold ids with fresh keys must not write a row
//! each — and records expire after `idempotency.ttl` (a retry after that runs
//! anew; the sweeper deletes them). With the per-visitor rate limit that
//! bounds the rows one token can leave behind.

use std::future::Future;

use bytes::Bytes;
use http::StatusCode;
use sha2::{Digest, Sha256};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::Visitor;
use crate::clock::now_ms;
use crate::http::{Input, Success};
use crate::problem::{ApiError, Failure};
use crate::state::AppState;
use crate::store::Started;
use crate::store::idempotency::Outcome;

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 200;
/// A `running` record older than this belongs to a request that died with its
/// process; a retry may take the key over.
const STALE_MS: i64 = 60_000;

/// Idempotency errors.
#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    /// → 400: the key is empty, too long, or not visible ASCII.
    #[error("the Idempotency-Key header must be 1 to 200 visible ASCII characters")]
    BadKey,
    /// → 409: the first request with this key has not finished.
    #[error("a request with this Idempotency-Key is still being processed; retry shortly")]
    InProgress,
    /// → 422: the key was used for a different request.
    #[error("this Idempotency-Key was already used for a different request; use a new key for a new request")]
    Mismatch,
}

impl ApiError for IdempotencyError {
    fn status(&self) -> StatusCode {
        match self {
            IdempotencyError::BadKey => StatusCode::BAD_REQUEST,
            IdempotencyError::InProgress => StatusCode::CONFLICT,
            IdempotencyError::Mismatch => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
}

/// Run `work` under the request's `Idempotency-Key`, if it has one.
pub async fn guarded<F, Fut>(cx: &Input, visitor: &Visitor, work: F) -> Result<Success, Failure>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Success, Failure>>,
{
    let Some(raw) = cx.headers.get(HEADER) else { return work().await };
    let key = raw
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or(IdempotencyError::BadKey)?;
    let fingerprint = fingerprint(&cx.path, &cx.body);
    let store = cx.state.store();
    let now = now_ms();
    let expired_before = now - i64::try_from(cx.state.config().idempotency.ttl.as_millis()).unwrap_or(i64::MAX);
    match store.idempotency_begin(&visitor.id, key, &fingerprint, now, now - STALE_MS, expired_before).await? {
        Started::Existing(record) => {
            if record.state != "done" {
                return Err(IdempotencyError::InProgress.into());
            }
            if record.fingerprint != fingerprint {
                return Err(IdempotencyError::Mismatch.into());
            }
            let status = record
                .status
                .and_then(|s| u16::try_from(s).ok())
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::OK);
            let content_type =
                if status.is_client_error() { shared::problem::CONTENT_TYPE } else { "application/json" };
            let mut reply = Success::raw(status, content_type, Bytes::from(record.body.unwrap_or_default()));
            reply.replayed = true;
            reply.session_end = record.session_end.as_deref().and_then(crate::routes::session::from_reason);
            Ok(reply)
        }
        Started::New => {
            let result = work().await;
            let outcome = match &result {
                Ok(reply) => Some((reply.status, reply.body.clone(), reply.session_end)),
                Err(failure) if stored(failure.status()) => {
                    let (status, body) = failure.render();
                    Some((status, body, None))
                }
                Err(_) => None,
            };
            let saved = match outcome {
                Some((status, body, end)) => {
                    let text = String::from_utf8_lossy(&body);
                    let outcome =
                        Outcome { status: status.as_u16(), body: &text, session_end: end.map(|e| e.reason()) };
                    store.idempotency_finish(&visitor.id, key, &outcome).await
                }
                None => store.idempotency_abandon(&visitor.id, key).await,
            };
            if let Err(e) = saved {
                // The answer is still right; only a retry's replay is affected,
                // and the key frees itself once stale.
                tracing::warn!(error = %e, "could not record the idempotent response");
            }
            result
        }
    }
}

/// Is an answer with this status worth replaying? Not a server failure (the
/// retry should run again) nor a refusal that changed nothing.
fn stored(status: StatusCode) -> bool {
    !status.is_server_error()
        && !matches!(
            status,
            StatusCode::UNAUTHORIZED
                | StatusCode::FORBIDDEN
                | StatusCode::NOT_FOUND
                | StatusCode::UNPROCESSABLE_ENTITY
                | StatusCode::TOO_MANY_REQUESTS
        )
}

/// Delete expired records (and forget idle rate-limit state) every
/// `idempotency.sweep_interval` until `shutdown` flips.
pub fn spawn_sweeper(state: AppState, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    let config = state.config().idempotency.clone();
    let ttl_ms = i64::try_from(config.ttl.as_millis()).unwrap_or(i64::MAX);
    crate::tasks::every(config.sweep_interval, true, shutdown, move || {
        let state = state.clone();
        async move {
            state.limits().sweep();
            match state.store().idempotency_sweep(now_ms() - ttl_ms).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "expired idempotency records deleted"),
                Err(e) => tracing::warn!(error = %e, "idempotency sweep failed; retrying next tick"),
            }
        }
    })
}

/// SHA-256 over the request path and body, hex. A JSON body is hashed in
/// canonical form (sorted keys, no whitespace), so a client re-serializing the
/// same request differently is still the same request.
fn fingerprint(path: &str, body: &[u8]) -> String {
    let canonical = serde_json::from_slice::<serde_json::Value>(body).ok().map(|v| v.to_string().into_bytes());
    let mut hash = Sha256::new();
    hash.update(path.as_bytes());
    hash.update([0]);
    hash.update(canonical.as_deref().unwrap_or(body));
    hex::encode(hash.finalize())
}
