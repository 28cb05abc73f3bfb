//! Visitor identity on the wire: the signed `wr_visitor` cookie.
//!
//! A join without a valid cookie (absent, tampered, unsigned, from another
//! deployment) gets a fresh random id and a `Set-Cookie` once it is granted a
//! place (see [`crate::join`]); a malformed cookie is never an error.

use pingora::prelude::Session;
use shared::visitor::{CookieSigner, VisitorId};
use shared::{VISITOR_COOKIE, cookie_value};

use crate::http::set_cookie;

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

/// A fresh visitor id and the `Set-Cookie` value carrying it. Only
/// [`crate::join`] calls this, within the client's new-visitor budget.
pub fn mint(cookies: &CookieSigner, secure: bool) -> (VisitorId, String) {
    let visitor = VisitorId::random();
    // A year: the id only holds a place while the visitor waits.
    (visitor, set_cookie(VISITOR_COOKIE, &cookies.sign(visitor), Some(365 * 24 * 3600), secure))
}
