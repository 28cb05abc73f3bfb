//! The hyper server: accept loop with graceful shutdown, per-request span and
//! metrics, body reading, and dispatch to [`crate::routes`]. The same code
//! serves both listeners; [`Listener`] says which routes exist on each.
//!
//! Each request runs in its own spawned task: a client that disconnects must
//! not cancel a hold or a claim halfway (the gate would be left admitted, or an
//! idempotency key left running).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

use crate::http::{Input, Listener, REPLAYED_HEADER, Success, body, router};
use crate::problem::{Failure, HandlerPanicked};
use crate::routes::{self, session};
use crate::state::AppState;

/// Where a request came from: which listener, which client address.
#[derive(Debug, Clone, Copy)]
struct Origin {
    kind: Listener,
    peer: SocketAddr,
}

/// Serve `listener` (the `kind` of listener it is) until `shutdown` flips to
/// true, then stop accepting and give in-flight connections `grace` to finish.
pub async fn serve(listener: TcpListener, kind: Listener, state: AppState, mut shutdown: watch::Receiver<bool>) {
    let config = &state.config().server;
    let grace = config.shutdown_grace;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(config.header_timeout);
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(spawn_request(state, Origin { kind, peer }, req).await) }
                });
                let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service).into_owned());
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after the shutdown grace period");
    }
}

async fn spawn_request(state: AppState, origin: Origin, req: hyper::Request<Incoming>) -> Response<Full<Bytes>> {
    let request_id = req
        .headers()
        .get(shared::REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| shared::valid_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let span =
        tracing::info_span!("request", request_id = %request_id, method = %req.method(), path = %req.uri().path());
    let id = request_id.clone();
    let mut response = match tokio::spawn(handle(state, origin, req).instrument(span)).await {
        Ok(response) => response,
        Err(e) => to_response(Err(HandlerPanicked(e.to_string()).into())),
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HeaderName::from_static(shared::REQUEST_ID_HEADER), value);
    }
    response
}

async fn handle(state: AppState, origin: Origin, req: hyper::Request<Incoming>) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let method = req.method().clone();
    let (template, result) = match router::route(origin.kind, &method, req.uri().path()) {
        Err(e) => ("unmatched", Err(Failure::from(e))),
        Ok((route, template)) => {
            let path = req.uri().path().to_owned();
            let (parts, incoming) = req.into_parts();
            let limit = state.config().server.body_limit_bytes;
            let result = match body::read(incoming, &parts.headers, limit).await {
                Err(e) => Err(e.into()),
                Ok(body) => {
                    let cx =
                        Input { state: state.clone(), headers: parts.headers, body, template, path, peer: origin.peer };
                    routes::dispatch(&cx, route).await
                }
            };
            (template, result)
        }
    };
    let response = to_response(result);
    let metrics = state.metrics();
    metrics.http_duration.with_label_values(&[template, method.as_str()]).observe(started.elapsed().as_secs_f64());
    metrics.http_responses.with_label_values(&[template, method.as_str(), response.status().as_str()]).inc();
    tracing::info!(route = template, status = response.status().as_u16(), "answered");
    response
}

fn to_response(result: Result<Success, Failure>) -> Response<Full<Bytes>> {
    let (status, body, content_type, replayed, session_end, allow, retry_after) = match result {
        Ok(reply) => (reply.status, reply.body, reply.content_type, reply.replayed, reply.session_end, None, None),
        Err(failure) => {
            let (status, body) = failure.render();
            (status, body, shared::problem::CONTENT_TYPE, false, None, failure.allow(), failure.retry_after())
        }
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if status != StatusCode::NO_CONTENT {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if replayed {
        headers.insert(HeaderName::from_static(REPLAYED_HEADER), HeaderValue::from_static("true"));
    }
    if let Some(allow) = allow {
        headers.insert(ALLOW, HeaderValue::from_static(allow));
    }
    if let Some(seconds) = retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    if let Some(end) = session_end {
        headers.insert(HeaderName::from_static(session::HEADER), session::header_value(end));
    }
    response
}
