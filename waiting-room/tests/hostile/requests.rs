//! What a request may say: paths spelled to slip past the gate, methods,
//! internal endpoints, forged forwarding headers, two tokens, pipelining.
//! Each on both lanes: the fast lane (on) and every request through
//! Pingora (`fast_lane = false`).

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::helpers::*;
use crate::net::*;

/// The demo's protected paths, for a queue `demo`.
const QUEUES: &str = "[[queues]]\nid = \"demo\"\n\
    paths = [\"/events/1\", \"/api/events/1\", \"/api/holds\", \"/api/coupons\", \"/api/me\"]\n\
    release_per_tick = 1\ntick = \"10s\"\nsession = \"10m\"\n";

/// Both lanes: `(name, extra [server] lines)`.
const LANES: [(&str, &str); 2] = [("fast", ""), ("pingora", "fast_lane = false")];

fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n{extra}\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_spelling_of_a_protected_path_reaches_the_upstream_without_a_token() {
    let spellings = [
        "//events/1",
        "//api/holds/abc/confirm",
        "//api/coupons/1/claims",
        "//api/me/bookings",
        "/events//1",
        "/events/1#x",
        "/events/1/#x",
        "/events/./1",
        "/events/1/../1",
        "/api/events%2F1/seats",
        "/api%2fevents/1",
        "/events\\1",
        "/events/%2e%2e/events/1",
        "/events/%1",
        "/events/1%00",
    ];
    for (lane, extra) in LANES {
        let up = RecordingUpstream::start().await;
        let proxy = Proxy::start_with(ProxySpec::memory(QUEUES, up.addr).limits(""), extra).await;
        for (i, path) in spellings.iter().enumerate() {
            let answer = exchange(client_ip(100 + i as u8), &proxy.base, &get(path, "")).await;
            assert_eq!(status(&answer), 400, "{lane}: {path}: {answer}");
            assert!(answer.contains("application/problem+json"), "{lane}: {path}: {answer}");
        }
        // Escaped unreserved characters are the same path: gated.
        let answer = exchange(client_ip(99), &proxy.base, &get("/events/%31", "")).await;
        assert_eq!(status(&answer), 401, "{lane}: {answer}");
        assert!(up.request_lines().is_empty(), "{lane}: reached the upstream: {:?}", up.request_lines());
        // A plain pass-through path still passes, in canonical form.
        let answer = exchange(client_ip(99), &proxy.base, &get("/%61bout?x=%2F", "")).await;
        assert_eq!(status(&answer), 200, "{lane}: {answer}");
        assert_eq!(up.request_lines(), ["GET /about?x=%2F HTTP/1.1"], "{lane}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_outside_the_list_and_internal_endpoints_are_refused_at_the_edge() {
    for (lane, extra) in LANES {
        let up = RecordingUpstream::start().await;
        let proxy = Proxy::start_with(ProxySpec::memory(QUEUES, up.addr).limits(""), extra).await;
        let c = client();
        let connect = exchange(client_ip(1), &proxy.base, b"CONNECT /pass HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(status(&connect), 405, "{lane}: {connect}");
        assert!(
            connect.to_ascii_lowercase().contains("allow: get, head, post, put, patch, delete, options"),
            "{connect}"
        );
        let trace = exchange(client_ip(1), &proxy.base, b"TRACE /pass HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(status(&trace), 405, "{lane}: {trace}");
        let brew = exchange(client_ip(1), &proxy.base, b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(status(&brew), 405, "{lane}: {brew}");
        for path in ["/metrics", "/healthz", "/admin/stats", "/admin", "/metrics/", "/%6detrics"] {
            let answer = exchange(client_ip(2), &proxy.base, &get(path, "")).await;
            assert_eq!(status(&answer), 404, "{lane}: {path}: {answer}");
        }
        assert!(up.request_lines().is_empty(), "{lane}: {:?}", up.request_lines());
        assert!(metric(&c, &proxy, "waiting_room_refused_total{reason=\"method\"}").await >= 3.0);
        assert!(metric(&c, &proxy, "waiting_room_refused_total{reason=\"internal_path\"}").await >= 6.0);
        // The proxy's own health check is not the upstream's.
        let ours = exchange(client_ip(2), &proxy.base, &get("/wr/healthz", "")).await;
        assert_eq!(status(&ours), 200, "{lane}: {ours}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_written_by_the_proxy_and_believed_only_from_trusted_proxies() {
    for (lane, extra) in LANES {
        let up = RecordingUpstream::start().await;
        let server = format!("{extra}\ntrusted_proxies = [\"127.0.2.0/24\"]");
        let proxy = Proxy::start_with(ProxySpec::memory(QUEUES, up.addr).limits(""), &server).await;
        let forged = "X-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n\
                      X-Forwarded-Proto: https\r\nx-visitor-id: someone-else\r\nX-Request-Id: short\r\n";
        // An untrusted client: everything it claimed is dropped.
        let answer = exchange(client_ip(3), &proxy.base, &get("/untrusted", forged)).await;
        assert_eq!(status(&answer), 200, "{lane}: {answer}");
        assert_eq!(up.headers_of("/untrusted", "x-forwarded-for"), ["127.0.1.3"], "{lane}");
        assert_eq!(up.headers_of("/untrusted", "forwarded"), ["for=127.0.1.3"], "{lane}");
        assert!(up.headers_of("/untrusted", "x-real-ip").is_empty(), "{lane}");
        assert!(up.headers_of("/untrusted", "x-forwarded-proto").is_empty(), "{lane}");
        assert!(up.headers_of("/untrusted", "x-visitor-id").is_empty(), "{lane}");
        let id = up.header_of("/untrusted", "x-request-id").unwrap();
        assert!(id != "short" && id.len() == 32, "{lane}: {id}");
        // A trusted proxy: its chain is kept and extended, the client is
        // the right-most address it did not add itself.
        let via_cdn = "X-Forwarded-For: 6.6.6.6, 203.0.113.7\r\nX-Forwarded-Proto: https\r\n\
                       X-Request-Id: cdn-request-0001\r\n";
        let cdn = "127.0.2.9".parse().unwrap();
        let answer = exchange(cdn, &proxy.base, &get("/trusted", via_cdn)).await;
        assert_eq!(status(&answer), 200, "{lane}: {answer}");
        assert_eq!(up.headers_of("/trusted", "x-forwarded-for"), ["6.6.6.6, 203.0.113.7, 127.0.2.9"], "{lane}");
        assert_eq!(up.headers_of("/trusted", "forwarded"), ["for=203.0.113.7"], "{lane}");
        assert_eq!(up.headers_of("/trusted", "x-forwarded-proto"), ["https"], "{lane}");
        assert_eq!(up.header_of("/trusted", "x-request-id").as_deref(), Some("cdn-request-0001"), "{lane}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_two_tokens_is_refused_by_both_lanes() {
    for (lane, extra) in LANES {
        let up = RecordingUpstream::start().await;
        let proxy = Proxy::start_with(ProxySpec::memory(QUEUES, up.addr).limits(""), extra).await;
        let two_auth = exchange(
            client_ip(4),
            &proxy.base,
            &get("/events/1", "Authorization: Bearer a.b.c\r\nAuthorization: Bearer d.e.f\r\n"),
        )
        .await;
        assert_eq!(status(&two_auth), 400, "{lane}: {two_auth}");
        assert!(two_auth.contains("more than one Authorization header"), "{two_auth}");
        let two_cookies =
            exchange(client_ip(4), &proxy.base, &get("/events/1", "Cookie: wr_entry=a\r\nCookie: x=1; wr_entry=b\r\n"))
                .await;
        assert_eq!(status(&two_cookies), 400, "{lane}: {two_cookies}");
        assert!(up.request_lines().is_empty(), "{lane}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pipelined_request_is_answered_whichever_lane_serves_it() {
    for (lane, extra) in LANES {
        let up = RecordingUpstream::start().await;
        let proxy = Proxy::start_with(ProxySpec::memory(QUEUES, up.addr).limits(""), extra).await;
        // Pingora answers the first (the queue page), the lane or Pingora
        // the rest; a POST with a body in the middle.
        let batch = "GET /wr/healthz HTTP/1.1\r\nHost: x\r\n\r\n\
                     GET /one HTTP/1.1\r\nHost: x\r\n\r\n\
                     POST /wr/demo/join HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n\
                     POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
                     GET /events/1 HTTP/1.1\r\nHost: x\r\n\r\n\
                     GET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let mut s = connect_from(client_ip(5), &proxy.base).await.unwrap();
        s.write_all(batch.as_bytes()).await.unwrap();
        let answer = String::from_utf8_lossy(&read_all(&mut s, Duration::from_secs(3)).await).into_owned();
        assert_eq!(statuses(&answer), [200, 200, 200, 200, 401, 200], "{lane}: {answer}");
        assert_eq!(up.request_lines(), ["GET /one HTTP/1.1", "POST /two HTTP/1.1", "GET /three HTTP/1.1"], "{lane}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_failure_is_a_generic_502_and_client_mistakes_log_no_error() {
    // Nobody listens on the upstream port.
    let dead: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    for (lane, extra) in LANES {
        let proxy = Proxy::start_with(ProxySpec::memory(QUEUES, dead).limits(""), extra).await;
        // Garbage, a bad path, a bad method, a broken body: the client's
        // fault, logged as a warning.
        for bad in [
            b"\x16\x03\x01garbage\r\n\r\n".as_slice(),
            b"GET //x HTTP/1.1\r\nHost: x\r\n\r\n",
            b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /wr/demo/join HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let answer = exchange(client_ip(6), &proxy.base, bad).await;
            assert!((400..500).contains(&status(&answer)) || answer.is_empty(), "{lane}: {answer}");
        }
        // The last one is logged when Pingora finishes with it.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !proxy.log().contains("/wr/demo/join") {
            assert!(std::time::Instant::now() < deadline, "{lane}: {}", proxy.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let log = proxy.log();
        let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
        assert!(errors.is_empty(), "{lane}: {errors:#?}");
        assert!(log.lines().any(|l| l.contains("WARN") && l.contains("refused")), "{lane}: {log}");
        // The upstream's failure is the operator's business (logged), not
        // the client's: a generic body.
        let answer = exchange(client_ip(6), &proxy.base, &get("/pass", "")).await;
        assert_eq!(status(&answer), 502, "{lane}: {answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
        assert!(!body.contains("127.0.0.1") && !body.contains(&dead.port().to_string()), "{lane}: {body}");
        assert!(proxy.log().contains("ERROR"), "{lane}: an upstream failure is logged as an error");
    }
}

#[tokio::test]
async fn failed_admin_tokens_are_throttled_per_client() {
    let up = RecordingUpstream::start().await;
    let proxy = Proxy::start(ProxySpec::memory(QUEUES, up.addr).limits("")).await;
    let admin = proxy.admin.clone();
    let ask = |from: u8, token: &str| {
        let admin = admin.clone();
        let token = token.to_owned();
        async move {
            let raw = format!(
                "GET /admin/queues HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            );
            status(&exchange(client_ip(from), &admin, raw.as_bytes()).await)
        }
    };
    // The default budget: 10 failures, then one every 10 s.
    for _ in 0..10 {
        assert_eq!(ask(7, "guess").await, 401);
    }
    assert_eq!(ask(7, "guess").await, 429);
    // Even the right token waits: a guess that is answered tells something.
    assert_eq!(ask(7, ADMIN_TOKEN).await, 429);
    // Another client is not affected.
    assert_eq!(ask(8, ADMIN_TOKEN).await, 200);
    assert_eq!(ask(8, &format!("{ADMIN_TOKEN}x")).await, 401);
}
