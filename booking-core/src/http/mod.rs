//! What the HTTP layer shares: [`Listener`] (which routes exist where),
//! [`Success`] (a handler's answer) and [`Input`] (what a handler sees of its
//! request), with request matching ([`router`]) and body parsing ([`body`]).
//! The accept loop that feeds them is [`crate::server`]; the handlers are in
//! [`crate::routes`].

pub mod body;
pub mod router;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::Serialize;

use crate::auth::Visitor;
use crate::config::SessionEndOn;
use crate::problem::Failure;
use crate::state::AppState;

/// Header set on a response replayed from an idempotency record.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `server.listen`: `/api`, the event page, the API document.
    Public,
    /// `admin.listen`: `/admin`, `/metrics`, `/livez`, `/readyz`, `/healthz`.
    Operator,
}

/// A successful (or replayed) response.
#[derive(Debug, Clone)]
pub struct Success {
    /// Status code.
    pub status: StatusCode,
    /// Body bytes.
    pub body: Bytes,
    /// Media type of the body.
    pub content_type: &'static str,
    /// True when replayed from an idempotency record.
    pub replayed: bool,
    /// The purchase ended the visitor's session: send `wr-session: end`.
    pub session_end: Option<SessionEndOn>,
}

impl Success {
    /// A JSON body.
    pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Success {
        // Serializing our own view structs cannot fail; an empty object is the fallback.
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        Success::raw(status, "application/json", body)
    }

    /// No body.
    pub fn empty(status: StatusCode) -> Success {
        Success::raw(status, "application/json", Bytes::new())
    }

    /// A body of another media type.
    pub fn raw(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Success {
        Success { status, body: body.into(), content_type, replayed: false, session_end: None }
    }
}

/// What a handler sees of its request.
pub struct Input {
    /// Application state.
    pub state: AppState,
    /// Request headers.
    pub headers: HeaderMap,
    /// The whole body (bounded by `server.body_limit_bytes`).
    pub body: Bytes,
    /// The matched route template.
    pub template: &'static str,
    /// The request path as sent.
    pub path: String,
    /// The client's address (the proxy's, for visitors).
    pub peer: SocketAddr,
}

impl Input {
    /// Verify the entry token (no database work).
    pub fn visitor(&self) -> Result<Visitor, crate::auth::AuthError> {
        self.state.auth().authenticate(&self.headers)
    }

    /// Verify the entry token of a request that changes something and take
    /// one unit of the visitor's rate limit (no database work either).
    pub fn mutating_visitor(&self) -> Result<Visitor, Failure> {
        let visitor = self.visitor()?;
        self.state.limits().mutation(&visitor.id)?;
        Ok(visitor)
    }
}
