//! The one canonical form of a request path, used by the proxy's gate (both
//! lanes) and by the booking core's router, so that a path the router would
//! send to a protected handler is never a path the gate thinks unprotected.
//!
//! The rule (RFC 3986 §6.2.2 normalisation, minus everything ambiguous):
//!
//! - the request target is `path[?query]`, the path absolute; a fragment
//!   (`#`) is never part of a request target and is refused;
//! - percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are
//!   decoded; other escapes are kept, with upper-case hex digits;
//! - refused: an escaped `/` (`%2F`), `\` (`%5C`) or NUL (`%00`), a bad
//!   escape, a raw byte outside RFC 3986's `pchar` set (a space, `\`,
//!   anything non-ASCII…), an empty segment (`//`, except one trailing `/`)
//!   and a dot segment (`.` or `..`, also when escaped).
//!
//! Refusing instead of normalising empty and dot segments keeps both sides
//! trivially equal: there is nothing left that one side could interpret
//! differently. Browsers never send such paths for links we serve.
//!
//! Ids in paths are canonical decimals ([`decimal_id`]): `1`, never `01` or
//! `+1`, so one resource has exactly one spelling.

use std::borrow::Cow;

/// Why a request target is not canonical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("the path must start with \"/\"")]
    NotAbsolute,
    /// A `#` in the target.
    #[error("a request target cannot carry a fragment (\"#\")")]
    Fragment,
    /// `%2F`.
    #[error("an encoded slash (%2F) is not allowed in a path")]
    EncodedSlash,
    /// `%5C`.
    #[error("an encoded backslash (%5C) is not allowed in a path")]
    EncodedBackslash,
    /// `%00`.
    #[error("an encoded NUL (%00) is not allowed in a path")]
    Nul,
    /// `%` not followed by two hex digits.
    #[error("a \"%\" must be followed by two hex digits")]
    BadEscape,
    /// A byte that must be percent-encoded.
    #[error("the byte 0x{0:02X} must be percent-encoded in a path")]
    BadByte(u8),
    /// `//` inside the path.
    #[error("empty path segments (\"//\") are not allowed")]
    EmptySegment,
    /// `.` or `..`.
    #[error("dot segments (\".\" and \"..\") are not allowed")]
    DotSegment,
}

/// Split a request target into its canonical path and its query.
pub fn target(target: &str) -> Result<(Cow<'_, str>, Option<&str>), PathError> {
    if target.contains('#') {
        return Err(PathError::Fragment);
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    Ok((canonical(path)?, query))
}

/// The canonical form of an absolute path (no query).
pub fn canonical(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // Borrowed until the first byte that changes.
    let mut out: Option<String> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(h), Some(l)) = (bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b)))
            else {
                return Err(PathError::BadEscape);
            };
            let decoded = h << 4 | l;
            match decoded {
                b'/' => return Err(PathError::EncodedSlash),
                b'\\' => return Err(PathError::EncodedBackslash),
                0 => return Err(PathError::Nul),
                _ => {}
            }
            let already_canonical = !unreserved(decoded) && !bytes[i + 1..i + 3].iter().any(u8::is_ascii_lowercase);
            if already_canonical && out.is_none() {
                i += 3;
                continue;
            }
            let o = out.get_or_insert_with(|| path[..i].to_owned());
            if unreserved(decoded) {
                o.push(char::from(decoded));
            } else {
                o.push('%');
                o.push(char::from(b"0123456789ABCDEF"[usize::from(decoded >> 4)]));
                o.push(char::from(b"0123456789ABCDEF"[usize::from(decoded & 15)]));
            }
            i += 3;
            continue;
        }
        if !(pchar(b) || b == b'/') {
            return Err(PathError::BadByte(b));
        }
        if let Some(o) = &mut out {
            o.push(char::from(b));
        }
        i += 1;
    }
    let result = match out {
        Some(o) => Cow::Owned(o),
        None => Cow::Borrowed(path),
    };
    check_segments(&result)?;
    Ok(result)
}

fn check_segments(path: &str) -> Result<(), PathError> {
    // Skip the leading "/"; a single trailing "/" is allowed.
    let inner = &path[1..];
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if inner.is_empty() {
        return if path.len() <= 1 { Ok(()) } else { Err(PathError::EmptySegment) };
    }
    for segment in inner.split('/') {
        match segment {
            "" => return Err(PathError::EmptySegment),
            "." | ".." => return Err(PathError::DotSegment),
            _ => {}
        }
    }
    Ok(())
}

/// A canonical decimal id: `1`-`9` then digits, a positive `i64`.
pub fn decimal_id(segment: &str) -> Option<i64> {
    let b = segment.as_bytes();
    if b.is_empty() || b.len() > 19 || b[0] == b'0' || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    segment.parse::<i64>().ok().filter(|id| *id > 0)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `pchar` without `pct-encoded`: unreserved, sub-delims, `:`, `@`.
fn pchar(b: u8) -> bool {
    unreserved(b)
        || matches!(b, b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn canonical_paths_pass_unchanged_and_borrowed() {
        for p in ["/", "/events/1", "/api/events/1/seats", "/events/1/", "/a:b@c!$&'()*+,;=-._~", "/x%20y"] {
            assert!(matches!(canonical(p), Ok(Cow::Borrowed(b)) if b == p), "{p}");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_upper_cased() {
        assert_eq!(canonical("/events/%31").unwrap(), "/events/1");
        assert_eq!(canonical("/%61pi/%7e").unwrap(), "/api/~");
        assert_eq!(canonical("/x%3fy%c3%a9").unwrap(), "/x%3Fy%C3%A9");
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        let refused = [
            ("events/1", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
            ("//events/1", PathError::EmptySegment),
            ("/events//1", PathError::EmptySegment),
            ("/events/1//", PathError::EmptySegment),
            ("//", PathError::EmptySegment),
            ("/events/./1", PathError::DotSegment),
            ("/events/1/..", PathError::DotSegment),
            ("/events/%2e%2E/admin", PathError::DotSegment),
            ("/events%2F1", PathError::EncodedSlash),
            ("/events%2f1", PathError::EncodedSlash),
            ("/events%5C1", PathError::EncodedBackslash),
            ("/events%001", PathError::Nul),
            ("/events/%1", PathError::BadEscape),
            ("/events/%zz", PathError::BadEscape),
            ("/events\\1", PathError::BadByte(b'\\')),
            ("/events 1", PathError::BadByte(b' ')),
            ("/évents", PathError::BadByte(0xC3)),
        ];
        for (p, e) in refused {
            assert_eq!(canonical(p), Err(e), "{p:?}");
        }
        assert_eq!(target("/events/1#x"), Err(PathError::Fragment));
        assert_eq!(target("/events/1?a#x"), Err(PathError::Fragment));
        let (p, q) = target("/events/%31?a=%2F").unwrap();
        assert_eq!((p.as_ref(), q), ("/events/1", Some("a=%2F")));
    }

    #[test]
    fn ids_have_one_spelling() {
        assert_eq!(decimal_id("1"), Some(1));
        assert_eq!(decimal_id("9223372036854775807"), Some(i64::MAX));
        for bad in ["0", "01", "+1", "-1", " 1", "1 ", "1e3", "", "9223372036854775808", "00000000000000000001"] {
            assert_eq!(decimal_id(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Never a panic; the result is canonical itself (idempotent), has
        /// no escaped unreserved byte left, no empty or dot segment.
        #[test]
        fn canonical_is_idempotent_and_clean(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            let text = String::from_utf8_lossy(&raw);
            if let Ok(c) = canonical(&text) {
                prop_assert_eq!(canonical(&c).map(Cow::into_owned), Ok(c.clone().into_owned()));
                prop_assert!(c.starts_with('/'));
                prop_assert!(!c.contains("//"));
                prop_assert!(!c.split('/').any(|s| s == "." || s == ".."));
            }
        }

        /// Paths built from the pieces attackers combine.
        #[test]
        fn tricky_pieces_never_panic_and_stay_consistent(
            pieces in proptest::collection::vec(
                prop_oneof![
                    Just("/"), Just("//"), Just("api"), Just("events"), Just("1"), Just("01"), Just("+1"),
                    Just("%31"), Just("%2F"), Just("%2e"), Just("."), Just(".."), Just("%5c"), Just("\\"),
                    Just("%"), Just("%00"), Just("#"), Just("?"), Just("~"), Just("%7E"), Just(";x"),
                ],
                0..12,
            )
        ) {
            let t: String = pieces.concat();
            if let Ok((p, _)) = target(&t) {
                prop_assert_eq!(canonical(&p).map(Cow::into_owned), Ok(p.clone().into_owned()));
                prop_assert!(!p.to_ascii_lowercase().contains("%2f"));
            }
        }
    }
}
