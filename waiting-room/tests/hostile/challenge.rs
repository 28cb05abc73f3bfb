//! The proof-of-work challenge (`challenge = "pow"`): a new place costs a
//! solved challenge, each solution buys one place on any instance, and the
//! difficulty follows the pressure on the line. Every answer here is solved
//! from the documented format (`joiners::solve`).

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::joiners::*;

/// A queue asking for a challenge of `min`..=`max` bits.
fn pow_queue(id: &str, path: &str, n: u64, tick: &str, min: u8, max: u8) -> String {
    format!(
        "{}challenge = \"pow\"\nchallenge_min_bits = {min}\nchallenge_max_bits = {max}\n",
        queue(id, path, n, tick, "10m", 0)
    )
}

fn detail(a: &Answer) -> &str {
    a.body["detail"].as_str().unwrap_or_default()
}

/// A 428 from `proxy` for a visitor without a place.
async fn challenge(c: &reqwest::Client, proxy: &Proxy, queue: &str) -> Answer {
    let a = join(c, proxy, queue, None, None).await;
    assert_eq!(a.status, 428, "{a:?}");
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_place_needs_a_solved_challenge_and_each_solution_buys_one() {
    let upstream = Upstream::start().await;
    let queues = format!("{}{}", pow_queue("q", "/a", 1, "1h", 6, 6), pow_queue("q2", "/b", 1, "1h", 6, 6));
    let proxy = Proxy::start(ProxySpec::memory(&queues, upstream.addr)).await;
    let c = client();
    let metrics = client();
    let refused_before = metric(&metrics, &proxy, "waiting_room_refused_total{reason=\"challenge\"}").await;

    let first = challenge(&c, &proxy, "q").await;
    assert_eq!(first.header("content-type"), Some("application/problem+json"));
    assert_eq!(first.header("cache-control"), Some("no-store"));
    assert!(first.visitor_cookie().is_none(), "no visitor id before a place");
    let text = first.body["challenge"].as_str().unwrap().to_owned();
    assert!(text.starts_with("v1.q.6."), "{text}");
    assert_eq!(first.body["difficulty"], 6);
    assert_eq!(first.body["algorithm"], "sha256-leading-zero-bits");
    assert_eq!(first.body["join_url"], "/wr/q/join");
    assert!(first.body["expires_at"].as_str().unwrap().ends_with('Z'));
    assert!(detail(&first).contains("SHA-256") && detail(&first).contains("nonce"), "{first:?}");

    // A nonce that does not solve it.
    let wrong = (0u64..).map(|n| n.to_string()).find(|n| zero_bits(&text, n) < 6).unwrap();
    let a = join(&c, &proxy, "q", None, Some(json!({"challenge": text, "nonce": wrong}))).await;
    assert_eq!(a.status, 428);
    assert!(detail(&a).starts_with("the nonce does not solve the challenge"), "{a:?}");
    assert_ne!(a.body["challenge"], text.as_str(), "a fresh challenge comes with the refusal");

    // The solution: a place and a visitor id.
    let answer = answer_to(&first.body);
    let placed = join(&c, &proxy, "q", None, Some(answer.clone())).await;
    assert_eq!((placed.status, placed.body["status"].as_str()), (200, Some("WAITING")), "{placed:?}");
    let cookie = placed.visitor_cookie().unwrap();
    // The same solution buys nobody else a place.
    let again = join(&c, &proxy, "q", None, Some(answer.clone())).await;
    assert_eq!(again.status, 428);
    assert!(detail(&again).starts_with("that challenge was already used"), "{again:?}");
    // A visitor with a place needs no challenge, with or without a stale answer.
    for body in [None, Some(answer.clone())] {
        let a = join(&c, &proxy, "q", Some(&cookie), body).await;
        assert_eq!((a.status, a.body["position"].as_u64()), (200, Some(1)), "{a:?}");
    }
    assert_eq!(get(&c, &proxy, "/wr/q/status", Some(&cookie)).await.body["status"], "WAITING");

    // Forged (edited difficulty) and foreign (another queue's) challenges.
    let forged = text.replacen("v1.q.6.", "v1.q.1.", 1);
    let a = join(&c, &proxy, "q", None, Some(json!({"challenge": forged, "nonce": solve(&forged, 1)}))).await;
    assert!(a.status == 428 && detail(&a).starts_with("the challenge in the answer was not issued"), "{a:?}");
    let other = challenge(&c, &proxy, "q2").await;
    let a = join(&c, &proxy, "q", None, Some(answer_to(&other.body))).await;
    assert!(a.status == 428 && detail(&a).contains("another queue"), "{a:?}");
    // Bodies that are no answer at all: 400, saying what a join body is.
    for body in [&b"nonsense"[..], br#"{"challenge":"x"}"#, br#"{"challenge":"x","nonce":"not ok"}"#] {
        let r = c.post(proxy.url("/wr/q/join")).body(body.to_vec()).send().await.unwrap();
        assert_eq!(r.status(), 400);
        let p: Value = r.json().await.unwrap();
        assert!(p["detail"].as_str().unwrap().contains("nonce"), "{p}");
    }

    // The page hands a new visitor the challenge (and explains it without JavaScript).
    let page = get(&c, &proxy, "/wr/q", None).await;
    assert_eq!(page.status, 200);
    assert!(page.visitor_cookie().is_none());
    let html = page.body.as_str().unwrap();
    assert!(html.contains("data-wr-step=\"challenge\""), "{html}");
    assert!(html.contains("\"challenge\":{\"algorithm\":\"sha256-leading-zero-bits\""), "{html}");
    assert!(html.contains("JavaScript is turned off in your browser"), "{html}");
    assert!(html.contains("id=\"wr-solver\"") && html.contains("crypto.subtle"), "the solver ships with the page");

    // The socket of a visitor without a place: the challenge, then a normal close.
    let mut nobody = Visitor::default();
    let mut ws = connect_ws(&proxy, "q", &mut nobody).await;
    let m = next_json(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!((m["status"].as_str(), m["join_url"].as_str()), (Some("NOT_IN_QUEUE"), Some("/wr/q/join")));
    assert!(m["challenge"]["challenge"].as_str().unwrap().starts_with("v1.q.6."), "{m}");
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await, Some(1000));
    assert!(nobody.cookies.is_empty(), "{nobody:?}");
    // The placed visitor's socket is live as usual.
    let mut placed_visitor =
        Visitor { cookies: vec![("wr_visitor".into(), cookie.trim_start_matches("wr_visitor=").into())] };
    let mut ws = connect_ws(&proxy, "q", &mut placed_visitor).await;
    assert_eq!(next_json(&mut ws, Duration::from_secs(5)).await.unwrap()["position"], 1);

    let refused = metric(&metrics, &proxy, "waiting_room_refused_total{reason=\"challenge\"}").await - refused_before;
    assert_eq!(refused, 8.0, "every challenge handed out is counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_solution_is_accepted_once_across_instances() {
    let shared = Shared::new("once").await;
    let q = pow_queue("q", "/a", 1, "1h", 8, 8);
    let mut proxies = Vec::new();
    for _ in 0..3 {
        proxies.push(Proxy::start(shared.spec(&q)).await);
    }
    let c = client();
    let answer = answer_to(&challenge(&c, &proxies[0], "q").await.body);
    let answers = join_all((0..150).map(|i| join(&c, &proxies[i % 3], "q", None, Some(answer.clone())))).await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 428).count(), 149, "{statuses:?}");
    assert_eq!(waiting(&proxies[2], "q").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_outlives_a_crash_and_its_solution_stays_spent() {
    let upstream = Upstream::start().await;
    let prefix = unique("crash");
    let q = pow_queue("q", "/a", 1, "1h", 8, 8);
    let mut proxy = Proxy::start(ProxySpec::redis(&q, upstream.addr, &prefix)).await;
    let c = client();
    let answer = answer_to(&challenge(&c, &proxy, "q").await.body);
    // kill -9 and start again (same key directory, same Redis): the challenge still verifies.
    proxy.restart().await;
    let placed = join(&c, &proxy, "q", None, Some(answer.clone())).await;
    assert_eq!(placed.status, 200, "{placed:?}");
    // And once spent it stays spent: the record is in Redis, not in the process.
    proxy.restart().await;
    let again = join(&c, &proxy, "q", None, Some(answer)).await;
    assert!(again.status == 428 && detail(&again).starts_with("that challenge was already used"), "{again:?}");
}

/// The difficulty `proxy` hands out now.
async fn difficulty(c: &reqwest::Client, proxy: &Proxy) -> u64 {
    challenge(c, proxy, "q").await.body["difficulty"].as_u64().unwrap()
}

/// Wait until `proxy` hands out a difficulty `ok` accepts.
async fn until_difficulty(c: &reqwest::Client, proxy: &Proxy, ok: impl Fn(u64) -> bool, what: &str) -> u64 {
    eventually(what, Duration::from_secs(15), || async {
        let d = difficulty(c, proxy).await;
        if ok(d) { Ok(d) } else { Err(format!("still {d}")) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_difficulty_follows_the_pressure_on_every_instance() {
    let shared = Shared::new("pressure").await;
    let q = pow_queue("q", "/a", 1, "1s", 4, 12);
    let ticking = Proxy::start(shared.spec(&q)).await;
    // An edge-only instance learns the pressure from the tick messages.
    let edge = Proxy::start_with(shared.spec(&q), "release_ticks = false").await;
    let c = client();
    assert_eq!(difficulty(&c, &ticking).await, 4);
    assert_eq!(difficulty(&c, &edge).await, 4);
    // An answer solved while the line was calm, kept for later.
    let calm = answer_to(&challenge(&c, &edge, "q").await.body);

    // A flood of new places (each solving its challenge) against 1 released
    // a tick, until the test has seen what it needs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let (stop, c) = (stop.clone(), c.clone());
        let base = ticking.base.clone();
        tokio::spawn(async move {
            let mut placed = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let url = format!("{base}/wr/q/join");
                let p: Value = c.post(&url).send().await.unwrap().json().await.unwrap();
                // A tick may raise the difficulty past an answer in flight: that one is refused.
                match c.post(&url).json(&answer_to(&p)).send().await.unwrap().status().as_u16() {
                    200 => placed += 1,
                    status => assert_eq!(status, 428),
                }
            }
            placed
        })
    };
    // Both instances raise it, at most to 4 + log2(joins in one tick).
    let high = until_difficulty(&c, &edge, |d| d >= 7, "the edge instance never saw the pressure").await;
    until_difficulty(&c, &ticking, |d| d >= 7, "the ticking instance never saw the pressure").await;
    // The calm answer is no longer enough.
    let stale = join(&c, &edge, "q", None, Some(calm)).await;
    assert!(stale.status == 428 && detail(&stale).contains("got busier"), "{stale:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let placed = flood.await.unwrap();
    assert!(u64::from(1u8) << (high - 4) <= placed, "{high} bits from {placed} places");
    // A tick without new places later, both are back at the minimum.
    until_difficulty(&c, &ticking, |d| d == 4, "the difficulty never fell back").await;
    until_difficulty(&c, &edge, |d| d == 4, "the edge instance never saw it fall").await;
}

/// A Redis server of this test's own, on a free port.
struct OwnRedis {
    child: std::process::Child,
    url: String,
}

impl OwnRedis {
    async fn start() -> OwnRedis {
        let port = free_port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/ensure-deps.sh)");
        let url = format!("redis://127.0.0.1:{port}");
        eventually("the test's Redis never answered", Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map(|_| ()).map_err(|e| e.to_string())
        })
        .await;
        OwnRedis { child, url }
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status();
        assert!(ok.unwrap().success());
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_stalls_challenges_are_still_handed_out_and_answers_wait_for_it() {
    let redis = OwnRedis::start().await;
    let upstream = Upstream::start().await;
    let q = pow_queue("q", "/a", 1, "1h", 8, 8);
    let mut spec = ProxySpec::redis(&q, upstream.addr, "stall");
    spec.redis_url = Some(&redis.url);
    let proxy = Proxy::start(spec).await;
    let c = client();
    redis.signal("STOP");
    // Handing out a challenge needs no store.
    let stalled = challenge(&c, &proxy, "q").await;
    // An answer needs the store: a 503 saying so, not a hang.
    let answer = answer_to(&stalled.body);
    let a = join(&c, &proxy, "q", None, Some(answer.clone())).await;
    assert_eq!(a.status, 503, "{a:?}");
    assert!(a.header("retry-after").is_some() && detail(&a).contains("store"), "{a:?}");
    redis.signal("CONT");
    // The stalled join may have run once Redis woke (its answer then spent):
    // the visitor still gets in, at worst by solving the fresh challenge of
    // the 428, as the page does; a 503 is retried.
    let mut body = answer;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let placed = loop {
        let a = join(&c, &proxy, "q", None, Some(body.clone())).await;
        match a.status {
            200 => break a,
            428 => body = answer_to(&a.body),
            status => assert_eq!(status, 503, "{a:?}"),
        }
        assert!(std::time::Instant::now() < deadline, "the visitor never got in after the stall: {a:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(placed.body["status"], "WAITING");
}
