//! The upstream's response on the fast lane: its head (status, framing,
//! whether the connection may be reused), the head the client gets, and the
//! body copied through by its framing.

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use shared::REQUEST_ID_HEADER;
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;

use super::chunked::Chunked;
use super::upstream::UpError;
use super::{CHUNK, parse_length, push_header, send};
use crate::forward::{SESSION_HEADER, SessionEnd};

/// Response headers accepted from the upstream.
const MAX_RESPONSE_HEADERS: usize = 128;

/// How the response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// The parts of an upstream response head the lane needs.
#[derive(Debug)]
pub(super) struct ResponseHead {
    /// Length of the head in the buffer.
    pub(super) len: usize,
    pub(super) status: u16,
    length: Option<u64>,
    chunked: bool,
    /// Some transfer coding other than a final `chunked`.
    other_coding: bool,
    /// The upstream connection may be reused.
    pub(super) keep_alive: bool,
    /// The upstream ended the visitor's session (`wr-session: end`).
    pub(super) session_end: Option<SessionEnd>,
}

impl ResponseHead {
    pub(super) fn parse(buf: &[u8]) -> Result<Option<ResponseHead>, UpError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(UpError::Bad(format!("malformed response head: {e}"))),
        };
        let status = resp.code.unwrap_or(0);
        let mut keep_alive = resp.version == Some(1);
        let mut length = None;
        let mut chunked = false;
        let mut other_coding = false;
        let mut session_end = None;
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = parse_length(h.value)
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| UpError::Bad("invalid Content-Length".into()))?;
                if length.is_some_and(|l| l != n) {
                    return Err(UpError::Bad("conflicting Content-Length".into()));
                }
                length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                let last = h.value.rsplit(|b| *b == b',').next().map(<[u8]>::trim_ascii).unwrap_or_default();
                chunked = last.eq_ignore_ascii_case(b"chunked");
                other_coding |= !chunked;
            } else if h.name.eq_ignore_ascii_case("connection") {
                for token in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        keep_alive = false;
                    }
                }
            } else if h.name.eq_ignore_ascii_case(SESSION_HEADER) {
                session_end = session_end.or(SessionEnd::parse(h.value));
            }
        }
        Ok(Some(ResponseHead { len, status, length, chunked, other_coding, keep_alive, session_end }))
    }

    pub(super) fn framing(&self, head_request: bool) -> Framing {
        if head_request || (100..200).contains(&self.status) || self.status == 204 || self.status == 304 {
            Framing::Empty
        } else if self.chunked && !self.other_coding {
            Framing::Chunked
        } else if self.other_coding {
            Framing::UntilClose
        } else if let Some(n) = self.length {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        }
    }

    /// The head for the client: the upstream's status and headers without
    /// hop-by-hop `Connection`/`Keep-Alive`, its `x-request-id` and
    /// `wr-session` (for the proxy only), then ours.
    pub(super) fn write(&self, raw: &[u8], request_id: &str, close: bool, out: &mut Vec<u8>) {
        let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        // Parsed once already, so this cannot fail.
        let _ = resp.parse(raw);
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(self.status.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("connection")
                || h.name.eq_ignore_ascii_case("keep-alive")
                || h.name.eq_ignore_ascii_case(REQUEST_ID_HEADER)
                || h.name.eq_ignore_ascii_case(SESSION_HEADER)
            {
                continue;
            }
            push_header(out, h.name.as_bytes(), h.value);
        }
        push_header(out, REQUEST_ID_HEADER.as_bytes(), request_id.as_bytes());
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Copy the response body from `up` to the client. `out` holds the response
/// head; `rbuf` the body bytes already read. Returns whether the upstream
/// connection ended cleanly at the end of the body and may be reused.
pub(super) async fn copy_body<S: AsyncWrite + Unpin>(
    io: &mut S,
    up: &mut TcpStream,
    rbuf: &mut BytesMut,
    mut out: Vec<u8>,
    framing: Framing,
    within: Duration,
) -> io::Result<bool> {
    match framing {
        Framing::Empty => {
            send(io, &out, within).await?;
            Ok(rbuf.is_empty())
        }
        Framing::Length(mut remaining) => {
            let take = usize::try_from(remaining).unwrap_or(usize::MAX).min(rbuf.len());
            out.extend_from_slice(&rbuf[..take]);
            rbuf.advance(take);
            remaining -= take as u64;
            send(io, &out, within).await?;
            while remaining > 0 {
                rbuf.clear();
                rbuf.reserve(CHUNK);
                if up.read_buf(rbuf).await? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "upstream closed inside the body"));
                }
                let take = usize::try_from(remaining).unwrap_or(usize::MAX).min(rbuf.len());
                send(io, &rbuf[..take], within).await?;
                rbuf.advance(take);
                remaining -= take as u64;
            }
            Ok(rbuf.is_empty())
        }
        Framing::Chunked => {
            let mut decoder = Chunked::default();
            let mut first = true;
            loop {
                let used = decoder.feed(rbuf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                if first {
                    out.extend_from_slice(&rbuf[..used]);
                    send(io, &out, within).await?;
                    first = false;
                } else {
                    send(io, &rbuf[..used], within).await?;
                }
                rbuf.advance(used);
                if decoder.done() {
                    return Ok(rbuf.is_empty());
                }
                rbuf.clear();
                rbuf.reserve(CHUNK);
                if up.read_buf(rbuf).await? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "upstream closed inside the body"));
                }
            }
        }
        Framing::UntilClose => {
            send(io, &out, within).await?;
            send(io, rbuf, within).await?;
            loop {
                rbuf.clear();
                rbuf.reserve(CHUNK);
                if up.read_buf(rbuf).await? == 0 {
                    return Ok(false);
                }
                send(io, rbuf, within).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_framing_follows_rfc_9112() {
        let head = |raw: &str| match ResponseHead::parse(raw.as_bytes()) {
            Ok(Some(h)) => h,
            _ => panic!("unparsed: {raw}"),
        };
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n");
        assert_eq!(h.framing(false), Framing::Length(12));
        assert_eq!(h.framing(true), Framing::Empty);
        assert!(h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\ncontent-length: 3\r\n\r\n");
        assert_eq!(h.framing(false), Framing::Chunked);
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!(h.framing(false), Framing::UntilClose);
        let h = head("HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(h.framing(false), Framing::Empty);
        let h = head("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        assert_eq!(h.framing(false), Framing::UntilClose);
        assert!(!h.keep_alive);
        assert!(!head("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n").keep_alive);
        assert!(ResponseHead::parse(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n").is_err());
        assert!(ResponseHead::parse(b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n").is_err());
        assert!(matches!(ResponseHead::parse(b"HTTP/1.1 200 OK\r\n"), Ok(None)));
    }

    #[test]
    fn the_client_head_drops_hop_by_hop_headers_and_carries_the_request_id() {
        let raw = b"HTTP/1.1 201 Created\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nx-request-id: theirs\r\nwr-session: end; reason=\"confirm\"\r\ncontent-length: 0\r\nx-a: b\r\n\r\n";
        let h = match ResponseHead::parse(raw) {
            Ok(Some(h)) => h,
            _ => panic!("unparsed"),
        };
        let mut out = Vec::new();
        h.write(raw, "ours", true, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 201 Created\r\ncontent-length: 0\r\nx-a: b\r\nx-request-id: ours\r\nconnection: close\r\n\r\n"
        );
    }
}
