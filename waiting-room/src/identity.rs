//! Visitor identity on the wire: the signed `wr_visitor` cookie.
//!
//! A request without a valid cookie (absent, tampered, unsigned, from another
//! deployment) gets a fresh random id and a `Set-Cookie`; a malformed cookie is
//! never an error.

use pingora::prelude::Session;
use shared::visitor::{CookieSigner, VisitorId};
use shared::{VISITOR_COOKIE, cookie_value};

use crate::http::set_cookie;

/// Who is asking.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The visitor.
    pub visitor: VisitorId,
    /// `Set-Cookie` value to send when the id is new.
    pub set_cookie: Option<String>,
}

/// The visitor id from the request's cookie, if it verifies.
pub fn existing(session: &Session, cookies: &CookieSigner) -> Option<VisitorId> {
    session
        .req_header()
        .headers
        .get_all("cookie")
        .iter()
        .filter_map(|h| h.to_str().ok())
        .find_map(|h| cookie_value(h, VISITOR_COOKIE).and_then(|v| cookies.verify(v)))
}

/// The visitor of this request, issuing a new id when there is no valid cookie.
pub fn identify(session: &Session, cookies: &CookieSigner, secure: bool) -> Identity {
    match existing(session, cookies) {
        Some(visitor) => Identity { visitor, set_cookie: None },
        None => {
            let visitor = VisitorId::random();
            // A year: the id only holds a place while the visitor waits.
            let cookie = set_cookie(VISITOR_COOKIE, &cookies.sign(visitor), Some(365 * 24 * 3600), secure);
            Identity { visitor, set_cookie: Some(cookie) }
        }
    }
}
