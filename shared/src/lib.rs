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
//! - [`html`]: escaping text and filling `{{key}}` placeholders for the pages
//!   both services render.
//! - [`path`]: the canonical request path both the gate and the router see.
//! - [`percent`]: percent-encoding links and decoding query values.
//! - [`problem`]: RFC 9457 `application/problem+json` bodies.
//! - [`backoff`]: the pauses of every reconnect loop in both services.
//! - [`clock`]: the wall clock (epoch milliseconds) and its RFC 3339 text.
//!
//! The only I/O here is reading and creating files under the key directory and
//! reading the config file; nothing talks to the network.

pub mod backoff;
pub mod clock;
pub mod config;
pub mod html;
pub mod keys;
pub mod log;
pub mod path;
pub mod percent;
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

/// Whether a client's `x-request-id` is kept as the request's id: 8-64 of
/// `[A-Za-z0-9-]`. Anything else is replaced by a new id, so a client cannot
/// put arbitrary text (spaces, quotes, a megabyte) into both services' logs.
/// The proxy and the booking core both apply this rule.
pub fn valid_request_id(id: &str) -> bool {
    (8..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

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

/// Why a request's entry token cannot be told: it names more than one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmbiguousToken {
    /// More than one `Authorization` header.
    #[error("the request has more than one Authorization header")]
    Authorization,
    /// `wr_entry` cookies with different values.
    #[error("the request has more than one wr_entry cookie")]
    Cookie,
}

/// The entry token of a request, from all its `Authorization` and `Cookie`
/// header values (raw bytes, in order): `Authorization: Bearer` wins over
/// the `wr_entry` cookie. Every party that decides on a token (both proxy
/// lanes, the booking core) calls this, so a request carrying two tokens
/// cannot be read one way by the gate and another by the service: two
/// `Authorization` headers, or `wr_entry` cookies that differ, are refused.
/// A value that is not visible ASCII is never a token.
pub fn entry_token<'a>(
    authorization: impl IntoIterator<Item = &'a [u8]>,
    cookies: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<&'a str>, AmbiguousToken> {
    let mut auth = authorization.into_iter();
    let first = auth.next();
    if auth.next().is_some() {
        return Err(AmbiguousToken::Authorization);
    }
    let mut cookie: Option<&str> = None;
    for value in cookies {
        let Ok(value) = std::str::from_utf8(value) else { continue };
        for pair in value.split(';') {
            let Some((k, v)) = pair.split_once('=') else { continue };
            if k.trim() != ENTRY_COOKIE {
                continue;
            }
            let v = v.trim().trim_matches('"');
            match cookie {
                Some(seen) if seen != v => return Err(AmbiguousToken::Cookie),
                _ => cookie = Some(v),
            }
        }
    }
    let bearer = first.and_then(|a| std::str::from_utf8(a).ok()).and_then(|a| {
        let (scheme, rest) = a.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    Ok(bearer.filter(|t| token_text(t)).or(cookie.filter(|t| token_text(t))))
}

/// A token is printable ASCII without spaces, and not empty.
fn token_text(t: &str) -> bool {
    !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic())
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
    fn request_ids_are_8_to_64_letters_digits_or_dashes() {
        assert!(valid_request_id("abcd-1234"));
        assert!(valid_request_id(&"a".repeat(64)));
        assert!(!valid_request_id("short"));
        assert!(!valid_request_id(&"a".repeat(65)));
        assert!(!valid_request_id("has space 1"));
        assert!(!valid_request_id("under_score"));
    }

    #[test]
    fn one_token_per_request_and_two_are_refused() {
        fn t<'a>(auth: &[&'a str], cookies: &[&'a str]) -> Result<Option<&'a str>, AmbiguousToken> {
            entry_token(auth.iter().map(|a| a.as_bytes()), cookies.iter().map(|c| c.as_bytes()))
        }
        assert_eq!(t(&["Bearer abc"], &["wr_entry=def"]), Ok(Some("abc")));
        assert_eq!(t(&["Basic abc"], &["a=1; wr_entry=def"]), Ok(Some("def")));
        assert_eq!(t(&[], &["a=1", "wr_entry=def"]), Ok(Some("def")));
        assert_eq!(t(&[], &["wr_entry=def", "wr_entry=def"]), Ok(Some("def")));
        assert_eq!(t(&["Bearer a", "Bearer b"], &[]), Err(AmbiguousToken::Authorization));
        assert_eq!(t(&["Bearer a", "Bearer a"], &[]), Err(AmbiguousToken::Authorization));
        assert_eq!(t(&[], &["wr_entry=a", "wr_entry=b"]), Err(AmbiguousToken::Cookie));
        assert_eq!(t(&["Bearer a"], &["wr_entry=a; wr_entry=b"]), Err(AmbiguousToken::Cookie));
        assert_eq!(t(&["Bearer "], &["wr_entry="]), Ok(None));
        assert_eq!(t(&[], &[]), Ok(None));
        assert_eq!(entry_token([b"Bearer \xff".as_slice()], [b"wr_entry=ok".as_slice()]), Ok(Some("ok")));
    }

    proptest::proptest! {
        /// Cookie and token parsing take any header bytes: never a panic,
        /// and a token found is printable text taken from the input.
        #[test]
        fn any_header_bytes_parse_without_panic(
            auth in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 0..3),
            cookies in proptest::collection::vec("[ -~]{0,80}", 0..3),
        ) {
            let found = entry_token(auth.iter().map(Vec::as_slice), cookies.iter().map(|c| c.as_bytes()));
            if let Ok(Some(t)) = found {
                proptest::prop_assert!(t.bytes().all(|b| b.is_ascii_graphic()) && !t.is_empty());
                let in_auth = auth.iter().any(|a| a.windows(t.len()).any(|w| w == t.as_bytes()));
                proptest::prop_assert!(in_auth || cookies.iter().any(|c| c.contains(t)));
            }
            for c in &cookies {
                if let Some(v) = cookie_value(c, ENTRY_COOKIE) {
                    proptest::prop_assert!(c.contains(v));
                }
            }
        }
    }
}
