//! What the waiting room and the booking core must agree on, and nothing else.
//!
//! # Layout
//!
//! - [`token`]: the entry token (an EdDSA JWT): claims, signing, verification.
//! - [`keys`]: the key directory: the Ed25519 signing key and the visitor-cookie
//!   secret, created once and never regenerated, plus the trusted public keys.
//! - [`visitor`]: the visitor id and its HMAC-signed cookie value.
//! - [`config`]: the layered config loader (TOML file, then `PREFIX_SECTION__KEY`
//!   environment variables) whose errors name the offending key.
//! - [`log`]: the `[log]` section and the `tracing` subscriber both services install.
//! - [`html`]: escaping text for the pages both services render.
//! - [`path`]: the canonical request path both the gate and the router see.
//! - [`problem`]: RFC 9457 `application/problem+json` bodies.
//!
//! The only I/O here is reading and creating files under the key directory and
//! reading the config file; nothing talks to the network.

pub mod config;
pub mod html;
pub mod keys;
pub mod log;
pub mod path;
pub mod problem;
pub mod token;
pub mod visitor;

/// Name of the cookie carrying the entry token.
pub const ENTRY_COOKIE: &str = "wr_entry";
/// Name of the cookie carrying the signed visitor id.
pub const VISITOR_COOKIE: &str = "wr_visitor";
/// Header the proxy adds to requests it lets through, naming the verified visitor.
pub const VISITOR_HEADER: &str = "x-visitor-id";
/// Header carrying the request id from the proxy into the booking core's logs.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Find a cookie by name in a `Cookie` header value.
///
/// Malformed pairs are skipped, never an error: a browser with a broken cookie
/// jar must still be served.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

/// The token a request carries: `Authorization: Bearer` wins over the cookie,
/// because an API client that sets it explicitly means it.
pub fn bearer_or_cookie<'a>(authorization: Option<&'a str>, cookie: Option<&'a str>) -> Option<&'a str> {
    authorization
        .and_then(|a| {
            let (scheme, rest) = a.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty())
        .or_else(|| cookie.and_then(|c| cookie_value(c, ENTRY_COOKIE)).filter(|t| !t.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_value_finds_the_named_pair_and_skips_junk() {
        let h = "a=1; junk; wr_entry=tok.en.x ; b=\"2\"";
        assert_eq!(cookie_value(h, "wr_entry"), Some("tok.en.x"));
        assert_eq!(cookie_value(h, "b"), Some("2"));
        assert_eq!(cookie_value(h, "missing"), None);
    }

    #[test]
    fn bearer_wins_over_cookie_and_empty_values_are_ignored() {
        assert_eq!(bearer_or_cookie(Some("Bearer abc"), Some("wr_entry=def")), Some("abc"));
        assert_eq!(bearer_or_cookie(Some("Basic abc"), Some("wr_entry=def")), Some("def"));
        assert_eq!(bearer_or_cookie(Some("Bearer "), Some("wr_entry=")), None);
        assert_eq!(bearer_or_cookie(None, None), None);
    }
}
