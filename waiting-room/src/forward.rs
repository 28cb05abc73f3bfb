//! The request rewrite, one set of rules for both lanes: which client
//! headers never reach the upstream and which the proxy sets itself.
//!
//! Dropped: hop-by-hop headers (`Connection`, `Keep-Alive`,
//! `Proxy-Connection`, `TE`, `Trailer`, `Upgrade`, `Proxy-Authorization`
//! and every header the client names in `Connection`), and every header the
//! upstream trusts because the proxy writes it: `x-visitor-id`,
//! `x-request-id`, `Forwarded`, `X-Forwarded-For`, `X-Real-IP`; the
//! `X-Forwarded-Proto`/`-Host`/`-Port` a client sent are kept only when it
//! is a trusted proxy. Framing (`Content-Length`, `Transfer-Encoding`) is
//! each lane's own business and passes through here.
//!
//! Set: `x-visitor-id` (only after the gate verified the token),
//! `x-request-id`, `X-Forwarded-For` (the trusted proxy's chain plus the
//! peer, or just the peer) and `Forwarded: for=<client>` (RFC 7239), where
//! the client is [`crate::client::address`]'s answer.

use std::net::IpAddr;

use shared::{REQUEST_ID_HEADER, VISITOR_HEADER};

/// Always dropped.
const HOP_BY_HOP: [&str; 7] =
    ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "proxy-authorization"];
/// Dropped because the proxy writes them.
const OURS: [&str; 5] = [VISITOR_HEADER, REQUEST_ID_HEADER, "forwarded", "x-forwarded-for", "x-real-ip"];
/// Kept only from a trusted proxy.
const FROM_PROXIES: [&str; 3] = ["x-forwarded-proto", "x-forwarded-host", "x-forwarded-port"];

/// The upstream's response header saying a purchase ended the visitor's
/// session (`wr-session: end; reason="confirm"`). The proxy acts on it and
/// never passes it on.
pub const SESSION_HEADER: &str = "wr-session";

/// Why the upstream ended a session (a metric label: a fixed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// A booking was confirmed.
    Confirm,
    /// A coupon was claimed.
    Claim,
    /// Another reason the upstream gave.
    Other,
}

impl SessionEnd {
    /// The value of a `wr-session` header, if it ends the session.
    pub fn parse(value: &[u8]) -> Option<SessionEnd> {
        let text = std::str::from_utf8(value).ok()?;
        let mut parts = text.split(';').map(str::trim);
        if !parts.next()?.eq_ignore_ascii_case("end") {
            return None;
        }
        let reason = parts.find_map(|p| p.strip_prefix("reason=")).map(|r| r.trim_matches('"'));
        Some(match reason {
            Some("confirm") => SessionEnd::Confirm,
            Some("claim") => SessionEnd::Claim,
            _ => SessionEnd::Other,
        })
    }

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            SessionEnd::Confirm => "confirm",
            SessionEnd::Claim => "claim",
            SessionEnd::Other => "other",
        }
    }
}

/// Methods that change nothing (RFC 9110 §9.2.1): a request with one that
/// failed before any answer may be sent to another upstream instance.
pub fn safe_method(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS")
}

/// What the proxy knows of one request it sends upstream.
#[derive(Debug, Clone, Copy)]
pub struct Rewrite<'a> {
    /// The visitor the gate admitted (never a client-supplied value).
    pub visitor: Option<&'a str>,
    /// The request id (the client's, if well-formed, or a new one).
    pub request_id: &'a str,
    /// The connection's peer.
    pub peer: IpAddr,
    /// The peer is one of `server.trusted_proxies`.
    pub peer_trusted: bool,
    /// The client, by [`crate::client::address`].
    pub client: IpAddr,
}

impl Rewrite<'_> {
    /// Is the client header `name` kept out of the upstream request?
    /// `connection` holds the values of the request's `Connection` headers.
    pub fn drops(&self, name: &str, connection: &[&[u8]]) -> bool {
        HOP_BY_HOP.iter().chain(OURS.iter()).any(|h| name.eq_ignore_ascii_case(h))
            || (!self.peer_trusted && FROM_PROXIES.iter().any(|h| name.eq_ignore_ascii_case(h)))
            || connection
                .iter()
                .flat_map(|v| v.split(|b| *b == b','))
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
    }

    /// Call `add` for every header the proxy sets, in order. `forwarded_for`
    /// holds the values of the request's `X-Forwarded-For` headers.
    pub fn added(&self, forwarded_for: &[&[u8]], mut add: impl FnMut(&'static str, &[u8])) {
        if let Some(v) = self.visitor {
            add(VISITOR_HEADER, v.as_bytes());
        }
        add(REQUEST_ID_HEADER, self.request_id.as_bytes());
        let mut chain = Vec::with_capacity(64);
        if self.peer_trusted {
            for v in forwarded_for.iter().map(|v| v.trim_ascii()).filter(|v| !v.is_empty()) {
                chain.extend_from_slice(v);
                chain.extend_from_slice(b", ");
            }
        }
        chain.extend_from_slice(crate::client::canonical(self.peer).to_string().as_bytes());
        add("x-forwarded-for", &chain);
        let forwarded = match crate::client::canonical(self.client) {
            IpAddr::V4(v4) => format!("for={v4}"),
            IpAddr::V6(v6) => format!("for=\"[{v6}]\""),
        };
        add("forwarded", forwarded.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(peer_trusted: bool) -> Rewrite<'static> {
        Rewrite {
            visitor: Some("v1"),
            request_id: "r1",
            peer: "10.0.0.2".parse().unwrap(),
            peer_trusted,
            client: "203.0.113.9".parse().unwrap(),
        }
    }

    #[test]
    fn hop_by_hop_and_our_own_headers_are_dropped() {
        let r = rewrite(false);
        for h in [
            "Connection",
            "keep-alive",
            "TE",
            "Upgrade",
            "X-Visitor-Id",
            "x-request-id",
            "Forwarded",
            "X-Forwarded-For",
        ] {
            assert!(r.drops(h, &[]), "{h}");
        }
        assert!(r.drops("X-Forwarded-Proto", &[]));
        assert!(!rewrite(true).drops("X-Forwarded-Proto", &[]));
        for h in ["Host", "Cookie", "Authorization", "Content-Length", "Transfer-Encoding", "Accept"] {
            assert!(!r.drops(h, &[]), "{h}");
        }
        assert!(r.drops("X-Secret", &[b"keep-alive, X-Secret".as_slice()]));
    }

    #[test]
    fn a_session_ends_only_when_the_upstream_says_end() {
        assert_eq!(SessionEnd::parse(b"end; reason=\"confirm\""), Some(SessionEnd::Confirm));
        assert_eq!(SessionEnd::parse(b"END;reason=claim"), Some(SessionEnd::Claim));
        assert_eq!(SessionEnd::parse(b"end"), Some(SessionEnd::Other));
        assert_eq!(SessionEnd::parse(b"keep"), None);
        assert_eq!(SessionEnd::parse(b"\xff"), None);
    }

    #[test]
    fn the_proxy_writes_the_forwarding_headers_itself() {
        let collect = |r: Rewrite<'_>, xff: &[&[u8]]| {
            let mut out = Vec::new();
            r.added(xff, |n, v| out.push((n, String::from_utf8(v.to_vec()).unwrap())));
            out
        };
        let untrusted = collect(rewrite(false), &[b"6.6.6.6"]);
        assert_eq!(
            untrusted,
            [
                ("x-visitor-id", "v1".to_owned()),
                ("x-request-id", "r1".to_owned()),
                ("x-forwarded-for", "10.0.0.2".to_owned()),
                ("forwarded", "for=203.0.113.9".to_owned()),
            ]
        );
        let trusted = collect(Rewrite { visitor: None, ..rewrite(true) }, &[b"6.6.6.6, 203.0.113.9"]);
        assert_eq!(trusted[1], ("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.2".to_owned()));
        let v6 = collect(Rewrite { client: "2001:db8::1".parse().unwrap(), ..rewrite(false) }, &[]);
        assert_eq!(v6[3], ("forwarded", "for=\"[2001:db8::1]\"".to_owned()));
    }
}
