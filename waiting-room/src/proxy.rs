//! The proxy: every request passes through [`WaitingRoom`].
//!
//! 1. `/wr/...` is the waiting room's own API and page, answered here.
//! 2. A path under a queue's prefix needs a valid entry token for that queue:
//!    allowed requests go upstream with `x-visitor-id`; refused browsers are
//!    sent to the queue page, other clients get a 401 problem naming the queue.
//! 3. Any other path passes straight through.
//!
//! A client-supplied `x-visitor-id` is always removed, so the upstream can
//! trust the header it receives; a request id is added to every request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::proxy::FailToProxy;
use pingora::{ErrorSource, ErrorType, OrErr};
use shared::REQUEST_ID_HEADER;
use shared::problem::Problem;

use crate::api;
use crate::forward::{Rewrite, SESSION_HEADER, SessionEnd};
use crate::gate::Refusal;
use crate::metrics::METRICS;
use crate::reply::{Reply, header_str, send};
use crate::routes;
use crate::state::State;
use crate::upstreams::Upstreams;

/// Per-request state.
#[derive(Default)]
pub struct ProxyCtx {
    request_id: String,
    /// What happened, for the access log.
    outcome: &'static str,
    queue: Option<String>,
    visitor: Option<String>,
    /// The admitted visitor's token `iat` (its admission).
    iat: i64,
    upstream_started: Option<Instant>,
    /// The request path (the session's request is replaced when a WebSocket
    /// takes the stream over).
    path: String,
    /// Status of a response written outside Pingora (101).
    status: u16,
    /// Upstream instances that failed this request before answering.
    tried: Vec<SocketAddr>,
    /// The upstream's response head has arrived.
    answered: bool,
    /// Let in with the store down (`degraded.rs`): the token minted for the
    /// upstream, and the cookies the response sets.
    let_in: Option<(String, Vec<String>)>,
    /// An admitted request counted in its queue's signals (`signals.rs`):
    /// when it first went upstream, until its answer's head or its failure.
    signalled: Option<(Arc<crate::queues::Queue>, Instant)>,
}

impl ProxyCtx {
    /// The admitted request's answer head came (`failed`: a 5xx), or it
    /// failed without one: counted once.
    fn signal_done(&mut self, failed: bool) {
        if let Some((queue, started)) = self.signalled.take() {
            queue.signals.finish(started.elapsed(), failed);
        }
    }
}

/// The `ProxyHttp` implementation.
pub struct WaitingRoom {
    state: Arc<State>,
    /// The protected service's instances (resolved at start: `HttpPeer::new`
    /// with a name would resolve again on every call).
    upstreams: Arc<Upstreams>,
}

impl WaitingRoom {
    /// A proxy for `state` in front of `upstreams`.
    pub fn new(state: Arc<State>, upstreams: Arc<Upstreams>) -> Self {
        WaitingRoom { state, upstreams }
    }
}

fn peer(addr: SocketAddr) -> HttpPeer {
    let mut peer = HttpPeer::new(addr, false, String::new());
    peer.options.connection_timeout = Some(Duration::from_secs(2));
    peer.options.total_connection_timeout = Some(Duration::from_secs(3));
    peer.options.idle_timeout = Some(Duration::from_secs(60));
    peer
}

/// A small stable number for the current worker thread.
fn worker_index() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static INDEX: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    INDEX.with(|i| *i)
}

fn request_id(session: &Session) -> String {
    request_id_or_new(header_str(session, REQUEST_ID_HEADER))
}

/// The client's request id when well-formed ([`shared::valid_request_id`]),
/// else a new random one.
pub(crate) fn request_id_or_new(given: Option<&str>) -> String {
    match given {
        Some(id) if shared::valid_request_id(id) => id.to_owned(),
        _ => hex_id(),
    }
}

fn hex_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn wants_html(session: &Session) -> bool {
    header_str(session, "accept").is_some_and(|a| a.contains("text/html"))
}

impl WaitingRoom {
    /// A request without a valid token while the store is down, to a queue
    /// that is `on_store_down = "open"`: the visitor (their cookie's, or a
    /// new one) and the token and cookies that let them in, if this
    /// instance's allowance has room.
    fn open_door(&self, session: &Session, queue_id: &str) -> Option<(String, (String, Vec<String>))> {
        let queue = self.state.queues.by_id(queue_id)?;
        let standing = crate::degraded::let_in(&self.state, &queue)?;
        let (visitor, minted) = match crate::identity::existing(session, &self.state.keys.cookies) {
            Some(v) => (v, None),
            None => {
                let (v, cookie) = crate::identity::mint(&self.state.keys.cookies, self.state.cookie_secure);
                (v, Some(cookie))
            }
        };
        let (token, cookie) = crate::degraded::token_for(&self.state, &queue, visitor, standing)?;
        Some((visitor.to_string(), (token, minted.into_iter().chain([cookie]).collect())))
    }
}

fn refusal_reply(session: &Session, queue: &str, refusal: &Refusal) -> (Reply, &'static str) {
    let path_and_query = session.req_header().uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    if wants_html(session) {
        let location = format!("/wr/{queue}?return_to={}", shared::percent::encode_path_and_query(path_and_query));
        return (Reply::redirect(location).no_store(), "redirected");
    }
    let join = crate::standing::join_url(queue);
    let problem = Problem::new(
        401,
        format!(
            "{}: this path is protected by the waiting room queue {queue:?}. Join with POST {join}, wait until the \
             status is READY, then retry with the token (cookie wr_entry or Authorization: Bearer).",
            refusal.explain()
        ),
    )
    .with("queue", queue)
    .with("join_url", join);
    let reply = Reply::problem(problem).header("www-authenticate", format!("Bearer realm=\"{queue}\"")).no_store();
    (reply, "rejected")
}

#[async_trait]
impl ProxyHttp for WaitingRoom {
    type CTX = ProxyCtx;

    fn new_ctx(&self) -> ProxyCtx {
        ProxyCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut ProxyCtx) -> pingora::Result<bool> {
        ctx.request_id = request_id(session);
        // The lane has already refused every head that breaks an edge rule
        // (`lane::head`); the path is made canonical here again because the
        // gate below decides on it.
        let path = match shared::path::canonical(session.req_header().uri.path()) {
            Ok(p) => p.into_owned(),
            Err(e) => {
                ctx.outcome = "refused";
                send(session, Reply::error(400, e.to_string()).header(REQUEST_ID_HEADER, ctx.request_id.clone()))
                    .await?;
                return Ok(true);
            }
        };
        ctx.path = path.clone();
        if crate::config::prefix_covers("/wr", &path) {
            let route = routes::route(&path);
            ctx.outcome = route.name();
            if let routes::Route::Socket(q) = route {
                match api::socket(&self.state, session, q).await {
                    Ok(()) => {
                        ctx.status = 101;
                        METRICS.requests.with_label_values(&["ws", "101"]).inc();
                        return Ok(true);
                    }
                    Err(reply) => {
                        METRICS.requests.with_label_values(&["ws", &reply.status.to_string()]).inc();
                        send(session, reply.header(REQUEST_ID_HEADER, ctx.request_id.clone())).await?;
                        return Ok(true);
                    }
                }
            }
            let reply = routes::handle(&self.state, session, route).await;
            METRICS.requests.with_label_values(&[route.name(), &reply.status.to_string()]).inc();
            send(session, reply.header(REQUEST_ID_HEADER, ctx.request_id.clone())).await?;
            return Ok(true);
        }
        let Some(queue) = self.state.queues.for_path(&path) else {
            ctx.outcome = "pass";
            return Ok(false);
        };
        let queue_id = queue.id().to_owned();
        let token = {
            let h = &session.req_header().headers;
            let values = |name| h.get_all(name).into_iter().map(|v| v.as_bytes());
            match shared::entry_token(values("authorization"), values("cookie")) {
                Ok(t) => t.map(str::to_owned),
                Err(e) => {
                    ctx.outcome = "refused";
                    let reply = Reply::error(400, format!("{e}; send one entry token"));
                    send(session, reply.header(REQUEST_ID_HEADER, ctx.request_id.clone())).await?;
                    return Ok(true);
                }
            }
        };
        let mut checked = self.state.gate.check(token.as_deref(), &queue_id, crate::clock::now_ms());
        // A token first seen here: a purchase may have ended its session
        // while this instance was not listening.
        if let Ok(admit) = &checked
            && admit.fresh
            && crate::session::ended_unheard(&self.state, &queue_id, &admit.visitor, admit.iat).await
        {
            checked = Err(Refusal::Ended);
        }
        match checked {
            Ok(admit) => {
                METRICS.gate.with_label_values(&[&queue_id, "allowed"]).inc();
                // The token's first request here: the visitor arrived (the
                // store matches it with the admission, once per visitor).
                if admit.fresh
                    && let Ok(visitor) = admit.visitor.parse()
                {
                    queue.signals.arrived(visitor, admit.iat);
                }
                ctx.outcome = "allowed";
                ctx.visitor = Some(admit.visitor);
                ctx.iat = admit.iat;
                ctx.queue = Some(queue_id);
                Ok(false)
            }
            Err(refusal) => {
                if let Some((visitor, let_in)) = self.open_door(session, &queue_id) {
                    METRICS.gate.with_label_values(&[&queue_id, "store_down"]).inc();
                    ctx.outcome = "store_down";
                    ctx.visitor = Some(visitor);
                    ctx.iat = crate::clock::now_ms().div_euclid(1000);
                    ctx.queue = Some(queue_id);
                    ctx.let_in = Some(let_in);
                    return Ok(false);
                }
                let (reply, decision) = refusal_reply(session, &queue_id, &refusal);
                METRICS.gate.with_label_values(&[&queue_id, decision]).inc();
                ctx.outcome = decision;
                ctx.queue = Some(queue_id);
                send(session, reply.header(REQUEST_ID_HEADER, ctx.request_id.clone())).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut ProxyCtx) -> pingora::Result<Box<HttpPeer>> {
        let Some(addr) = self.upstreams.pick(&ctx.tried) else {
            return Err(pingora::Error::explain(ErrorType::ConnectNoRoute, "no healthy upstream instance").into_up());
        };
        let mut peer = Box::new(peer(addr));
        // One pool partition per worker thread: a pooled upstream connection
        // is then put back and taken again on the same thread, so its idle
        // watcher never has to wake another thread (a cross-thread wakeup per
        // pooled connection showed up as a large share of the proxy's CPU).
        peer.group_key = worker_index();
        Ok(peer)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut ProxyCtx,
    ) -> pingora::Result<()> {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |a| a.ip());
        let rewrite = Rewrite {
            visitor: ctx.visitor.as_deref(),
            request_id: &ctx.request_id,
            peer,
            peer_trusted: self.state.trusted.contains(peer),
            client: self.state.client_of(session),
        };
        let headers = &session.req_header().headers;
        let connection: Vec<&[u8]> = headers.get_all("connection").iter().map(|v| v.as_bytes()).collect();
        let forwarded_for: Vec<&[u8]> = headers.get_all("x-forwarded-for").iter().map(|v| v.as_bytes()).collect();
        let dropped: Vec<String> = upstream_request
            .headers
            .keys()
            .filter(|name| rewrite.drops(name.as_str(), &connection))
            .map(|name| name.as_str().to_owned())
            .collect();
        for name in dropped {
            upstream_request.remove_header(&name);
        }
        let mut added = Vec::with_capacity(4);
        rewrite.added(&forwarded_for, |name, value| added.push((name, value.to_vec())));
        for (name, value) in added {
            upstream_request.insert_header(name, value)?;
        }
        // Let in with the store down: the upstream checks the token too.
        if let Some((token, _)) = &ctx.let_in {
            upstream_request.insert_header("authorization", format!("Bearer {token}"))?;
        }
        // The upstream sees the path the gate decided on.
        let target = match upstream_request.uri.query() {
            Some(q) => format!("{}?{q}", ctx.path),
            None => ctx.path.clone(),
        };
        if upstream_request.uri.path_and_query().map(|p| p.as_str()) != Some(target.as_str()) {
            let uri = target.parse::<http::Uri>().or_err(ErrorType::InvalidHTTPHeader, "canonical path")?;
            upstream_request.set_uri(uri);
        }
        ctx.upstream_started = Some(Instant::now());
        if ctx.signalled.is_none()
            && let Some(queue) = ctx.queue.as_deref().and_then(|q| self.state.queues.by_id(q))
        {
            queue.signals.start();
            ctx.signalled = Some((queue.clone(), Instant::now()));
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut ProxyCtx,
    ) -> pingora::Result<()> {
        ctx.answered = true;
        ctx.signal_done(upstream_response.status.as_u16() >= 500);
        // The purchase ended the session: act on it, never pass it on.
        let ended = upstream_response.headers.get(SESSION_HEADER).and_then(|v| SessionEnd::parse(v.as_bytes()));
        upstream_response.remove_header(SESSION_HEADER);
        if let (Some(why), Some(queue), Some(visitor)) = (ended, &ctx.queue, &ctx.visitor) {
            crate::session::end(&self.state, queue, visitor, ctx.iat, why).await;
        }
        upstream_response.insert_header(REQUEST_ID_HEADER, ctx.request_id.as_str())?;
        if let Some((_, cookies)) = &ctx.let_in {
            for c in cookies {
                upstream_response.append_header("set-cookie", c.as_str())?;
            }
        }
        Ok(())
    }

    /// A connection that failed sent nothing: try another healthy instance.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut ProxyCtx,
        mut e: Box<pingora::Error>,
    ) -> Box<pingora::Error> {
        if let Some(addr) = pingora::upstreams::peer::Peer::address(peer).as_inet() {
            ctx.tried.push(*addr);
        }
        if self.upstreams.pick(&ctx.tried).is_some() {
            e.set_retry(true);
        }
        e
    }

    /// A safe request (GET, HEAD, OPTIONS: nothing happens twice) whose
    /// instance failed before answering — it died, or closed the
    /// connection — goes to another healthy instance, as in the fast lane.
    /// Anything else keeps Pingora's rule: retried only on a reused
    /// connection, never when the method is not idempotent.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<pingora::Error>,
        ctx: &mut ProxyCtx,
        client_reused: bool,
    ) -> Box<pingora::Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let method = &session.req_header().method;
        if !method.is_idempotent() || session.as_ref().retry_buffer_truncated() {
            e.set_retry(false);
        } else if crate::forward::safe_method(method.as_str()) && !ctx.answered {
            if let Some(addr) = pingora::upstreams::peer::Peer::address(peer).as_inet() {
                ctx.tried.push(*addr);
            }
            e.set_retry(self.upstreams.pick(&ctx.tried).is_some());
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    /// An upstream that cannot be reached gets the same 502 problem as in the
    /// fast lane (Pingora's default is an empty body).
    async fn fail_to_proxy(&self, session: &mut Session, e: &pingora::Error, ctx: &mut ProxyCtx) -> FailToProxy {
        let code = match (e.etype(), e.esource()) {
            (ErrorType::HTTPStatus(code), _) => *code,
            (_, ErrorSource::Upstream) => 502,
            (ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed, ErrorSource::Downstream) => 0,
            (_, ErrorSource::Downstream) => 400,
            _ => 500,
        };
        if code > 0 && session.response_written().is_none() {
            let reply = match code {
                502 => Reply::bad_gateway(),
                400 => Reply::error(400, format!("the request could not be read: {e}")),
                _ => Reply::error(code, format!("the request failed: {e}")),
            };
            let reply = reply.header(REQUEST_ID_HEADER, ctx.request_id.clone());
            if let Err(e) = send(session, reply).await {
                tracing::debug!(error = %e, "writing the error response failed");
            }
        }
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }

    /// A client that breaks its connection or sends a bad body is logged by
    /// [`Self::logging`] at WARN; Pingora's own ERROR line is for our faults.
    fn suppress_error_log(&self, _session: &Session, _ctx: &ProxyCtx, error: &pingora::Error) -> bool {
        *error.esource() == ErrorSource::Downstream
    }

    async fn logging(&self, session: &mut Session, e: Option<&pingora::Error>, ctx: &mut ProxyCtx) {
        // Went upstream and no head came back: refused, timed out, broken.
        ctx.signal_done(true);
        let status = session.response_written().map_or(ctx.status, |r| r.status.as_u16());
        if let Some(started) = ctx.upstream_started {
            METRICS.proxied.with_label_values(&["pingora"]).inc();
            let class = match (e, status) {
                (Some(_), _) | (_, 0) => "error",
                (_, s) => ["1xx", "2xx", "3xx", "4xx", "5xx"]
                    .get(usize::from(s / 100).saturating_sub(1))
                    .copied()
                    .unwrap_or("error"),
            };
            METRICS.upstream_latency.with_label_values(&[class]).observe(started.elapsed().as_secs_f64());
        }
        let queue = ctx.queue.as_deref().unwrap_or("");
        match e {
            Some(e) => tracing::warn!(
                request_id = %ctx.request_id, path = %ctx.path, status, outcome = ctx.outcome, queue,
                error = %e, source = ?e.esource(), "request"
            ),
            None => tracing::info!(
                request_id = %ctx.request_id, path = %ctx.path, status, outcome = ctx.outcome, queue, "request"
            ),
        }
    }
}
