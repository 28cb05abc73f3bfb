//! Upstreams for the proxy: one that records every request, and a raw one writing any bytes.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpListener;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub visitor: Option<String>,
    pub authorization: Option<String>,
    pub cookie: Option<String>,
    pub request_id: Option<String>,
}

/// A raw HTTP/1.1 upstream, for answers a framework would not write: reads
/// each request of a connection (head, then a `content-length` body) and
/// writes back what `respond` makes of the head.
#[allow(dead_code)] // not every test binary sharing this file uses it
pub async fn raw_upstream<F, Fut>(respond: F) -> SocketAddr
where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Vec<u8>> + Send,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { continue };
            let respond = respond.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4) else {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    while buf.len() < end + length {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + length);
                    if s.write_all(&respond(head).await).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// An upstream that records every request and answers 200 "ok".
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let log = log.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
                        log.lock().push(Seen {
                            path: req.uri().path().to_owned(),
                            visitor: header("x-visitor-id"),
                            authorization: header("authorization"),
                            cookie: header("cookie"),
                            request_id: header("x-request-id"),
                        });
                        async {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                                b"ok",
                            ))))
                        }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Upstream { addr, seen }
    }

    pub fn count(&self) -> usize {
        self.seen.lock().len()
    }

    /// Requests that carried `needle` in their Authorization or Cookie header.
    pub fn carrying(&self, needle: &str) -> usize {
        self.seen
            .lock()
            .iter()
            .filter(|s| {
                s.authorization.as_deref().is_some_and(|a| a.contains(needle))
                    || s.cookie.as_deref().is_some_and(|c| c.contains(needle))
            })
            .count()
    }
}
