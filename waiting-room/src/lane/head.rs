//! A request head, read off the connection: every request on the public
//! listener passes here first, whichever lane serves it, so every limit and
//! rule on what a client may send is applied once, before anything else:
//!
//! - size: a head larger than `limits.max_head_bytes` or with more than
//!   `limits.max_headers` fields → 431; anything httparse refuses → 400;
//! - the target: origin-form, in [`shared::path`]'s canonical form (no
//!   fragment, no `//`, dot segments, encoded `/`…) → else 400;
//! - the method: in `server.allowed_methods` → else 405 (also for a method
//!   HTTP does not define: a client's mistake is never a 5xx);
//! - the path: not one of the upstream's internal endpoints
//!   (`server.deny_paths`) → else 404;
//! - framing: one `Content-Length`, never together with
//!   `Transfer-Encoding` → else 400;
//! - the token: at most one (`shared::entry_token`) → else 400.
//!
//! Then the request is either served on the fast lane (plain, and admitted
//! by a cached token or outside every queue) or handed to Pingora.

use std::net::IpAddr;

use bytes::BytesMut;

use super::{FastLane, MAX_BODY, Request, parse_length, push_header};
use crate::clock::now_ms;
use crate::edge::MethodRefusal;
use crate::forward::Rewrite;
use crate::limits::Refused;
use crate::proxy::request_id_or_new;
use crate::reply::Reply;

/// Header fields parsed on the stack; more take a heap array of
/// `limits.max_headers`.
const STACK_HEADERS: usize = 64;

/// What to do with the bytes at the front of a connection's buffer.
pub(super) enum Plan {
    /// More bytes needed; `head_done` once the head is whole and the body
    /// is awaited.
    Incomplete { head_done: bool },
    /// Answer with a problem and close.
    Refuse(Refusal),
    /// Pingora serves it; `consumed` is the length of the whole request when
    /// it is in the buffer (`None`: its body is still on the socket).
    Pingora { consumed: Option<usize> },
    /// The fast lane forwards it.
    Fast(Request),
}

/// A request refused at the edge.
pub(super) struct Refusal {
    /// The problem to send.
    pub(super) reply: Reply,
    /// Why, for `waiting_room_refused_total`.
    pub(super) reason: Refused,
    /// A HEAD request: no body in the answer.
    pub(super) head_only: bool,
    /// The request's id, when the head got that far.
    pub(super) request_id: String,
}

impl Refusal {
    fn new(status: u16, detail: impl Into<String>, reason: Refused) -> Self {
        Refusal::of(Reply::error(status, detail), reason)
    }

    fn of(reply: Reply, reason: Refused) -> Self {
        Refusal { reply, reason, head_only: false, request_id: String::new() }
    }

    /// 431: the head grew past `max` bytes without ending.
    pub(super) fn head_too_large(max: usize) -> Self {
        Refusal::of(Reply::head_too_large(max), Refused::HeadTooLarge)
    }

    /// 408: the head (or, with `body`, the body) did not arrive in time.
    pub(super) fn timed_out(body: bool) -> Self {
        if body {
            Refusal::new(408, "the request body did not arrive in time", Refused::BodyTimeout)
        } else {
            Refusal::new(408, "the request head did not arrive in time", Refused::HeadTimeout)
        }
    }
}

/// Where the head ends (just past its blank line), searching from `from`.
pub(super) fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    let window = &buf[start..];
    window
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| start + i + 2)
        .into_iter()
        .chain(window.windows(3).position(|w| w == b"\n\r\n").map(|i| start + i + 3))
        .min()
}

impl FastLane {
    /// Decide what to do with the request at the front of `buf`, whose
    /// head is complete (see [`head_end`]), from a connection whose peer is
    /// `peer`.
    pub(super) fn plan(&self, buf: &BytesMut, peer: IpAddr) -> Plan {
        let limits = &self.state.limits.config;
        let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
        let mut heap;
        let mut req = httparse::Request::new(&mut stack);
        let mut parsed = req.parse(buf);
        if matches!(parsed, Err(httparse::Error::TooManyHeaders)) && limits.max_headers > STACK_HEADERS {
            heap = vec![httparse::EMPTY_HEADER; limits.max_headers];
            req = httparse::Request::new(&mut heap);
            parsed = req.parse(buf);
        }
        let too_many =
            || Plan::Refuse(Refusal::of(Reply::too_many_headers(limits.max_headers), Refused::TooManyHeaders));
        let too_large = || Plan::Refuse(Refusal::head_too_large(limits.max_head_bytes));
        let head_len = match parsed {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() > limits.max_head_bytes => return too_large(),
            Ok(httparse::Status::Partial) => return Plan::Incomplete { head_done: false },
            Err(httparse::Error::TooManyHeaders) => return too_many(),
            Err(e) => {
                return Plan::Refuse(Refusal::new(400, format!("malformed request head: {e}"), Refused::Malformed));
            }
        };
        if head_len > limits.max_head_bytes {
            return too_large();
        }
        if req.headers.len() > limits.max_headers {
            return too_many();
        }
        let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
            return Plan::Refuse(Refusal::new(400, "malformed request line", Refused::Malformed));
        };
        let header =
            |name: &'static str| req.headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
        let request_id =
            request_id_or_new(header(shared::REQUEST_ID_HEADER).next().and_then(|v| std::str::from_utf8(v).ok()));
        let refuse = |status: u16, detail: String, reason: Refused| {
            Plan::Refuse(Refusal {
                reply: Reply::error(status, detail),
                reason,
                head_only: method == "HEAD",
                request_id: request_id.clone(),
            })
        };

        if !target.starts_with('/') {
            return refuse(
                400,
                "the request target must be a path (origin-form), like /events/1".into(),
                Refused::Path,
            );
        }
        let (path, query) = match shared::path::target(target) {
            Ok(split) => split,
            Err(e) => return refuse(400, format!("{e}; send the path in its plain form"), Refused::Path),
        };
        // 405 also for a method HTTP does not define (RFC 9110 suggests
        // 501): a client's mistake is a 4xx here, never a 5xx.
        if let Err(why) = self.state.policy.method(method) {
            let allow = self.state.policy.allow();
            let detail = match why {
                MethodRefusal::NotAllowed => format!("the method {method} is not allowed here; use one of {allow}"),
                MethodRefusal::NotImplemented => {
                    format!("{method:?} is not an HTTP method this proxy knows; use one of {allow}")
                }
            };
            return Plan::Refuse(Refusal {
                reply: Reply::error(405, detail).header("allow", allow),
                reason: Refused::Method,
                head_only: method == "HEAD",
                request_id,
            });
        }
        let own = crate::config::prefix_covers("/wr", &path);
        if !own && self.state.policy.denied(&path) {
            return refuse(404, "there is nothing at this path".into(), Refused::InternalPath);
        }

        let mut body_len: Option<usize> = None;
        let mut chunked = false;
        let mut close = false;
        let mut upgrade = false;
        let mut expect = false;
        for h in req.headers.iter() {
            let name = h.name;
            if name.eq_ignore_ascii_case("content-length") {
                let Some(n) = parse_length(h.value) else {
                    return refuse(400, "Content-Length must be a decimal number".into(), Refused::Malformed);
                };
                if body_len.is_some_and(|b| b != n) {
                    return refuse(400, "conflicting Content-Length headers".into(), Refused::Malformed);
                }
                body_len = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = true;
            } else if name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            } else if name.eq_ignore_ascii_case("expect") {
                expect = true;
            } else if name.eq_ignore_ascii_case("connection") {
                for token in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                    upgrade |= token.eq_ignore_ascii_case(b"upgrade");
                    close |= token.eq_ignore_ascii_case(b"close");
                }
            }
        }
        if chunked && body_len.is_some() {
            return refuse(
                400,
                "a request may not carry both Transfer-Encoding and Content-Length".into(),
                Refused::Malformed,
            );
        }
        let token = match shared::entry_token(header("authorization"), header("cookie")) {
            Ok(t) => t,
            Err(e) => return refuse(400, format!("{e}; send one entry token"), Refused::Malformed),
        };

        // The whole request in the buffer, or Pingora reads the rest.
        let consumed = match body_len {
            _ if chunked => return Plan::Pingora { consumed: None },
            Some(n) if n > MAX_BODY => return Plan::Pingora { consumed: None },
            Some(n) if buf.len() < head_len + n => return Plan::Incomplete { head_done: true },
            n => head_len + n.unwrap_or(0),
        };
        if own || !self.enabled || version != 1 || upgrade || expect {
            return Plan::Pingora { consumed: Some(consumed) };
        }
        let (queue, admitted) = match self.state.queues.for_path(&path) {
            None => (None, None),
            Some(q) => {
                let Some(token) = token else { return Plan::Pingora { consumed: Some(consumed) } };
                match self.cached_visitor(token, q.id(), now_ms()) {
                    Some(admitted) => (Some(q.id().to_owned()), Some(admitted)),
                    // Unknown, expired or other-queue token: Pingora's gate
                    // verifies it, caches it or refuses it.
                    None => return Plan::Pingora { consumed: Some(consumed) },
                }
            }
        };

        let forwarded_for: Vec<&[u8]> = header("x-forwarded-for").collect();
        let connection: Vec<&[u8]> = header("connection").collect();
        let peer_trusted = self.state.trusted.contains(peer);
        let client = crate::client::address(peer, forwarded_for.iter().copied(), &self.state.trusted);
        let visitor = admitted.as_ref().map(|(v, _)| v.as_str());
        let rewrite = Rewrite { visitor, request_id: &request_id, peer, peer_trusted, client };
        let mut out = Vec::with_capacity(head_len + consumed - head_len + 192);
        out.extend_from_slice(method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(path.as_bytes());
        if let Some(q) = query {
            out.push(b'?');
            out.extend_from_slice(q.as_bytes());
        }
        out.extend_from_slice(b" HTTP/1.1\r\n");
        for h in req.headers.iter() {
            if !rewrite.drops(h.name, &connection) {
                push_header(&mut out, h.name.as_bytes(), h.value);
            }
        }
        rewrite.added(&forwarded_for, |name, value| push_header(&mut out, name.as_bytes(), value));
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&buf[head_len..consumed]);

        Plan::Fast(Request {
            out,
            consumed,
            head: method == "HEAD",
            safe: crate::forward::safe_method(method),
            close,
            queue,
            admitted,
            path: path.into_owned(),
            request_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::limits::Descriptors;
    use crate::proxy::WaitingRoom;
    use crate::queues::Queues;
    use crate::state::State;

    /// A lane with one queue protecting `/events/1` and `/api`, and no
    /// cached token: a gated request never takes the fast lane here.
    fn lane() -> &'static FastLane {
        static LANE: std::sync::LazyLock<(FastLane, tempfile::TempDir)> = std::sync::LazyLock::new(build_lane);
        &LANE.0
    }

    fn build_lane() -> (FastLane, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let keys = shared::keys::KeyDir::open_or_create(dir.path()).unwrap();
        let text =
            "id = \"q\"\npaths = [\"/events/1\", \"/api\"]\nrelease_per_tick = 1\ntick = \"1s\"\nsession = \"1m\"\n";
        let queues = Queues::load(&[toml::from_str(text).unwrap()]).unwrap();
        let state = Arc::new(State::new(queues, keys, false));
        let upstream = Arc::new(
            crate::upstreams::Upstreams::new(&["127.0.0.1:9".parse().unwrap()], std::time::Duration::from_secs(1))
                .unwrap(),
        );
        let conf = Arc::new(pingora::server::configuration::ServerConf::default());
        let pingora = pingora::proxy::http_proxy(&conf, WaitingRoom::new(state.clone(), upstream.clone()));
        (FastLane::new(pingora, state, upstream, true, Descriptors::new(64)), dir)
    }

    fn peer() -> IpAddr {
        "127.0.0.1".parse().unwrap()
    }

    /// Whatever the bytes, the plan is one of the four and a refusal is a 4xx.
    fn check_plan(lane: &FastLane, bytes: &[u8]) -> Result<(), TestCaseError> {
        let buf = BytesMut::from(bytes);
        match lane.plan(&buf, peer()) {
            Plan::Refuse(r) => prop_assert!((400..500).contains(&r.reply.status), "{}", r.reply.status),
            Plan::Pingora { consumed } => prop_assert!(consumed.is_none_or(|c| c <= buf.len())),
            Plan::Incomplete { .. } => {}
            Plan::Fast(req) => {
                prop_assert!(req.consumed <= buf.len());
                // What goes upstream is a well-formed request with our own
                // ids and a canonical path outside every queue.
                let mut headers = [httparse::EMPTY_HEADER; 256];
                let mut up = httparse::Request::new(&mut headers);
                prop_assert!(matches!(up.parse(&req.out), Ok(httparse::Status::Complete(_))));
                let path = up.path.unwrap_or("");
                let path = path.split_once('?').map_or(path, |(p, _)| p);
                let canonical = shared::path::canonical(path).map(|c| c.into_owned());
                prop_assert_eq!(canonical.as_deref(), Ok(path));
                prop_assert!(lane.state.queues.for_path(path).is_none());
                let count = |name: &str| up.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).count();
                prop_assert_eq!(count("x-request-id"), 1);
                prop_assert_eq!(count("x-forwarded-for"), 1);
                prop_assert_eq!(count("x-visitor-id"), 0);
            }
        }
        Ok(())
    }

    fn piece() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            Just("GET "),
            Just("POST "),
            Just("CONNECT "),
            Just("get "),
            Just("/"),
            Just("//"),
            Just("/events/1"),
            Just("/api"),
            Just("/wr/q/join"),
            Just("%2F"),
            Just("%31"),
            Just("#"),
            Just("?a=1"),
            Just(" HTTP/1.1"),
            Just(" HTTP/1.0"),
            Just("\r\n"),
            Just("\n"),
            Just("Host: x"),
            Just("Content-Length: 3"),
            Just("Content-Length: 99999999"),
            Just("Transfer-Encoding: chunked"),
            Just("Connection: close, x-a"),
            Just("x-visitor-id: evil"),
            Just("X-Forwarded-For: 1.2.3.4"),
            Just("Authorization: Bearer a.b.c"),
            Just("Cookie: wr_entry=t; wr_entry=u"),
            Just("x-request-id: aaaaaaaaaaa"),
            Just(": "),
            Just("abc"),
            Just("\0"),
            Just("\r\n\r\n"),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1500))]

        #[test]
        fn any_bytes_get_a_plan_and_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            check_plan(lane(), &bytes)?;
        }

        #[test]
        fn heads_built_from_tricky_pieces_are_refused_or_rewritten_cleanly(
            pieces in proptest::collection::vec(piece(), 0..24)
        ) {
            check_plan(lane(), pieces.concat().as_bytes())?;
        }

        #[test]
        fn well_formed_heads_with_any_target_are_refused_or_rewritten_cleanly(
            method in prop_oneof![Just("GET"), Just("POST"), Just("DELETE"), Just("BREW")],
            target in "[/a-z0-9%.#?+\\\\-]{0,24}",
            headers in proptest::collection::vec(("[A-Za-z-]{1,12}", "[ -~]{0,16}"), 0..8),
        ) {
            let mut head = format!("{method} {target} HTTP/1.1\r\nHost: x\r\n");
            for (n, v) in headers {
                head.push_str(&format!("{n}: {v}\r\n"));
            }
            head.push_str("\r\n");
            check_plan(lane(), head.as_bytes())?;
        }
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line_whatever_the_line_endings() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nNEXT", 0), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\nNEXT", 0), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0), None);
        // Searching on from where the last search stopped still finds a
        // terminator split across reads.
        let whole = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(head_end(whole, 25), Some(27));
        assert_eq!(head_end(b"", 0), None);
    }
}
