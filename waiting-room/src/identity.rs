//! Visitor identity on the wire: the signed `wr_visitor` cookie.
//!
//! A join without a valid cookie (absent, tampered, unsigned, from another
//! deployment) gets a fresh random id and a `Set-Cookie` once it is granted a
//! place (see [`crate::join`]); a malformed cookie is never an error.

use pingora::prelude::Session;
use shared::VISITOR_COOKIE;
use shared::visitor::{CookieSigner, VisitorId};

use crate::reply::set_cookie;

/// The visitor id from the request's cookie, if it verifies.
pub fn existing(session: &Session, cookies: &CookieSigner) -> Option<VisitorId> {
    crate::reply::cookie_values(session, VISITOR_COOKIE).find_map(|v| cookies.verify(v))
}

/// A fresh visitor id and the `Set-Cookie` value carrying it. Only
/// [`crate::join`] calls this, within the client's new-visitor budget, and
/// the open door of a queue whose store is down (`crate::degraded`), within
/// its allowance.
pub fn mint(cookies: &CookieSigner, secure: bool) -> (VisitorId, String) {
    let visitor = VisitorId::random();
    // A year: the id only holds a place while the visitor waits.
    (visitor, set_cookie(VISITOR_COOKIE, &cookies.sign(visitor), Some(365 * 24 * 3600), secure))
}
