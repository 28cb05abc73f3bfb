//! Issuing entry tokens for admitted visitors.
//!
//! The token is derived from the admission record alone (visitor, queue,
//! admission time, session end), so any instance re-issues the very same token
//! on every status call: Ed25519 signatures are deterministic.

use serde::Serialize;
use shared::token::{EntryClaims, SignError, TokenSigner};
use shared::visitor::VisitorId;

use crate::clock::rfc3339_ms;
use crate::store::Standing;

/// A token ready to hand out.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Issued {
    /// The JWT.
    pub token: String,
    /// Session end, RFC 3339.
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// Admission time, RFC 3339 with milliseconds.
    #[schema(format = DateTime)]
    pub admitted_at: String,
    /// Seconds until the session ends (cookie `Max-Age`).
    #[serde(skip)]
    pub max_age: i64,
}

/// Sign the token for an admission.
pub fn issue(
    signer: &TokenSigner,
    queue: &str,
    visitor: VisitorId,
    admitted_at_ms: i64,
    expires_at_ms: i64,
    now_ms: i64,
) -> Result<Issued, SignError> {
    // Whole seconds, rounded down: the token never outlives the session.
    let exp = expires_at_ms.div_euclid(1000);
    let claims = EntryClaims {
        sub: visitor.to_string(),
        aud: queue.to_owned(),
        iat: admitted_at_ms.div_euclid(1000),
        exp,
        jti: format!("{visitor}.{admitted_at_ms}"),
    };
    Ok(Issued {
        token: signer.sign(&claims)?,
        expires_at: rfc3339_ms(exp * 1000),
        admitted_at: rfc3339_ms(admitted_at_ms),
        max_age: (exp * 1000 - now_ms).div_euclid(1000).max(0),
    })
}

/// Sign the entry token of a visitor admitted to `queue` (`standing` READY;
/// `None` for any other standing, or when signing fails, which is logged).
pub fn for_standing(
    signer: &TokenSigner,
    queue: &str,
    visitor: VisitorId,
    standing: Standing,
    now_ms: i64,
) -> Option<Issued> {
    let Standing::Ready { admitted_at_ms, expires_at_ms } = standing else { return None };
    match issue(signer, queue, visitor, admitted_at_ms, expires_at_ms, now_ms) {
        Ok(issued) => Some(issued),
        Err(e) => {
            tracing::error!(error = %e, "signing an entry token failed");
            None
        }
    }
}
