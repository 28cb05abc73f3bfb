//! Sessions that end with the purchase: the upstream answers a purchase with
//! `wr-session: end` ([`crate::forward::SESSION_HEADER`]); whichever lane
//! forwarded it calls [`end`], which refuses the visitor's token here at
//! once, frees its `max_active` slot in the store and has the store tell the
//! other instances (which call [`revoked_elsewhere`]).

use std::str::FromStr;

use shared::visitor::VisitorId;

use crate::forward::SessionEnd;
use crate::metrics::METRICS;
use crate::state::State;

/// End `visitor`'s session of `queue` (the admission its token issued at
/// `iat` belongs to) because of `why`. The response that said so waits for
/// this: the visitor's next request must already be refused.
pub async fn end(state: &State, queue: &str, visitor: &str, iat: i64, why: SessionEnd) {
    let until_ms = kept_until(state, queue, iat);
    state.gate.revoke(queue, visitor, iat, until_ms);
    METRICS.sessions_ended.with_label_values(&[queue, why.label()]).inc();
    let (Some(store), Ok(id)) = (state.store(), VisitorId::from_str(visitor)) else { return };
    if let Err(e) = store.end_session(queue, id, iat, until_ms).await {
        // This instance refuses the token already; the others learn of it
        // when they next meet it (`revoked_elsewhere` is then not called,
        // and the session counts toward max_active until it expires).
        tracing::warn!(error = %e, queue, "ending a session in the store failed");
    }
}

/// A revocation is kept as long as any token of that admission could live:
/// its session (as configured now) from its `iat`, plus a second of rounding.
fn kept_until(state: &State, queue: &str, iat: i64) -> i64 {
    let session_ms = state.queues.by_id(queue).map_or(0, |q| q.admission().session.as_millis());
    iat.saturating_mul(1000).saturating_add(i64::try_from(session_ms).unwrap_or(i64::MAX)).saturating_add(1000)
}

/// Another instance ended a session: refuse its tokens here too.
pub fn revoked_elsewhere(state: &State, queue: &str, visitor: &str, iat: i64, until_ms: i64) {
    state.gate.revoke(queue, visitor, iat, until_ms);
}

/// Has a session ended that this instance did not hear of (it was down, or
/// missed the message)? Asked once per token, when it is first seen here; a
/// store that does not answer lets the token through (it verified).
pub async fn ended_unheard(state: &State, queue: &str, visitor: &str, iat: i64) -> bool {
    let (Some(store), Ok(id)) = (state.store(), VisitorId::from_str(visitor)) else { return false };
    match store.revoked(queue, id, iat).await {
        Ok(true) => {
            state.gate.revoke(queue, visitor, iat, kept_until(state, queue, iat));
            true
        }
        Ok(false) => false,
        Err(e) => {
            tracing::warn!(error = %e, queue, "asking the store about an ended session failed; letting the token through");
            false
        }
    }
}
