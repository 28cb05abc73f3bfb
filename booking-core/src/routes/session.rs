//! Sessions that end with the purchase.
//!
//! The waiting room admits a visitor for a fixed session; a visitor who has
//! bought has no reason to keep that slot. When a purchase named in
//! `end_session_on` succeeds (a confirmed booking, and a committed claim if
//! configured), the answer carries `wr-session: end; reason="confirm"` (or
//! `"claim"`). The proxy strips the header, ends the session in its store (the
//! `max_active` slot goes to the next visitor at the next tick) and refuses the
//! token from then on. The JSON body says the same in `session_end`, because
//! the proxy strips the header before a browser could read it.
//!
//! A purchase only ends the session when it leaves the visitor no live hold
//! on an event their queue covers: someone booking three seats confirms them
//! one by one, and ending the session at the first would strand the other two
//! (the proxy would refuse their confirms). The last confirm ends it.
//!
//! An idempotent replay of the purchase carries the header again (it is stored
//! with the answer): the first answer may have been lost before the proxy saw
//! it, and a replay can only reach us while the proxy still admits the token.

use http::{HeaderValue, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Visitor;
use crate::clock::now_ms;
use crate::config::SessionEndOn;
use crate::http::Success;
use crate::state::AppState;

/// The response header the waiting room acts on.
pub const HEADER: &str = "wr-session";

/// `end; reason="confirm"`.
pub fn header_value(end: SessionEndOn) -> HeaderValue {
    match end {
        SessionEndOn::Confirm => HeaderValue::from_static("end; reason=\"confirm\""),
        SessionEndOn::Claim => HeaderValue::from_static("end; reason=\"claim\""),
    }
}

/// Parse a stored reason back (idempotent replays).
pub fn from_reason(reason: &str) -> Option<SessionEndOn> {
    [SessionEndOn::Confirm, SessionEndOn::Claim].into_iter().find(|e| e.reason() == reason)
}

/// Does this successful purchase end the visitor's session? Only if the
/// operator said so for `on`, and the visitor holds no live seat on an event
/// their queue covers. The purchase is committed whatever this says: if the
/// holds cannot be read, the session simply runs to its end.
pub async fn ends(state: &AppState, visitor: &Visitor, on: SessionEndOn) -> Option<SessionEndOn> {
    if !state.config().end_session_on.contains(&on) {
        return None;
    }
    match state.store().live_hold_events(&visitor.id, now_ms()).await {
        Ok(held) if held.iter().any(|event| state.auth().covers(visitor, *event)) => None,
        Ok(_) => Some(on),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the visitor's holds; their session is not ended");
            None
        }
    }
}

/// A purchase's answer: what was bought, and whether buying it ended the
/// visitor's session.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Purchased<T: ToSchema> {
    /// What was bought.
    #[serde(flatten)]
    pub item: T,
    /// `confirm` (or `claim`) when this purchase ended the visitor's
    /// waiting-room session, as `wr-session: end; reason="…"` (which the proxy
    /// consumes) also says; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "confirm")]
    pub session_end: Option<&'static str>,
}

/// The answer to a committed purchase of `item`: with `session_end` and the
/// header when [`ends`] says it ends the session.
pub async fn reply<T: Serialize + ToSchema>(
    state: &AppState,
    visitor: &Visitor,
    on: SessionEndOn,
    status: StatusCode,
    item: T,
) -> Success {
    let end = ends(state, visitor, on).await;
    let mut reply = Success::json(status, &Purchased { item, session_end: end.map(SessionEndOn::reason) });
    reply.session_end = end;
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_names_its_reason_and_reasons_round_trip() {
        assert_eq!(header_value(SessionEndOn::Confirm), "end; reason=\"confirm\"");
        assert_eq!(header_value(SessionEndOn::Claim), "end; reason=\"claim\"");
        for end in [SessionEndOn::Confirm, SessionEndOn::Claim] {
            assert_eq!(from_reason(end.reason()), Some(end));
        }
        assert_eq!(from_reason("bored"), None);
    }
}
