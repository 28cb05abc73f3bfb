//! The fast lane (`lane.rs`) against the Pingora path: same bytes through
//! both, one keep-alive connection alternating between them, stale pooled
//! upstream connections, an unreachable upstream, pipelining and
//! `Connection: close`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::*;

/// An upstream speaking raw HTTP/1.1 so the tests choose the framing (after
/// any prefix): `…/cl/{n}` Content-Length, `…/chunked/{n}` chunked with a
/// trailer, `…/close/{n}` delimited by closing, `…/204`, and anything else echoes the
/// request body with what it saw in `x-seen-visitor` / `x-seen-request-id`.
/// Bodies of length n are `pattern(n)`.
#[derive(Clone)]
struct RawUpstream {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Close every connection after one response, without saying so.
    close_after_each: Arc<AtomicBool>,
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

impl RawUpstream {
    async fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = RawUpstream {
            addr: listener.local_addr().unwrap(),
            accepted: Arc::default(),
            close_after_each: Arc::default(),
        };
        let this = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                this.accepted.fetch_add(1, Ordering::SeqCst);
                let close_after_each = this.close_after_each.load(Ordering::SeqCst);
                tokio::spawn(serve(stream, close_after_each));
            }
        });
        up
    }
}

async fn serve(mut s: TcpStream, close_after_each: bool) {
    let mut buf = Vec::new();
    loop {
        let Some(req) = read_request(&mut s, &mut buf).await else { return };
        let n: usize = req.path.rsplit('/').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let head_only = req.method == "HEAD";
        let (head, body, close) = if req.path.contains("/cl/") {
            (format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\nx-request-id: upstream-own\r\n"), pattern(n), false)
        } else if req.path.contains("/chunked/") {
            let mut body = Vec::new();
            for part in pattern(n).chunks(1000) {
                body.extend_from_slice(format!("{:x};x=y\r\n", part.len()).as_bytes());
                body.extend_from_slice(part);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\nx-trailer: done\r\n\r\n");
            ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n".to_owned(), body, false)
        } else if req.path.contains("/close/") {
            ("HTTP/1.1 200 OK\r\nconnection: close\r\n".to_owned(), pattern(n), true)
        } else if req.path.ends_with("/204") {
            ("HTTP/1.1 204 No Content\r\n".to_owned(), Vec::new(), false)
        } else {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-seen-visitor: {}\r\nx-seen-request-id: {}\r\nx-seen-connection: {}\r\n",
                req.body.len(),
                req.header("x-visitor-id").unwrap_or("-"),
                req.header("x-request-id").unwrap_or("-"),
                req.header("connection").unwrap_or("-"),
            );
            (head, req.body.clone(), false)
        };
        let mut out = head.into_bytes();
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(&body);
        }
        if s.write_all(&out).await.is_err() || close || close_after_each {
            return;
        }
    }
}

/// Header fields of a raw request or response.
struct Headers(Vec<(String, String)>);

impl Headers {
    fn parsed(headers: &[httparse::Header<'_>]) -> Headers {
        Headers(headers.iter().map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned())).collect())
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

struct RawRequest {
    method: String,
    path: String,
    headers: Headers,
    body: Vec<u8>,
}

impl RawRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }
}

async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 16384];
    let n = s.read(&mut chunk).await.ok()?;
    if n == 0 {
        return None;
    }
    buf.extend_from_slice(&chunk[..n]);
    Some(())
}

/// Read a request (Content-Length or chunked body) off `s`.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<RawRequest> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(len) = req.parse(buf).ok()? {
            let method = req.method?.to_owned();
            let path = req.path?.to_owned();
            let headers = Headers::parsed(req.headers);
            buf.drain(..len);
            let body = if headers.get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
                read_chunked(s, buf).await?
            } else {
                let n: usize = headers.get("content-length").map_or(0, |v| v.trim().parse().unwrap());
                while buf.len() < n {
                    fill(s, buf).await?;
                }
                buf.drain(..n).collect()
            };
            return Some(RawRequest { method, path, headers, body });
        }
        fill(s, buf).await?;
    }
}

async fn read_line(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..i]).into_owned();
            buf.drain(..i + 2);
            return Some(line);
        }
        fill(s, buf).await?;
    }
}

async fn read_chunked(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(s, buf).await?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            while !read_line(s, buf).await?.is_empty() {}
            return Some(body);
        }
        while buf.len() < size + 2 {
            fill(s, buf).await?;
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
    }
}

/// A response read off a raw client connection.
struct RawResponse {
    status: u16,
    headers: Headers,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }
}

async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>, head_request: bool) -> RawResponse {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(len) = resp.parse(buf).unwrap() {
            let status = resp.code.unwrap();
            let headers = Headers::parsed(resp.headers);
            buf.drain(..len);
            let body = if head_request || status == 204 {
                Vec::new()
            } else if headers.get("transfer-encoding").is_some() {
                read_chunked(s, buf).await.expect("chunked body")
            } else if let Some(n) = headers.get("content-length") {
                let n: usize = n.trim().parse().unwrap();
                while buf.len() < n {
                    fill(s, buf).await.expect("body");
                }
                buf.drain(..n).collect()
            } else {
                while fill(s, buf).await.is_some() {}
                std::mem::take(buf)
            };
            return RawResponse { status, headers, body };
        }
        fill(s, buf).await.expect("response head");
    }
}

const QUEUE: &str = "[[queues]]\nid = \"q\"\npaths = [\"/api\"]\nfree_entry = 100\nrelease_per_tick = 1\ntick = \"1h\"\nsession = \"10m\"\n";

async fn token(proxy: &Proxy) -> (String, String) {
    let mut v = Visitor::default();
    let j = v.join(&client(), proxy, "q").await;
    assert_eq!(j["status"], "READY", "{j}");
    let token = j["token"].as_str().unwrap().to_owned();
    let visitor = v.get("wr_visitor").unwrap().split('.').next().unwrap().to_owned();
    (token, visitor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_keep_alive_connection_alternates_between_the_fast_lane_and_pingora() {
    let up = RawUpstream::start().await;
    let proxy = Proxy::start(ProxySpec::memory(QUEUE, up.addr)).await;
    let (token, visitor) = token(&proxy).await;
    let c = client();
    let fast_before = metric(&c, &proxy, "waiting_room_proxied_requests_total{lane=\"fast\"}").await;

    let mut s = TcpStream::connect(proxy.base.trim_start_matches("http://")).await.unwrap();
    let mut buf = Vec::new();
    let gated = format!(
        "GET /api/echo HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\nx-visitor-id: spoofed\r\nx-request-id: client-chosen-1\r\n\r\n"
    );
    // (request, expected status, expected visitor seen upstream)
    let steps: Vec<(String, u16, Option<&str>)> = vec![
        // First sight of the token: Pingora verifies and caches it.
        (gated.clone(), 200, Some(visitor.as_str())),
        // Cached now: the fast lane.
        (gated.clone(), 200, Some(visitor.as_str())),
        // The queue API is Pingora's.
        ("POST /wr/q/join HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n".to_owned(), 200, None),
        // Outside every queue: fast lane, spoofed visitor id removed.
        ("GET /public/echo HTTP/1.1\r\nhost: x\r\nx-visitor-id: spoofed\r\n\r\n".to_owned(), 200, Some("-")),
        // No token: Pingora refuses.
        ("GET /api/echo HTTP/1.1\r\nhost: x\r\n\r\n".to_owned(), 401, None),
        // A body through the fast lane.
        (
            format!(
                "POST /api/echo HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-length: 5\r\nconnection: keep-alive\r\n\r\nhello"
            ),
            200,
            Some(visitor.as_str()),
        ),
    ];
    for (i, (req, status, seen)) in steps.iter().enumerate() {
        s.write_all(req.as_bytes()).await.unwrap();
        let r = read_response(&mut s, &mut buf, false).await;
        assert_eq!(r.status, *status, "step {i}: {}", String::from_utf8_lossy(&r.body));
        assert!(r.header("x-request-id").is_some_and(|id| id.len() >= 8), "step {i} has a request id");
        if let Some(seen) = seen {
            assert_eq!(r.header("x-seen-visitor"), Some(*seen), "step {i}");
            assert_eq!(r.header("x-seen-connection"), Some("-"), "step {i}: hop-by-hop Connection is not forwarded");
        }
        if req.contains("client-chosen-1") {
            assert_eq!(r.header("x-seen-request-id"), Some("client-chosen-1"));
            assert_eq!(r.header("x-request-id"), Some("client-chosen-1"));
        }
        if i == 4 {
            assert_eq!(r.header("content-type"), Some("application/problem+json"));
        }
        if i == 5 {
            assert_eq!(r.body, b"hello");
        }
    }
    let fast = lane_metric(&c, &proxy, "waiting_room_proxied_requests_total{lane=\"fast\"}").await - fast_before;
    assert_eq!(fast, 3.0, "steps 1, 3 and 5 take the fast lane");
    assert_eq!(metric(&c, &proxy, "waiting_room_proxied_requests_total{lane=\"pingora\"}").await, 1.0);
    assert_eq!(metric(&c, &proxy, "waiting_room_gate_decisions_total{decision=\"allowed\",queue=\"q\"}").await, 3.0);
}

/// A series the fast lane counts: its workers add their own tallies to the
/// registry every 100 ms, so read it after a few of those.
async fn lane_metric(c: &reqwest::Client, proxy: &Proxy, series: &str) -> f64 {
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    metric(c, proxy, series).await
}

/// Every framing and body through a proxy; run against both lanes.
async fn framings_arrive_intact(proxy: &Proxy) {
    let (token, visitor) = token(proxy).await;
    let c = client();
    let auth = format!("Bearer {token}");
    for path in ["/api/cl/0", "/api/cl/10", "/api/cl/300000", "/api/chunked/50000", "/api/close/30000"] {
        for _ in 0..2 {
            let r = c.get(proxy.url(path)).header("authorization", &auth).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            assert_ne!(r.headers()["x-request-id"], "upstream-own", "{path}: the proxy's request id wins");
            let n: usize = path.rsplit('/').next().unwrap().parse().unwrap();
            assert!(r.bytes().await.unwrap() == pattern(n), "{path}: body differs");
        }
    }
    let r = c.head(proxy.url("/api/cl/100")).header("authorization", &auth).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "100");
    assert!(r.bytes().await.unwrap().is_empty());
    let r = c.get(proxy.url("/api/204")).header("authorization", &auth).send().await.unwrap();
    assert_eq!(r.status(), 204);
    // 10 KB fits the fast lane's buffer, 300 KB goes to Pingora, and a
    // chunked request body always does.
    for n in [10_000, 300_000] {
        let r = c.post(proxy.url("/api/echo")).header("authorization", &auth).body(pattern(n)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-seen-visitor"], visitor.as_str());
        assert!(r.bytes().await.unwrap() == pattern(n), "echo of {n} bytes differs");
    }
    // A body of unknown length: reqwest sends it chunked.
    let frames: Vec<Result<hyper::body::Frame<hyper::body::Bytes>, std::io::Error>> =
        [pattern(7000), pattern(3)].into_iter().map(|p| Ok(hyper::body::Frame::data(p.into()))).collect();
    let body = reqwest::Body::wrap(http_body_util::StreamBody::new(futures_util::stream::iter(frames)));
    let r = c.post(proxy.url("/api/echo")).header("authorization", &auth).body(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut want = pattern(7000);
    want.extend(pattern(3));
    assert!(r.bytes().await.unwrap() == want, "chunked request body differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_and_every_response_framing_arrive_intact_through_both_lanes() {
    let up = RawUpstream::start().await;
    let fast = Proxy::start(ProxySpec::memory(QUEUE, up.addr)).await;
    framings_arrive_intact(&fast).await;
    let c = client();
    assert!(lane_metric(&c, &fast, "waiting_room_proxied_requests_total{lane=\"fast\"}").await >= 10.0);
    let pingora = Proxy::start_with(ProxySpec::memory(QUEUE, up.addr), "fast_lane = false").await;
    framings_arrive_intact(&pingora).await;
    assert_eq!(lane_metric(&c, &pingora, "waiting_room_proxied_requests_total{lane=\"fast\"}").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_workers_run_under_sched_batch_unless_turned_off() {
    const SCHED_OTHER: i32 = 0;
    const SCHED_BATCH: i32 = 3;
    let up = RawUpstream::start().await;
    // A thread spawned by a worker (Pingora's timer thread, started by the
    // first request) carries the worker's name until it has run long
    // enough to name itself; on a loaded machine that can be a while.
    let workers = |proxy: &Proxy| {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let mut w: Vec<_> =
                proxy.thread_policies().into_iter().filter(|(name, _)| name.starts_with("proxy-")).collect();
            w.sort();
            if w.len() == 2 || std::time::Instant::now() > deadline {
                return w;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let batch = Proxy::start(ProxySpec::memory(QUEUE, up.addr)).await;
    let expect = |policy| vec![("proxy-0".to_owned(), policy), ("proxy-1".to_owned(), policy)];
    assert_eq!(workers(&batch), expect(SCHED_BATCH), "{}", batch.log());
    // Only the workers: Pingora's services keep the default policy. (Its
    // "Timer thread" is spawned by the first worker that arms a timeout and
    // inherits that worker's policy.)
    let others =
        batch.thread_policies().into_iter().filter(|(name, _)| !name.starts_with("proxy-") && name != "Timer thread");
    assert!(others.clone().count() > 0);
    assert!(others.clone().all(|(_, policy)| policy == SCHED_OTHER), "{:?}", others.collect::<Vec<_>>());
    let normal = Proxy::start_with(ProxySpec::memory(QUEUE, up.addr), "sched_batch = false").await;
    assert_eq!(workers(&normal), expect(SCHED_OTHER));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_upstream_connection_closed_while_idle_is_replaced_without_an_error() {
    let up = RawUpstream::start().await;
    up.close_after_each.store(true, Ordering::SeqCst);
    let proxy = Proxy::start(ProxySpec::memory(QUEUE, up.addr)).await;
    let c = client();
    for i in 0..20 {
        let r = c.get(proxy.url(&format!("/public/cl/{i}"))).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert!(r.bytes().await.unwrap() == pattern(i));
        // Let the upstream's close arrive before the connection is reused.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(up.accepted.load(Ordering::SeqCst) >= 20, "every request needed a fresh upstream connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_gets_a_502_problem_in_both_lanes() {
    let nobody = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    for extra in ["", "fast_lane = false"] {
        let proxy = Proxy::start_with(ProxySpec::memory(QUEUE, nobody), extra).await;
        let r = client().get(proxy.url("/public/x")).send().await.unwrap();
        assert_eq!(r.status(), 502, "{extra}");
        assert_eq!(r.headers()["content-type"], "application/problem+json", "{extra}");
        let body: serde_json::Value = r.json().await.unwrap();
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("did not answer"), "{extra}: {detail}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_and_connection_close_is_honoured() {
    let up = RawUpstream::start().await;
    let proxy = Proxy::start(ProxySpec::memory(QUEUE, up.addr)).await;
    let addr = proxy.base.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let mut buf = Vec::new();
    s.write_all(b"GET /p/cl/5 HTTP/1.1\r\nhost: x\r\n\r\nGET /p/cl/7 HTTP/1.1\r\nhost: x\r\n\r\nHEAD /p/cl/9 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    for (n, head) in [(5, false), (7, false), (9, true)] {
        let r = read_response(&mut s, &mut buf, head).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some(n.to_string().as_str()));
        assert_eq!(r.body, if head { Vec::new() } else { pattern(n) });
    }
    s.write_all(b"GET /p/cl/3 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let r = read_response(&mut s, &mut buf, false).await;
    assert_eq!(r.body, pattern(3));
    assert_eq!(r.header("connection"), Some("close"));
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert_eq!(n, 0, "the proxy closes after connection: close");

    // Garbage is still Pingora's to refuse.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GARBAGE\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false).await;
    assert_eq!(r.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_a_taken_port_refuses_to_start() {
    // The listeners use SO_REUSEPORT; without the probe a second process
    // would quietly take half of the first one's connections.
    let up = RawUpstream::start().await;
    let proxy = Proxy::start(ProxySpec::memory(QUEUE, up.addr)).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_waiting-room"))
        .arg("--config")
        .arg(&proxy.config)
        .output()
        .unwrap();
    assert!(!out.status.success(), "second instance started");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.listen"), "{stderr}");
    let r = client().get(proxy.url("/public/cl/3")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the first instance still serves");
}
