//! The fast lane: the common proxy request served without Pingora's
//! per-request machinery, everything else handed to Pingora.
//!
//! Profiling showed Pingora's HTTP/1 proxy loop spending ~45 µs of CPU per
//! proxied request against nginx's ~20 µs, with our own callbacks at ~1.5% of
//! it. The fast lane takes a request off the connection itself and serves it
//! when it is plain:
//!
//! - HTTP/1.1, origin-form target, head complete within 16 KiB, a body only
//!   by `Content-Length` (≤ 64 KiB, read whole before forwarding), no
//!   `Transfer-Encoding`, `Upgrade` or `Expect`;
//! - outside `/wr`;
//! - outside every queue, or carrying a token the gate has already verified
//!   and cached for that path's queue ([`Gate::check_cached`]).
//!
//! Such a request is forwarded over a per-thread pool of keep-alive upstream
//! connections with the same header rewrite as the Pingora path (client
//! `x-visitor-id` removed, the verified one added, `x-request-id` kept when
//! well-formed or created; hop-by-hop `Connection`/`Keep-Alive` dropped), and
//! the response is streamed back by its framing (`Content-Length`, chunked,
//! or until close).
//!
//! The lane also owns the listener: one `SO_REUSEPORT` socket and one
//! single-threaded runtime per worker thread, like nginx workers, so a
//! connection is accepted, read, written and proxied on one thread with its
//! own upstream pool (Pingora's listener accepts on one runtime and hands the
//! connection to a random one, so half of all socket events crossed threads).
//!
//! Anything else — the queue API and page, WebSockets, refusals, a token seen
//! for the first time, HTTP/1.0, odd framing, malformed input — is handed to
//! Pingora for exactly that request, with the bytes already read put back in
//! front of the stream (`Stream::rewind`). When Pingora is done with it and
//! the connection may be reused, the next request comes back here, so one
//! keep-alive connection can alternate between the lanes.
//!
//! [`Gate::check_cached`]: crate::gate::Gate::check_cached

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::prelude::fast_timeout::fast_timeout;
use pingora::protocols::Stream;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ListenFds;
use pingora::server::ShutdownWatch;
use pingora::services::Service;
use prometheus::local::{LocalHistogram, LocalIntCounter};
use prometheus::{Histogram, IntCounter};
use shared::{REQUEST_ID_HEADER, VISITOR_HEADER};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::http::Reply;
use crate::metrics::METRICS;
use crate::proxy::{WaitingRoom, request_id_or_new};
use crate::state::{State, now_ms};

/// Longest request head the lane parses; longer ones go to Pingora.
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body the lane buffers; larger ones go to Pingora.
const MAX_BODY: usize = 64 * 1024;
/// Request headers the lane parses; more go to Pingora.
const MAX_HEADERS: usize = 64;
/// Response headers accepted from the upstream.
const MAX_RESPONSE_HEADERS: usize = 128;
/// Longest upstream response head.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Idle time allowed between requests on a client connection (Pingora's
/// default keep-alive is the same).
const KEEPALIVE: Duration = Duration::from_secs(60);
/// Connecting to the upstream (as the Pingora path's peer options).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A pooled upstream connection idle longer than this is not reused.
const POOL_IDLE: Duration = Duration::from_secs(50);
/// Idle upstream connections kept per worker thread.
const POOL_MAX: usize = 512;
/// Read buffer size.
const CHUNK: usize = 8 * 1024;
/// How often a worker adds its metric tallies to the shared registry.
const FLUSH: Duration = Duration::from_millis(100);
/// Tokens a worker keeps its own copy of.
const LOCAL_TOKENS: usize = 16 * 1024;

/// Status classes of the upstream latency histogram, by `status / 100`.
const CLASSES: [&str; 6] = ["error", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// The listening service's application: the fast lane in front of Pingora.
pub struct FastLane {
    pingora: Arc<HttpProxy<WaitingRoom>>,
    state: Arc<State>,
    upstream: SocketAddr,
    enabled: bool,
    /// Tells this lane's per-worker state ([`Local`]) from another lane's.
    id: u64,
    /// `gate_decisions_total{queue, "allowed"}` per queue, resolved once.
    allowed: Vec<(String, IntCounter)>,
    /// `upstream_latency_seconds{class}` in [`CLASSES`] order.
    latency: Vec<Histogram>,
    /// `proxied_requests_total{lane="fast"}`.
    proxied: IntCounter,
}

/// A worker thread's own tallies of the lane's per-request metrics and its
/// own copy of the gate's cached tokens, so that a request on the fast lane
/// writes no memory another worker also writes (each shared counter, and the
/// read lock of the gate's cache shard, would bounce a cache line between
/// the cores on every request). The tallies reach the shared registry every
/// [`FLUSH`]; a token is copied here only after the shared gate has it as
/// valid, and is honoured under the same rule (same queue, before `exp`).
struct Local {
    lane: u64,
    allowed: Vec<(String, LocalIntCounter)>,
    latency: Vec<LocalHistogram>,
    proxied: LocalIntCounter,
    hits: LocalIntCounter,
    tokens: HashMap<Box<str>, Admitted>,
}

struct Admitted {
    queue: Box<str>,
    visitor: Box<str>,
    /// Valid strictly before this (ms).
    until_ms: i64,
}

impl Local {
    fn flush(&self) {
        self.allowed.iter().for_each(|(_, c)| c.flush());
        self.latency.iter().for_each(LocalHistogram::flush);
        self.proxied.flush();
        self.hits.flush();
    }
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// Flush this thread's tallies to the registry.
fn flush_local() {
    LOCAL.with_borrow(|l| l.iter().for_each(Local::flush));
}

impl FastLane {
    /// The lane in front of `pingora`; with `enabled` false every request
    /// goes to Pingora.
    pub fn new(pingora: HttpProxy<WaitingRoom>, state: Arc<State>, upstream: SocketAddr, enabled: bool) -> Self {
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
        FastLane { pingora: Arc::new(pingora), state, upstream, enabled, id, allowed, latency, proxied }
    }

    /// Run `f` on this thread's [`Local`] for this lane.
    fn local<R>(&self, f: impl FnOnce(&mut Local) -> R) -> R {
        LOCAL.with_borrow_mut(|slot| {
            let local = match slot {
                Some(l) if l.lane == self.id => l,
                _ => {
                    if let Some(old) = slot.take() {
                        old.flush();
                    }
                    slot.insert(Local {
                        lane: self.id,
                        allowed: self.allowed.iter().map(|(q, c)| (q.clone(), c.local())).collect(),
                        latency: self.latency.iter().map(Histogram::local).collect(),
                        proxied: self.proxied.local(),
                        hits: crate::metrics::TOKEN_CACHE_HITS.local(),
                        tokens: HashMap::new(),
                    })
                }
            };
            f(local)
        })
    }

    /// The visitor admitted by `token` to `queue`, if the gate has already
    /// verified and cached it: from this worker's copy, else from the shared
    /// cache (then copied here).
    fn cached_visitor(&self, token: &str, queue: &str, now_ms: i64) -> Option<String> {
        self.local(|l| {
            if let Some(a) = l.tokens.get(token) {
                if a.until_ms > now_ms && &*a.queue == queue {
                    l.hits.inc();
                    return Some(a.visitor.to_string());
                }
                // Expired, or for another queue: the full gate decides.
                return None;
            }
            let (visitor, until_ms) = self.state.gate.check_cached(token, queue, now_ms)?;
            l.hits.inc();
            if l.tokens.len() >= LOCAL_TOKENS {
                l.tokens.retain(|_, a| a.until_ms > now_ms);
                if l.tokens.len() >= LOCAL_TOKENS {
                    l.tokens.clear();
                }
            }
            l.tokens.insert(token.into(), Admitted { queue: queue.into(), visitor: visitor.as_str().into(), until_ms });
            Some(visitor)
        })
    }

    fn count_proxied(&self, queue: Option<&str>) {
        self.local(|l| {
            l.proxied.inc();
            if let Some(c) = queue.and_then(|queue| l.allowed.iter().find(|(q, _)| q == queue)) {
                c.1.inc();
            }
        });
    }

    fn observe_latency(&self, status: u16, started: Instant) {
        let class = usize::from(status / 100).min(CLASSES.len() - 1);
        let seconds = started.elapsed().as_secs_f64();
        self.local(|l| {
            if let Some(h) = l.latency.get(class) {
                h.observe(seconds);
            }
        });
    }

    /// Hand one request to Pingora: `buf` goes back in front of the stream.
    /// The stream comes back when the connection may be reused.
    async fn handoff(self: &Arc<Self>, conn: Conn, buf: &mut BytesMut, shutdown: &ShutdownWatch) -> Option<Conn> {
        let mut io = match conn {
            Conn::Raw(tcp) => pingora_stream(tcp),
            Conn::Pingora(io) => io,
        };
        io.rewind(buf);
        buf.clear();
        let mut session = ServerSession::new_http1(io);
        session.set_keepalive(if *shutdown.borrow() { None } else { Some(KEEPALIVE.as_secs()) });
        let reused = self.pingora.process_new_http(session, shutdown).await?;
        let (stream, _) = reused.consume();
        stream.into_any().downcast::<L4Stream>().ok().map(Conn::Pingora)
    }

    /// Serve one client connection until it closes.
    async fn serve(self: Arc<Self>, tcp: TcpStream, shutdown: ShutdownWatch) {
        if !self.enabled {
            let mut stream: Stream = pingora_stream(tcp);
            while let Some(s) = ServerApp::process_new(&self.pingora, stream, &shutdown).await {
                stream = s;
            }
            return;
        }
        let mut conn = Conn::Raw(tcp);
        let mut buf = BytesMut::with_capacity(CHUNK);
        let mut rbuf = BytesMut::with_capacity(CHUNK);
        let mut watch = shutdown.clone();
        loop {
            if *shutdown.borrow() && buf.is_empty() {
                return;
            }
            let next = match &mut conn {
                Conn::Raw(tcp) => self.next_request(tcp, &mut buf, &mut watch).await,
                Conn::Pingora(io) => self.next_request(&mut **io, &mut buf, &mut watch).await,
            };
            match next {
                Next::Closed => return,
                Next::Pingora => match self.handoff(conn, &mut buf, &shutdown).await {
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

    /// Read until `buf` holds a whole request, then decide which lane takes
    /// it. An idle connection is closed when the server starts shutting down
    /// (as Pingora does), or after [`KEEPALIVE`].
    async fn next_request<S: AsyncRead + Unpin>(
        &self,
        io: &mut S,
        buf: &mut BytesMut,
        shutdown: &mut ShutdownWatch,
    ) -> Next {
        loop {
            if !buf.is_empty() {
                match self.plan(buf) {
                    Plan::Incomplete => {}
                    Plan::Pingora => return Next::Pingora,
                    Plan::Fast(req) => return Next::Fast(req),
                }
            }
            buf.reserve(CHUNK);
            let read = if buf.is_empty() {
                tokio::select! {
                    biased;
                    read = fast_timeout(KEEPALIVE, io.read_buf(buf)) => read,
                    changed = shutdown.changed() => {
                        // The watch may also fire with `false` (Pingora's
                        // accept loop allows for that); only `true` closes.
                        if changed.is_err() || *shutdown.borrow() {
                            return Next::Closed;
                        }
                        continue;
                    }
                }
            } else {
                fast_timeout(KEEPALIVE, io.read_buf(buf)).await
            };
            match read {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Next::Closed,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Decide what to do with the request at the front of `buf`.
    fn plan(&self, buf: &BytesMut) -> Plan {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let head_len = match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Plan::Incomplete,
            // Too long, too many headers or malformed: Pingora answers it.
            _ => return Plan::Pingora,
        };
        let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
            return Plan::Pingora;
        };
        if !target.starts_with('/') || http::uri::PathAndQuery::try_from(target).is_err() {
            return Plan::Pingora;
        }
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        if crate::config::prefix_covers("/wr", path) {
            return Plan::Pingora;
        }

        let mut body_len: Option<usize> = None;
        let mut close = false;
        let mut auth = None;
        let mut cookie = None;
        let mut request_id = None;
        for h in req.headers.iter() {
            let name = h.name;
            if name.eq_ignore_ascii_case("content-length") {
                let Some(n) = parse_length(h.value) else { return Plan::Pingora };
                if n > MAX_BODY || body_len.is_some_and(|b| b != n) {
                    return Plan::Pingora;
                }
                body_len = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                || name.eq_ignore_ascii_case("upgrade")
                || name.eq_ignore_ascii_case("expect")
            {
                return Plan::Pingora;
            } else if name.eq_ignore_ascii_case("connection") {
                for token in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"upgrade") {
                        return Plan::Pingora;
                    }
                    close |= token.eq_ignore_ascii_case(b"close");
                }
            } else if name.eq_ignore_ascii_case("authorization") {
                if auth.is_none() {
                    auth = std::str::from_utf8(h.value).ok();
                }
            } else if name.eq_ignore_ascii_case("cookie") {
                if cookie.is_none() {
                    cookie = std::str::from_utf8(h.value).ok().filter(|c| c.contains(shared::ENTRY_COOKIE));
                }
            } else if name.eq_ignore_ascii_case(REQUEST_ID_HEADER) && request_id.is_none() {
                request_id = std::str::from_utf8(h.value).ok();
            }
        }
        let body_len = body_len.unwrap_or(0);
        if buf.len() < head_len + body_len {
            return Plan::Incomplete;
        }

        let (queue, visitor) = match self.state.queues.for_path(path) {
            None => (None, None),
            Some(q) => {
                let Some(token) = shared::bearer_or_cookie(auth, cookie) else { return Plan::Pingora };
                match self.cached_visitor(token, q.id(), now_ms()) {
                    Some(visitor) => (Some(q.id().to_owned()), Some(visitor)),
                    // Unknown, expired or other-queue token: Pingora's gate
                    // verifies it, caches it or refuses it.
                    None => return Plan::Pingora,
                }
            }
        };

        let request_id = request_id_or_new(request_id);
        let mut out = Vec::with_capacity(head_len + body_len + 128);
        out.extend_from_slice(method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        for h in req.headers.iter() {
            let name = h.name;
            if name.eq_ignore_ascii_case("connection")
                || name.eq_ignore_ascii_case("keep-alive")
                || name.eq_ignore_ascii_case("proxy-connection")
                || name.eq_ignore_ascii_case(VISITOR_HEADER)
                || name.eq_ignore_ascii_case(REQUEST_ID_HEADER)
            {
                continue;
            }
            push_header(&mut out, name.as_bytes(), h.value);
        }
        if let Some(v) = &visitor {
            push_header(&mut out, VISITOR_HEADER.as_bytes(), v.as_bytes());
        }
        push_header(&mut out, REQUEST_ID_HEADER.as_bytes(), request_id.as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&buf[head_len..head_len + body_len]);

        Plan::Fast(Request {
            out,
            consumed: head_len + body_len,
            head: method == "HEAD",
            close,
            queue,
            path: path.to_owned(),
            request_id,
        })
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
        let started = Instant::now();
        let (mut up, head) = match self.exchange(&req.out, rbuf).await {
            Ok(ok) => ok,
            Err(error) => {
                self.observe_latency(0, started);
                let reply = Reply::bad_gateway(&error).header(REQUEST_ID_HEADER, req.request_id.clone());
                let keep = !req.close && !*shutdown.borrow();
                let sent = write_all_flush(io, &reply.to_http1(req.head, !keep)).await.is_ok();
                log(&req, 502, Some(&error));
                return keep && sent;
            }
        };
        let close = req.close || *shutdown.borrow() || head.framing(req.head) == Framing::UntilClose;
        let mut out = Vec::with_capacity(head.len + 64 + rbuf.len().min(CHUNK));
        head.write(&rbuf[..head.len], &req.request_id, close, &mut out);
        rbuf.advance(head.len);

        let result = copy_body(io, &mut up, rbuf, out, head.framing(req.head)).await;
        let flushed = io.flush().await.is_ok();
        self.observe_latency(if result.is_ok() { head.status } else { 0 }, started);
        match result {
            Ok(reusable) => {
                if reusable && head.keep_alive {
                    pool_put(self.upstream, up);
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

    /// Send the request and read the response head, on a pooled connection
    /// when there is one. A pooled connection that turns out closed before
    /// answering anything is replaced by the next one (the request is whole in
    /// memory, so it can be sent again); a fresh connection is not retried.
    async fn exchange(&self, out: &[u8], rbuf: &mut BytesMut) -> Result<(TcpStream, Head), String> {
        loop {
            let (mut up, reused) = match pool_take(self.upstream) {
                Some(up) => (up, true),
                None => (connect(self.upstream).await.map_err(|e| format!("connect {}: {e}", self.upstream))?, false),
            };
            rbuf.clear();
            match send_and_read_head(&mut up, out, rbuf).await {
                Ok(head) => return Ok((up, head)),
                Err(UpError::Stale(_)) if reused => continue,
                Err(UpError::Stale(e)) => return Err(e.to_string()),
                Err(UpError::Bad(e)) => return Err(e),
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

/// The proxy's listening service: `threads` workers, each with its own
/// `SO_REUSEPORT` listener and single-threaded runtime.
pub struct LaneService {
    lane: Arc<FastLane>,
    listeners: Vec<std::net::TcpListener>,
    sched_batch: bool,
}

impl LaneService {
    /// Bind `threads` listeners on `addr` now, so a taken port fails the
    /// start instead of a worker.
    /// `sched_batch`: run the workers under `SCHED_BATCH` (see [`crate::sched`]).
    pub fn bind(lane: FastLane, addr: SocketAddr, threads: usize, sched_batch: bool) -> io::Result<Self> {
        // `SO_REUSEPORT` would let a second instance on the same port share
        // the traffic silently; a plain bind first fails if anyone listens.
        drop(probe(addr)?);
        let listeners = (0..threads.max(1)).map(|_| reuseport_listener(addr)).collect::<io::Result<_>>()?;
        Ok(LaneService { lane: Arc::new(lane), listeners, sched_batch })
    }
}

fn probe(addr: SocketAddr) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

fn reuseport_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    // Pingora's backlog: a sale opens with a burst of connections.
    socket.listen(65535)?;
    Ok(socket.into())
}

#[async_trait]
impl Service for LaneService {
    async fn start_service(&mut self, _fds: Option<ListenFds>, mut shutdown: ShutdownWatch, _per_fd: usize) {
        let mut workers = Vec::new();
        for (i, listener) in self.listeners.drain(..).enumerate() {
            let lane = self.lane.clone();
            let shutdown = shutdown.clone();
            let sched_batch = self.sched_batch;
            let worker = std::thread::Builder::new().name(format!("proxy-{i}")).spawn(move || {
                if sched_batch && let Err(e) = crate::sched::batch_current_thread() {
                    tracing::warn!(error = %e, "server.sched_batch: proxy worker stays under the default policy");
                }
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build() {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "proxy worker runtime");
                        return;
                    }
                };
                runtime.block_on(accept_loop(lane, listener, shutdown));
                // Requests in flight get the same grace as Pingora's.
                runtime.shutdown_timeout(Duration::from_secs(5));
                flush_local();
            });
            match worker {
                Ok(w) => workers.push(w),
                Err(e) => tracing::error!(error = %e, "starting a proxy worker"),
            }
        }
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        ServerApp::cleanup(&*self.lane.pingora).await;
        let _ = tokio::task::spawn_blocking(move || workers.into_iter().for_each(|w| drop(w.join()))).await;
    }

    fn name(&self) -> &str {
        "waiting room proxy"
    }

    /// The Pingora runtime only waits for shutdown; the workers run on
    /// threads of their own.
    fn threads(&self) -> Option<usize> {
        Some(1)
    }
}

async fn accept_loop(lane: Arc<FastLane>, listener: std::net::TcpListener, mut shutdown: ShutdownWatch) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "proxy listener");
            return;
        }
    };
    // Runs on this worker's thread (a single-threaded runtime), so it
    // flushes this worker's tallies; it ends with the runtime.
    tokio::spawn(async {
        let mut every = tokio::time::interval(FLUSH);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            flush_local();
        }
    });
    loop {
        tokio::select! {
            biased;
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    let _ = tcp.set_nodelay(true);
                    tokio::spawn(lane.clone().serve(tcp, shutdown.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    // Out of descriptors: accept would fail at once again.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// What to do with the next request of a connection.
enum Next {
    Closed,
    Pingora,
    Fast(Request),
}

enum Plan {
    Incomplete,
    Pingora,
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
    /// The client asked to close after this response.
    close: bool,
    queue: Option<String>,
    path: String,
    request_id: String,
}

fn log(req: &Request, status: u16, error: Option<&str>) {
    tracing::info!(
        request_id = %req.request_id,
        path = %req.path,
        status,
        outcome = if req.queue.is_some() { "allowed" } else { "pass" },
        queue = req.queue.as_deref().unwrap_or(""),
        lane = "fast",
        error,
        "request"
    );
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

// ---------------------------------------------------------------------------
// Upstream connections

thread_local! {
    /// Idle upstream connections of this worker thread. Per thread because
    /// with `work_stealing = false` every thread runs its own runtime and a
    /// socket belongs to the runtime that registered it.
    static POOL: RefCell<Vec<(SocketAddr, TcpStream, Instant)>> = const { RefCell::new(Vec::new()) };
}

fn pool_take(addr: SocketAddr) -> Option<TcpStream> {
    POOL.with_borrow_mut(|pool| {
        while let Some((a, up, since)) = pool.pop() {
            if a == addr && since.elapsed() < POOL_IDLE {
                return Some(up);
            }
        }
        None
    })
}

fn pool_put(addr: SocketAddr, up: TcpStream) {
    POOL.with_borrow_mut(|pool| {
        if pool.len() < POOL_MAX {
            pool.push((addr, up, Instant::now()));
        }
    });
}

async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let up = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "timed out"))??;
    up.set_nodelay(true)?;
    Ok(up)
}

enum UpError {
    /// Nothing came back: the connection may have been closed while idle.
    Stale(io::Error),
    /// A broken or unreadable response.
    Bad(String),
}

async fn send_and_read_head(up: &mut TcpStream, out: &[u8], rbuf: &mut BytesMut) -> Result<Head, UpError> {
    up.write_all(out).await.map_err(UpError::Stale)?;
    loop {
        rbuf.reserve(CHUNK);
        let n = match up.read_buf(rbuf).await {
            Ok(n) => n,
            Err(e) if rbuf.is_empty() => return Err(UpError::Stale(e)),
            Err(e) => return Err(UpError::Bad(format!("reading the response: {e}"))),
        };
        if n == 0 {
            return Err(if rbuf.is_empty() {
                UpError::Stale(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"))
            } else {
                UpError::Bad("the connection closed inside the response head".into())
            });
        }
        loop {
            match Head::parse(rbuf)? {
                None => break,
                // Interim responses (100 Continue and the like) are dropped:
                // the lane never forwards `Expect`.
                Some(head) if (100..200).contains(&head.status) => {
                    if head.status == 101 {
                        return Err(UpError::Bad("unexpected 101 Switching Protocols".into()));
                    }
                    rbuf.advance(head.len);
                }
                Some(head) => return Ok(head),
            }
        }
        if rbuf.len() > MAX_RESPONSE_HEAD {
            return Err(UpError::Bad("response head too long".into()));
        }
    }
}

/// How the response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// The parts of an upstream response head the lane needs.
#[derive(Debug)]
struct Head {
    /// Length of the head in the buffer.
    len: usize,
    status: u16,
    length: Option<u64>,
    chunked: bool,
    /// Some transfer coding other than a final `chunked`.
    other_coding: bool,
    /// The upstream connection may be reused.
    keep_alive: bool,
}

impl Head {
    fn parse(buf: &[u8]) -> Result<Option<Head>, UpError> {
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
            }
        }
        Ok(Some(Head { len, status, length, chunked, other_coding, keep_alive }))
    }

    fn framing(&self, head_request: bool) -> Framing {
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
    /// hop-by-hop `Connection`/`Keep-Alive` and its `x-request-id`, then ours.
    fn write(&self, raw: &[u8], request_id: &str, close: bool, out: &mut Vec<u8>) {
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
async fn copy_body<S: AsyncWrite + Unpin>(
    io: &mut S,
    up: &mut TcpStream,
    rbuf: &mut BytesMut,
    mut out: Vec<u8>,
    framing: Framing,
) -> io::Result<bool> {
    match framing {
        Framing::Empty => {
            io.write_all(&out).await?;
            Ok(rbuf.is_empty())
        }
        Framing::Length(mut remaining) => {
            let take = usize::try_from(remaining).unwrap_or(usize::MAX).min(rbuf.len());
            out.extend_from_slice(&rbuf[..take]);
            rbuf.advance(take);
            remaining -= take as u64;
            io.write_all(&out).await?;
            while remaining > 0 {
                rbuf.clear();
                rbuf.reserve(CHUNK);
                if up.read_buf(rbuf).await? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "upstream closed inside the body"));
                }
                let take = usize::try_from(remaining).unwrap_or(usize::MAX).min(rbuf.len());
                io.write_all(&rbuf[..take]).await?;
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
                    io.write_all(&out).await?;
                    first = false;
                } else {
                    io.write_all(&rbuf[..used]).await?;
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
            io.write_all(&out).await?;
            io.write_all(rbuf).await?;
            loop {
                rbuf.clear();
                rbuf.reserve(CHUNK);
                if up.read_buf(rbuf).await? == 0 {
                    return Ok(false);
                }
                io.write_all(rbuf).await?;
            }
        }
    }
}

/// Finds where a chunked body ends, without changing it.
#[derive(Debug, Default)]
struct Chunked {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size; `digits` so far.
    #[default]
    Start,
    Size {
        size: u64,
        digits: u8,
    },
    /// Chunk extension up to CR.
    Extension {
        size: u64,
    },
    SizeLf {
        size: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    TrailerLine,
    EndLf,
    Done,
}

impl Chunked {
    /// Consume bytes of `data` up to the end of the body; returns how many
    /// belong to the body.
    fn feed(&mut self, data: &[u8]) -> Result<usize, &'static str> {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            self.state = match self.state {
                ChunkState::Done => return Ok(i),
                ChunkState::Start => match hex(b) {
                    Some(d) => ChunkState::Size { size: d, digits: 1 },
                    None => return Err("chunk size expected"),
                },
                ChunkState::Size { size, digits } => match (hex(b), b) {
                    (Some(_), _) if digits >= 15 => return Err("chunk size too large"),
                    (Some(d), _) => ChunkState::Size { size: size * 16 + d, digits: digits + 1 },
                    (None, b'\r') => ChunkState::SizeLf { size },
                    (None, b';' | b' ' | b'\t') => ChunkState::Extension { size },
                    _ => return Err("bad chunk size"),
                },
                ChunkState::Extension { size } => {
                    if b == b'\r' {
                        ChunkState::SizeLf { size }
                    } else {
                        ChunkState::Extension { size }
                    }
                }
                ChunkState::SizeLf { size } => match (b, size) {
                    (b'\n', 0) => ChunkState::TrailerStart,
                    (b'\n', n) => ChunkState::Data(n),
                    _ => return Err("LF expected after chunk size"),
                },
                ChunkState::Data(n) => {
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(data.len() - i);
                    i += take;
                    let left = n - take as u64;
                    self.state = if left == 0 { ChunkState::DataCr } else { ChunkState::Data(left) };
                    continue;
                }
                ChunkState::DataCr if b == b'\r' => ChunkState::DataLf,
                ChunkState::DataLf if b == b'\n' => ChunkState::Start,
                ChunkState::DataCr | ChunkState::DataLf => return Err("CRLF expected after chunk data"),
                ChunkState::TrailerStart if b == b'\r' => ChunkState::EndLf,
                ChunkState::TrailerStart | ChunkState::TrailerLine => {
                    if b == b'\n' {
                        ChunkState::TrailerStart
                    } else {
                        ChunkState::TrailerLine
                    }
                }
                ChunkState::EndLf if b == b'\n' => ChunkState::Done,
                ChunkState::EndLf => return Err("LF expected at the end of the body"),
            };
            i += 1;
        }
        Ok(i)
    }

    fn done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chunk_decoder_finds_the_end_across_any_split() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let mut with_next = body.to_vec();
        with_next.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        for split in 0..with_next.len() {
            let mut d = Chunked::default();
            let a = d.feed(&with_next[..split]).unwrap();
            assert_eq!(a, split.min(body.len()));
            let b = d.feed(&with_next[split..]).unwrap();
            assert!(d.done(), "split at {split}");
            assert_eq!(a + b, body.len(), "split at {split}");
        }
    }

    #[test]
    fn the_chunk_decoder_refuses_garbage() {
        assert!(Chunked::default().feed(b"zz\r\n").is_err());
        assert!(Chunked::default().feed(b"3\r\nabcX").is_err());
        assert!(Chunked::default().feed(b"ffffffffffffffffff\r\n").is_err());
        let mut d = Chunked::default();
        assert_eq!(d.feed(b"3\r\nab").unwrap(), 5);
        assert!(!d.done());
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let head = |raw: &str| match Head::parse(raw.as_bytes()) {
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
        assert!(Head::parse(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n").is_err());
        assert!(Head::parse(b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n").is_err());
        assert!(matches!(Head::parse(b"HTTP/1.1 200 OK\r\n"), Ok(None)));
    }

    #[test]
    fn the_client_head_drops_hop_by_hop_headers_and_carries_the_request_id() {
        let raw = b"HTTP/1.1 201 Created\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nx-request-id: theirs\r\ncontent-length: 0\r\nx-a: b\r\n\r\n";
        let h = match Head::parse(raw) {
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

    #[test]
    fn content_length_is_digits_only() {
        assert_eq!(parse_length(b" 42 "), Some(42));
        assert_eq!(parse_length(b"+4"), None);
        assert_eq!(parse_length(b""), None);
        assert_eq!(parse_length(b"1e3"), None);
        assert_eq!(parse_length(b"9999999999999999999"), None);
    }
}
