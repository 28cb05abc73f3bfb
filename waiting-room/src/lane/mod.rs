//! The proxy's public listener and its fast lane: every request is read
//! here first; the common proxy request is served without Pingora's
//! per-request machinery, everything else is handed to Pingora.
//!
//! # Layout
//!
//! - [`listener`]: one `SO_REUSEPORT` socket and single-threaded runtime per
//!   worker thread; connections admitted against the descriptor budget and
//!   the per-client cap.
//! - this module: the connection loop (deadlines, hand-offs to Pingora) and
//!   forwarding on the fast lane.
//! - [`head`]: the request head: limits and edge rules, then the plan
//!   (refuse, fast lane, or Pingora).
//! - [`upstream`]: the per-thread pool of upstream connections.
//! - [`response`]: the upstream's response head and the body copied through.
//! - [`chunked`]: where a chunked body ends.
//! - [`local`]: each worker thread's own metric tallies and copies of the
//!   gate's cached tokens.
//!
//! # Why a lane in front of Pingora
//!
//! Pingora's HTTP/1 proxy loop cost about twice nginx's CPU per proxied
//! request, with our own callbacks a small part of it (BENCHMARKS.md). The
//! fast lane serves a request itself when it is plain: HTTP/1.1, a body only
//! by `Content-Length` (≤ 64 KiB, read whole before forwarding), no
//! `Transfer-Encoding`, `Upgrade` or `Expect`, outside `/wr`, and outside
//! every queue or carrying a token the gate has already verified and cached
//! for that path's queue ([`Gate::check_cached`]). It forwards over a
//! per-thread pool of keep-alive upstream connections with the rewrite of
//! [`crate::forward`] (the Pingora path applies the same rules) and streams
//! the response back by its framing.
//!
//! Anything else — the queue API and page, WebSockets, gate refusals, a
//! token seen for the first time, HTTP/1.0, chunked or large bodies — is
//! handed to Pingora for exactly that request: the request's bytes are put
//! back in front of the stream (`Stream::rewind`) and anything pipelined
//! behind it stays here. When Pingora is done and the connection may be
//! reused, the next request comes back here, so one keep-alive connection
//! can alternate between the lanes. With `server.fast_lane = false` every
//! request is handed over, after the same checks.
//!
//! # Deadlines
//!
//! A connection waits at most `limits.idle_timeout` for the first byte of a
//! request, then `limits.header_timeout` for the rest of its head (408
//! after that), then `limits.body_timeout` for a body the lane buffers
//! (Pingora reads larger ones with the same timeout per read). A client
//! must take each part of a response within `limits.send_timeout`.
//!
//! [`Gate::check_cached`]: crate::gate::Gate::check_cached

mod chunked;
mod head;
mod listener;
mod local;
mod response;
mod upstream;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use pingora::apps::HttpServerApp;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use prometheus::{Histogram, IntCounter};
use shared::REQUEST_ID_HEADER;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use self::head::{Plan, Refusal, head_end};
pub use self::listener::LaneService;
use self::local::{FLUSH, flush_local, forget_expired_local};
use self::response::Framing;
use self::upstream::Exchange;
use crate::limits::Descriptors;
use crate::metrics::METRICS;
use crate::proxy::WaitingRoom;
use crate::reply::Reply;
use crate::state::State;
use crate::upstreams::Upstreams;

/// Largest request body the lane buffers; larger ones go to Pingora.
const MAX_BODY: usize = 64 * 1024;
/// Read buffer size.
const CHUNK: usize = 8 * 1024;

/// Status classes of the upstream latency histogram, by `status / 100`.
const CLASSES: [&str; 6] = ["error", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// The listening service's application: the fast lane in front of Pingora.
pub struct FastLane {
    pingora: Arc<HttpProxy<WaitingRoom>>,
    state: Arc<State>,
    upstreams: Arc<Upstreams>,
    enabled: bool,
    /// Tells this lane's per-worker state ([`Local`]) from another lane's.
    id: u64,
    /// `gate_decisions_total{queue, "allowed"}` per queue, resolved once.
    allowed: Vec<(String, IntCounter)>,
    /// `upstream_latency_seconds{class}` in [`CLASSES`] order.
    latency: Vec<Histogram>,
    /// `proxied_requests_total{lane="fast"}`.
    proxied: IntCounter,
    /// Descriptors for client and upstream connections.
    descriptors: Arc<Descriptors>,
}

impl FastLane {
    /// The lane in front of `pingora`; with `enabled` false every request
    /// goes to Pingora. `descriptors` is the budget of connections.
    pub fn new(
        pingora: HttpProxy<WaitingRoom>,
        state: Arc<State>,
        upstreams: Arc<Upstreams>,
        enabled: bool,
        descriptors: Arc<Descriptors>,
    ) -> Self {
        let allowed = state
            .queues
            .all()
            .iter()
            .map(|q| (q.id().to_owned(), METRICS.gate.with_label_values(&[q.id(), "allowed"])))
            .collect();
        let latency = CLASSES.iter().map(|c| METRICS.upstream_latency.with_label_values(&[c])).collect();
        let proxied = METRICS.proxied.with_label_values(&["fast"]);
        static IDS: AtomicU64 = AtomicU64::new(0);
        let id = IDS.fetch_add(1, Ordering::Relaxed);
        FastLane { pingora: Arc::new(pingora), state, upstreams, enabled, id, allowed, latency, proxied, descriptors }
    }

    /// Hand one request to Pingora: its bytes (`consumed` of them, or all of
    /// `buf` when its body is still on the socket) go back in front of the
    /// stream. The stream comes back when the connection may be reused.
    async fn handoff(
        self: &Arc<Self>,
        conn: Conn,
        buf: &mut BytesMut,
        consumed: Option<usize>,
        shutdown: &ShutdownWatch,
    ) -> Option<Conn> {
        let mut io = match conn {
            Conn::Raw(tcp) => pingora_stream(tcp),
            Conn::Pingora(io) => io,
        };
        // Requests pipelined behind this one stay in `buf` for the next turn
        // of the loop: Pingora would drop bytes it read past its request.
        let take = consumed.unwrap_or(buf.len());
        io.rewind(&buf[..take]);
        buf.advance(take);
        let limits = &self.state.limits.config;
        let mut session = ServerSession::new_http1(io);
        // A body still on the socket may be followed by pipelined requests
        // Pingora would read past and drop: such a response says close.
        let keep = consumed.is_some() && !*shutdown.borrow();
        session.set_keepalive(keep.then(|| limits.idle_timeout.as_secs().max(1)));
        session.set_read_timeout(Some(limits.body_timeout));
        session.set_write_timeout(Some(limits.send_timeout));
        let reused = self.pingora.process_new_http(session, shutdown).await?;
        let (stream, _) = reused.consume();
        stream.into_any().downcast::<L4Stream>().ok().map(Conn::Pingora)
    }

    /// Serve one client connection from `peer` until it closes.
    async fn serve(self: Arc<Self>, tcp: TcpStream, peer: IpAddr, shutdown: ShutdownWatch) {
        let mut conn = Conn::Raw(tcp);
        let mut buf = BytesMut::with_capacity(CHUNK);
        let mut rbuf = BytesMut::with_capacity(CHUNK);
        let mut watch = shutdown.clone();
        loop {
            if *shutdown.borrow() && buf.is_empty() {
                return;
            }
            let next = match &mut conn {
                Conn::Raw(tcp) => self.next_request(tcp, peer, &mut buf, &mut watch).await,
                Conn::Pingora(io) => self.next_request(&mut **io, peer, &mut buf, &mut watch).await,
            };
            match next {
                Next::Closed => return,
                Next::Refuse(refusal) => {
                    match &mut conn {
                        Conn::Raw(tcp) => self.refuse(tcp, peer, refusal).await,
                        Conn::Pingora(io) => self.refuse(&mut **io, peer, refusal).await,
                    }
                    return;
                }
                Next::Pingora { consumed } => match self.handoff(conn, &mut buf, consumed, &shutdown).await {
                    Some(c) => conn = c,
                    None => return,
                },
                Next::Fast(req) => {
                    buf.advance(req.consumed);
                    let keep = match &mut conn {
                        Conn::Raw(tcp) => self.forward(tcp, req, &mut rbuf, &shutdown).await,
                        Conn::Pingora(io) => self.forward(&mut **io, req, &mut rbuf, &shutdown).await,
                    };
                    if !keep {
                        return;
                    }
                }
            }
        }
    }

    /// Read until `buf` holds a whole request, then decide what happens to
    /// it, within the deadlines of the module docs. An idle connection is
    /// closed quietly when the server starts shutting down (as Pingora
    /// does), or after `limits.idle_timeout`.
    async fn next_request<S: AsyncRead + Unpin>(
        &self,
        io: &mut S,
        peer: IpAddr,
        buf: &mut BytesMut,
        shutdown: &mut ShutdownWatch,
    ) -> Next {
        let limits = &self.state.limits.config;
        let mut scanned = 0;
        let mut head_deadline: Option<tokio::time::Instant> = None;
        let mut body_deadline: Option<tokio::time::Instant> = None;
        loop {
            if !buf.is_empty() {
                head_deadline.get_or_insert_with(|| tokio::time::Instant::now() + limits.header_timeout);
                if body_deadline.is_some() || head_end(buf, scanned).is_some() {
                    match self.plan(buf, peer) {
                        Plan::Incomplete { head_done: true } => {
                            body_deadline.get_or_insert_with(|| tokio::time::Instant::now() + limits.body_timeout);
                        }
                        Plan::Incomplete { head_done: false } => {}
                        Plan::Refuse(r) => return Next::Refuse(r),
                        Plan::Pingora { consumed } => return Next::Pingora { consumed },
                        Plan::Fast(req) => return Next::Fast(req),
                    }
                } else if buf.len() > limits.max_head_bytes {
                    return Next::Refuse(Refusal::head_too_large(limits.max_head_bytes));
                }
                scanned = buf.len();
            }
            buf.reserve(CHUNK);
            let read = match (body_deadline, head_deadline) {
                (Some(deadline), _) | (None, Some(deadline)) => {
                    tokio::time::timeout_at(deadline, io.read_buf(buf)).await
                }
                (None, None) => tokio::select! {
                    biased;
                    read = tokio::time::timeout(limits.idle_timeout, io.read_buf(buf)) => read,
                    changed = shutdown.changed() => {
                        // The watch may also fire with `false` (Pingora's
                        // accept loop allows for that); only `true` closes.
                        if changed.is_err() || *shutdown.borrow() {
                            return Next::Closed;
                        }
                        continue;
                    }
                },
            };
            match read {
                Ok(Ok(n)) if n > 0 => {}
                // Silence in the middle of a request: tell the client why.
                Err(_) if !buf.is_empty() => return Next::Refuse(Refusal::timed_out(body_deadline.is_some())),
                _ => return Next::Closed,
            }
        }
    }

    /// Answer a refused request and log it (a client's fault: WARN).
    async fn refuse<S: AsyncWrite + Unpin>(&self, io: &mut S, peer: IpAddr, r: Refusal) {
        r.reason.count();
        let mut reply = r.reply;
        if !r.request_id.is_empty() {
            reply = reply.header(REQUEST_ID_HEADER, r.request_id.clone());
        }
        tracing::warn!(
            request_id = %r.request_id,
            client = %peer,
            status = reply.status,
            reason = r.reason.label(),
            "refused"
        );
        let within = self.state.limits.config.send_timeout;
        let _ = tokio::time::timeout(within, write_all_flush(io, &reply.to_http1(r.head_only, true))).await;
    }

    /// Forward `req` and stream the response back. Returns whether the client
    /// connection stays open.
    async fn forward<S: AsyncWrite + Unpin>(
        &self,
        io: &mut S,
        req: Request,
        rbuf: &mut BytesMut,
        shutdown: &ShutdownWatch,
    ) -> bool {
        self.count_proxied(req.queue.as_deref());
        let within = self.state.limits.config.send_timeout;
        let started = Instant::now();
        self.signal(req.queue.as_deref(), started, None);
        let mut tried: Vec<SocketAddr> = Vec::new();
        let exchanged = loop {
            let Some(addr) = self.upstreams.pick(&tried) else {
                break Err(format!("no healthy upstream instance (tried {tried:?})"));
            };
            match upstream::exchange(addr, &self.descriptors, &req.out, rbuf).await {
                Ok((up, head)) => break Ok((addr, up, head)),
                // Nothing was sent, or nothing came back for a request that
                // changes nothing: another instance may take it.
                Err(Exchange::Connect(e)) => {
                    tracing::warn!(upstream = %addr, error = %e, "upstream connect failed; trying another");
                    tried.push(addr);
                }
                Err(Exchange::NoAnswer(e)) if req.safe => {
                    tracing::warn!(upstream = %addr, error = %e, "no answer to a safe request; trying another");
                    tried.push(addr);
                }
                Err(Exchange::NoAnswer(e) | Exchange::Failed(e)) => break Err(e),
            }
        };
        let (addr, mut up, head) = match exchanged {
            Ok(ok) => ok,
            Err(error) => {
                self.observe_latency(0, started);
                self.signal(req.queue.as_deref(), started, Some(true));
                let reply = Reply::bad_gateway().header(REQUEST_ID_HEADER, req.request_id.clone());
                let keep = !req.close && !*shutdown.borrow();
                let sent = tokio::time::timeout(within, write_all_flush(io, &reply.to_http1(req.head, !keep)))
                    .await
                    .is_ok_and(|r| r.is_ok());
                log(&req, 502, Some(&error));
                return keep && sent;
            }
        };
        self.signal(req.queue.as_deref(), started, Some(head.status >= 500));
        // The purchase ended the session: refused from the next request on,
        // before this answer reaches the client.
        if let (Some(why), Some(queue), Some((visitor, iat))) = (head.session_end, &req.queue, &req.admitted) {
            crate::session::end(&self.state, queue, visitor, *iat, why).await;
        }
        let close = req.close || *shutdown.borrow() || head.framing(req.head) == Framing::UntilClose;
        let mut out = Vec::with_capacity(head.len + 64 + rbuf.len().min(CHUNK));
        head.write(&rbuf[..head.len], &req.request_id, close, &mut out);
        rbuf.advance(head.len);

        let result = response::copy_body(io, &mut up.stream, rbuf, out, head.framing(req.head), within).await;
        let flushed = tokio::time::timeout(within, io.flush()).await.is_ok_and(|r| r.is_ok());
        self.observe_latency(if result.is_ok() { head.status } else { 0 }, started);
        match result {
            Ok(reusable) => {
                if reusable && head.keep_alive {
                    upstream::pool_put(addr, up);
                }
                log(&req, head.status, None);
                flushed && !close
            }
            Err(e) => {
                log(&req, head.status, Some(&e.to_string()));
                false
            }
        }
    }
}

/// Pingora's stream over an accepted socket, with the socket digest its
/// listener would have set, so `Session::client_addr` knows the peer.
fn pingora_stream(tcp: TcpStream) -> Box<L4Stream> {
    use pingora::protocols::{GetSocketDigest, SocketDigest};
    use std::os::fd::AsRawFd;
    let fd = tcp.as_raw_fd();
    let mut stream = Box::new(L4Stream::from(tcp));
    stream.set_socket_digest(SocketDigest::from_raw_fd(fd));
    stream
}

/// A client connection: our own socket until the first hand-off to Pingora,
/// then Pingora's stream wrapping it.
enum Conn {
    Raw(TcpStream),
    Pingora(Box<L4Stream>),
}

/// What to do with the next request of a connection.
enum Next {
    Closed,
    Refuse(Refusal),
    Pingora { consumed: Option<usize> },
    Fast(Request),
}

/// A request the lane forwards.
struct Request {
    /// The upstream request: rewritten head and body.
    out: Vec<u8>,
    /// Bytes of the client's request (head and body).
    consumed: usize,
    /// A HEAD request: the response has no body.
    head: bool,
    /// A safe method (`forward::safe_method`): may be sent again elsewhere.
    safe: bool,
    /// The client asked to close after this response.
    close: bool,
    queue: Option<String>,
    /// The visitor the gate admitted, and their token's `iat`.
    admitted: Option<(String, i64)>,
    path: String,
    request_id: String,
}

fn log(req: &Request, status: u16, error: Option<&str>) {
    let outcome = if req.queue.is_some() { "allowed" } else { "pass" };
    let queue = req.queue.as_deref().unwrap_or("");
    match error {
        // The upstream's failure (an operator's fault, as in Pingora's log):
        // the client only got a generic 502.
        Some(error) => tracing::error!(
            request_id = %req.request_id, path = %req.path, status, outcome, queue, lane = "fast", error, "request"
        ),
        None => tracing::info!(
            request_id = %req.request_id, path = %req.path, status, outcome, queue, lane = "fast", "request"
        ),
    }
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A `Content-Length` value: digits only.
fn parse_length(value: &[u8]) -> Option<usize> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0usize, |n, d| n * 10 + usize::from(d - b'0')))
}

async fn write_all_flush<S: AsyncWrite + Unpin>(io: &mut S, data: &[u8]) -> io::Result<()> {
    io.write_all(data).await?;
    io.flush().await
}

/// Write all of `data` to the client within `within`.
async fn send<S: AsyncWrite + Unpin>(io: &mut S, data: &[u8], within: Duration) -> io::Result<()> {
    tokio::time::timeout(within, io.write_all(data))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the client did not take the response"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_digits_only() {
        assert_eq!(parse_length(b" 42 "), Some(42));
        assert_eq!(parse_length(b"+4"), None);
        assert_eq!(parse_length(b""), None);
        assert_eq!(parse_length(b"1e3"), None);
        assert_eq!(parse_length(b"9999999999999999999"), None);
    }
}
