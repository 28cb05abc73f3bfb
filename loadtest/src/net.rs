//! Sockets: HTTP clients, WebSocket connections and the socket budget.
//!
//! One process may hold at most 20,000 open files here, so the harness counts
//! its sockets: HTTP requests in flight take a permit from one semaphore,
//! WebSockets from another (a waiting visitor who finds no WebSocket permit
//! polls instead, as a browser falls back), and each client's idle
//! keep-alive pool is capped. When ephemeral ports of one source address run
//! short, connections are spread over several (`--source-addrs`): each gets
//! its own reqwest client bound to it, and WebSockets bind their socket
//! before connecting.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::cli::Args;

/// A WebSocket over plain TCP.
pub type Socket = WebSocketStream<TcpStream>;

/// Idle keep-alive connections kept per client.
const IDLE_PER_CLIENT: usize = 128;
/// Sockets kept free for everything else (database, admin calls, files).
const HEADROOM: usize = 1_000;

/// A complete HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Whole body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetError {
    /// No answer in time.
    Timeout,
    /// Could not connect.
    Connect,
    /// The connection broke or the answer was malformed.
    Broken(String),
}

impl NetError {
    /// Error kind for the report.
    pub fn kind(&self) -> String {
        match self {
            NetError::Timeout => "transport:timeout".into(),
            NetError::Connect => "transport:connect".into(),
            NetError::Broken(_) => "transport:broken".into(),
        }
    }
}

/// The process's open-files limit (soft), from `/proc/self/limits`.
pub fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Clients, source addresses and the socket budget.
pub struct Net {
    clients: Vec<(reqwest::Client, Option<IpAddr>)>,
    http: Arc<Semaphore>,
    ws: Arc<Semaphore>,
    timeout: Duration,
    ws_config: WebSocketConfig,
    /// Sockets in the budget: (HTTP in flight, WebSockets).
    pub budget: (usize, usize),
}

impl Net {
    /// Clients for the flags' source addresses and budget.
    pub fn new(args: &Args) -> Result<Net> {
        let sources: Vec<Option<IpAddr>> = match &args.source_addrs {
            Some(s) if !s.0.is_empty() => s.0.iter().copied().map(Some).collect(),
            _ => vec![None],
        };
        let limit = open_files_limit().unwrap_or(usize::MAX);
        let total = args.max_sockets.min(limit.saturating_sub(HEADROOM));
        let idle = IDLE_PER_CLIENT * sources.len();
        let http = (total / 4).clamp(16, 2_000);
        let ws = total.saturating_sub(http + idle);
        if total < 64 {
            bail!("only {total} sockets available (--max-sockets {}, open-files limit {limit})", args.max_sockets);
        }
        let clients = sources
            .iter()
            .map(|ip| {
                let mut b = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .pool_max_idle_per_host(IDLE_PER_CLIENT)
                    .pool_idle_timeout(Duration::from_secs(30))
                    .connect_timeout(args.request_timeout)
                    .timeout(args.request_timeout)
                    .tcp_nodelay(true);
                if let Some(ip) = ip {
                    b = b.local_address(*ip);
                }
                Ok((b.build().context("building the HTTP client")?, *ip))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Net {
            clients,
            http: Arc::new(Semaphore::new(http)),
            ws: Arc::new(Semaphore::new(ws)),
            timeout: args.request_timeout,
            // Small buffers: thousands of sockets each wait for a few short messages.
            ws_config: WebSocketConfig::default()
                .read_buffer_size(4096)
                .write_buffer_size(0)
                .max_message_size(Some(64 * 1024))
                .max_frame_size(Some(64 * 1024)),
            budget: (http, ws),
        })
    }

    /// The client (and source address) visitor `index` uses.
    pub fn client(&self, index: usize) -> &reqwest::Client {
        &self.clients[index % self.clients.len()].0
    }

    fn source(&self, index: usize) -> Option<IpAddr> {
        self.clients[index % self.clients.len()].1
    }

    /// Send `request` within the HTTP budget and read the whole answer.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, NetError> {
        let _permit = self.http.acquire().await.map_err(|_| NetError::Broken("budget closed".into()))?;
        let response = request.send().await.map_err(|e| classify(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|e| classify(&e))?;
        Ok(Answer { status, headers, body })
    }

    /// A WebSocket permit if the budget has one.
    pub fn try_ws_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.ws.clone().try_acquire_owned().ok()
    }

    /// Open a WebSocket to `url` (`ws://…`) sending `cookie`, from visitor `index`'s source address.
    pub async fn websocket(&self, index: usize, url: &str, cookie: &str) -> Result<Socket, NetError> {
        let mut request = url.into_client_request().map_err(|e| NetError::Broken(e.to_string()))?;
        if !cookie.is_empty() {
            let value = HeaderValue::from_str(cookie).map_err(|e| NetError::Broken(e.to_string()))?;
            request.headers_mut().insert(http::header::COOKIE, value);
        }
        let host = request.uri().host().unwrap_or("127.0.0.1").trim_matches(['[', ']']).to_owned();
        let port = request.uri().port_u16().unwrap_or(80);
        let connect = async {
            let addr = tokio::net::lookup_host((host.as_str(), port))
                .await
                .ok()
                .and_then(|mut a| a.next())
                .ok_or(NetError::Connect)?;
            let stream = self.connect_tcp(index, addr).await?;
            let (socket, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(self.ws_config))
                .await
                .map_err(|e| NetError::Broken(format!("handshake: {e}")))?;
            Ok(socket)
        };
        tokio::time::timeout(self.timeout, connect).await.map_err(|_| NetError::Timeout)?
    }

    async fn connect_tcp(&self, index: usize, addr: SocketAddr) -> Result<TcpStream, NetError> {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
            .map_err(|e| NetError::Broken(format!("socket: {e}")))?;
        if let Some(ip) = self.source(index) {
            socket.bind(SocketAddr::new(ip, 0)).map_err(|e| NetError::Broken(format!("bind {ip}: {e}")))?;
        }
        let stream = socket.connect(addr).await.map_err(|_| NetError::Connect)?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

fn classify(e: &reqwest::Error) -> NetError {
    if e.is_timeout() {
        NetError::Timeout
    } else if e.is_connect() {
        NetError::Connect
    } else {
        NetError::Broken(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_files_limit_is_read_from_proc() {
        assert!(open_files_limit().is_some_and(|n| n > 0));
    }
}
