//! The queue API's answers to bad requests, and health.

use std::time::{Duration, Instant};

use crate::helpers::*;

async fn memory_proxy(upstream: &Upstream) -> Proxy {
    Proxy::start(ProxySpec {
        queues: &queue("q", "/a", 10, "1s", "10m", 0),
        upstream: upstream.addr,
        redis_prefix: None,
        keys_dir: None,
        redis_url: None,
        store: None,
        limits: ONE_ADDRESS_LIMITS,
        open_files: None,
    })
    .await
}

async fn problem(r: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(r.status(), status);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["detail"].as_str().is_some_and(|d| d.len() > 10), "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_problem_details_and_never_a_5xx() {
    let upstream = Upstream::start().await;
    let proxy = memory_proxy(&upstream).await;
    let c = client();
    let body = problem(c.post(proxy.url("/wr/nope/join")).send().await.unwrap(), 404).await;
    assert!(body["detail"].as_str().unwrap().contains("known queues: q"));
    // The WebSocket handshake and the admin API say the same of an unknown queue.
    let handshake = c
        .get(proxy.url("/wr/nope/ws"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(handshake, 404).await, body, "the WebSocket's 404");
    let admin = c.get(format!("{}/admin/queues/nope", proxy.admin)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(problem(admin, 404).await, body, "the admin API's 404");
    let r = c.get(proxy.url("/wr/q/join")).send().await.unwrap();
    assert_eq!(r.headers()["allow"], "POST");
    problem(r, 405).await;
    problem(c.post(proxy.url("/wr/q/status")).send().await.unwrap(), 405).await;
    problem(c.get(proxy.url("/wr/q/join/extra")).send().await.unwrap(), 404).await;
    problem(c.post(proxy.url("/wr/q/join")).body(vec![b'x'; 100_000]).send().await.unwrap(), 400).await;
    problem(c.get(proxy.url("/wr/q/ws")).send().await.unwrap(), 426).await;

    // Malformed or forged visitor cookies are ignored: a fresh id is issued.
    for cookie in ["wr_visitor=garbage", "wr_visitor=00000000000000000000000000000000.AAAA", "wr_visitor", ";;;="] {
        let r = c.post(proxy.url("/wr/q/join")).header("cookie", cookie).send().await.unwrap();
        assert_eq!(r.status(), 200, "{cookie}");
        let set: Vec<_> = r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        assert!(
            set.iter().any(|c| c.starts_with("wr_visitor=") && c.contains("HttpOnly") && c.contains("SameSite=Lax")),
            "{set:?}"
        );
    }
    // A status call from a stranger says how to join.
    let s: serde_json::Value = c.get(proxy.url("/wr/q/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(s["status"], "NOT_IN_QUEUE");
    assert_eq!(s["join_url"], "/wr/q/join");
    // The service kept serving throughout.
    assert_eq!(c.get(proxy.url("/wr/healthz")).send().await.unwrap().status(), 200);
}

/// A proxy serving `queues` on a Redis of the test's own.
async fn own_redis_proxy(redis: &RedisServer, upstream: &Upstream, queues: &str) -> Proxy {
    let (url, prefix) = (redis.url(), unique("own"));
    Proxy::start(ProxySpec { redis_url: Some(&url), ..ProxySpec::redis(queues, upstream.addr, &prefix) }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_reports_503_while_redis_is_down_and_recovers() {
    let port = free_port();
    let redis = RedisServer::start(port);
    let upstream = Upstream::start().await;
    let proxy = own_redis_proxy(&redis, &upstream, &queue("q", "/a", 10, "1s", "10m", 0)).await;
    let c = client();
    assert_eq!(c.get(proxy.url("/wr/healthz")).send().await.unwrap().status(), 200);
    drop(redis);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.get(proxy.url("/wr/healthz")).send().await.unwrap();
        if r.status() == 503 {
            problem(r, 503).await;
            break;
        }
        assert!(Instant::now() < deadline, "healthz never reported the outage");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = c.post(proxy.url("/wr/q/join")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "2");

    let _redis = RedisServer::start(port);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if c.get(proxy.url("/wr/healthz")).send().await.unwrap().status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "healthz never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.post(proxy.url("/wr/q/join")).send().await.unwrap().status(), 200);
}

/// Frozen Redis (SIGSTOP): it accepts connections and never answers — the
/// worst case for a client without deadlines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_costs_readiness_and_joins_a_bounded_wait_and_admitted_traffic_nothing() {
    let redis = RedisServer::start(free_port());
    let upstream = Upstream::start().await;
    let proxy = own_redis_proxy(&redis, &upstream, &queue("q", "/a", 10, "200ms", "10m", 0)).await;
    let c = client();
    let mut admitted = Visitor::default();
    admitted.join(&c, &proxy, "q").await;
    admitted.until_ready(&c, &proxy, "q", Duration::from_secs(10)).await;
    let protected = || c.get(proxy.url("/a")).header("cookie", admitted.cookie_header()).send();
    assert_eq!(protected().await.unwrap().status(), 200);
    assert_eq!(c.get(proxy.url("/wr/readyz")).send().await.unwrap().status(), 200);

    redis.signal("-STOP");
    for round in 0..10 {
        // Ready but degraded (every instance shares the store: none leaves
        // the rotation), and the store check says 503; both within 500 ms.
        let t = Instant::now();
        let r = c.get(proxy.url("/wr/readyz")).send().await.unwrap();
        let took = t.elapsed();
        assert!(took < Duration::from_millis(500), "readiness took {took:?} (round {round})");
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<serde_json::Value>().await.unwrap()["status"], "degraded");
        let t = Instant::now();
        let r = c.get(proxy.url("/wr/healthz")).send().await.unwrap();
        let took = t.elapsed();
        assert!(took < Duration::from_millis(500), "the store check took {took:?} (round {round})");
        problem(r, 503).await;
        let t = Instant::now();
        assert_eq!(c.get(proxy.url("/wr/livez")).send().await.unwrap().status(), 200);
        assert!(t.elapsed() < Duration::from_millis(500), "liveness took {:?}", t.elapsed());
        let t = Instant::now();
        assert_eq!(protected().await.unwrap().status(), 200, "an admitted visitor is never held by the store");
        assert!(t.elapsed() < Duration::from_millis(500), "admitted traffic took {:?}", t.elapsed());
        let t = Instant::now();
        let r = c.post(proxy.url("/wr/q/join")).send().await.unwrap();
        let took = t.elapsed();
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));
        assert!(took < Duration::from_millis(1500), "a join waited {took:?} on the frozen store");
    }

    redis.signal("-CONT");
    eventually("the store check after Redis thawed", Duration::from_secs(10), || async {
        match c.get(proxy.url("/wr/healthz")).send().await {
            Ok(r) if r.status() == 200 => Ok(()),
            Ok(r) => Err(format!("{}", r.status())),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    assert_eq!(c.post(proxy.url("/wr/q/join")).send().await.unwrap().status(), 200);
}
