//! Percent-encoding (RFC 3986) for the links both services write and the
//! query values the proxy reads, on the `percent-encoding` crate.
//!
//! Not for request paths: [`crate::path`] has its own canonical rule
//! (decode only unreserved escapes, upper-case the rest, refuse bad ones),
//! which a plain decoder does not follow.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
/// The same, but `/` stays readable: a path and query as a query value.
const PATH_AND_QUERY: &AsciiSet = &COMPONENT.remove(b'/');

/// Percent-encode everything but unreserved characters (upper-case hex).
pub fn encode_component(text: &str) -> String {
    utf8_percent_encode(text, COMPONENT).to_string()
}

/// Percent-encode a path and query for use as a query parameter value: like
/// [`encode_component`], but `/` is kept.
pub fn encode_path_and_query(text: &str) -> String {
    utf8_percent_encode(text, PATH_AND_QUERY).to_string()
}

/// Decode a percent-encoded query value (`+` is a space). Invalid escapes
/// are kept as they are; invalid UTF-8 becomes U+FFFD.
pub fn decode_query_value(text: &str) -> String {
    percent_decode_str(&text.replace('+', " ")).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreserved_characters_stay_and_the_rest_is_escaped() {
        assert_eq!(encode_component("/events/1"), "%2Fevents%2F1");
        assert_eq!(encode_component("demo-q_1.~é"), "demo-q_1.~%C3%A9");
        assert_eq!(encode_path_and_query("/x?y=a b&z"), "/x%3Fy%3Da%20b%26z");
    }

    #[test]
    fn query_values_decode_plus_as_space_and_keep_bad_escapes() {
        assert_eq!(decode_query_value("a+b%2Bc"), "a b+c");
        assert_eq!(decode_query_value("%zz%4"), "%zz%4");
        assert_eq!(decode_query_value("%+1"), "% 1");
        assert_eq!(decode_query_value("%C3%A9%FF"), "é\u{FFFD}");
        let path = "/api/events/42?x=1&y=a b";
        assert_eq!(decode_query_value(&encode_path_and_query(path)), path);
    }
}
