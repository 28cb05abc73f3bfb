//! Issuing entry tokens for admitted visitors.
//!
//! The token is derived from the admission record alone (visitor, queue,
//! admission time, session end), so any instance re-issues the very same token
//! on every status call: Ed25519 signatures are deterministic.

use serde::Serialize;
use shared::token::{EntryClaims, SignError, TokenSigner};
use shared::visitor::VisitorId;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

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

/// RFC 3339 text of a millisecond timestamp.
pub fn rfc3339_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
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
