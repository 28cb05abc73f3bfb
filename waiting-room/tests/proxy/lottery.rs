//! A scheduled sale with a pre-queue, over three instances on one Redis:
//! one commitment before the opening, one draw at it, the line in the
//! published order (then FIFO), `verify-lottery` agreeing; and the
//! countdown and closed states of a queue that is not open.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use waiting_room::lottery::{Published, verify};

use crate::helpers::*;

const ENTRANTS: usize = 45;
const LATER: usize = 6;

fn rfc3339(ms: i64) -> String {
    waiting_room::clock::rfc3339_ms(ms)
}

async fn lottery_doc(c: &reqwest::Client, proxy: &Proxy) -> Value {
    let r = c.get(proxy.url("/wr/q/lottery")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn verify_lottery(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_waiting-room"))
        .arg("verify-lottery")
        .args(args)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_draw_the_pre_queue_once_in_the_published_order_then_fifo() {
    let shared = Shared::new("lottery").await;
    let now = waiting_room::clock::now_ms();
    // The pre-queue is open from the start; the sale opens once every
    // instance is up and the entrants have joined.
    let opens_at = now + 8_000;
    let queue = format!(
        "{}prequeue_from = \"{}\"\nopens_at = \"{}\"\n",
        queue("q", "/p", 10, "200ms", "10m", 100),
        rfc3339(now - 1_000),
        rfc3339(opens_at)
    );
    let mut proxies = Vec::new();
    for _ in 0..3 {
        proxies.push(Proxy::start(shared.spec(&queue)).await);
    }
    let c = client();

    // One commitment, the same on every instance, nothing revealed.
    let docs: Vec<Value> = futures_util::future::join_all(proxies.iter().map(|p| lottery_doc(&c, p))).await;
    assert_eq!(docs[0]["state"], "committed", "{}", docs[0]);
    assert!(docs[0]["seed"].is_null() && docs[0]["entrants"].is_null());
    assert!(docs.iter().all(|d| d["commitment"] == docs[0]["commitment"]), "{docs:?}");

    // Entrants join through all three instances: no place number, no free
    // entry (free_entry = 100 would admit them at once), a public id each.
    let mut visitors: Vec<Visitor> = vec![Visitor::default(); ENTRANTS];
    for (i, v) in visitors.iter_mut().enumerate() {
        let m = v.join(&c, &proxies[i % 3], "q").await;
        assert_eq!(m["status"], "PREQUEUE", "{m}");
        assert!(m["position"].is_null(), "{m}");
        assert_eq!(m["public_id"].as_str().map(str::len), Some(16), "{m}");
        assert_eq!(m["lottery_url"], "/wr/q/lottery");
        assert_eq!(m["queue_length"], i as u64 + 1);
    }
    let public: Vec<String> = {
        let mut ids = Vec::new();
        for v in &mut visitors {
            ids.push(v.status(&c, &proxies[0], "q").await["public_id"].as_str().unwrap().to_owned());
        }
        ids
    };
    // One entrant listens on a socket: it hears the pre-queue, then its drawn place.
    let mut listener = visitors[0].clone();
    let mut ws = connect_ws(&proxies[1], "q", &mut listener).await;
    let first = next_json(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(first["status"], "PREQUEUE", "{first}");
    // The page says so too.
    let page = c
        .get(proxies[2].url("/wr/q"))
        .header("cookie", visitors[1].cookie_header())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("data-wr-status=\"PREQUEUE\"") && page.contains(&public[1]), "the pre-queue page");
    let left = opens_at - waiting_room::clock::now_ms();
    assert!(left > 0, "the entrants joined too slowly for this test's opening time ({left} ms late)");

    // The draw: the socket hears its place, every instance publishes the same draw.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(u64::try_from(left).unwrap() + 10_000);
    let drawn = loop {
        let m = next_json(&mut ws, deadline - tokio::time::Instant::now()).await.expect("the drawn place");
        if m["status"] != "PREQUEUE" {
            break m;
        }
        assert!(waiting_room::clock::now_ms() < opens_at + 5_000, "still in the pre-queue 5 s after the opening: {m}");
    };
    assert_eq!(drawn["status"], "WAITING", "{drawn}");
    let docs: Vec<Value> = eventually("every instance sees the draw", Duration::from_secs(10), || async {
        let docs: Vec<Value> = futures_util::future::join_all(proxies.iter().map(|p| lottery_doc(&c, p))).await;
        if docs.iter().all(|d| d["state"] == "drawn") { Ok(docs) } else { Err(format!("{docs:?}")) }
    })
    .await;
    assert!(docs.iter().all(|d| *d == docs[0]), "instances publish one draw");
    let published: Published = serde_json::from_value(docs[0].clone()).unwrap();
    assert_eq!(verify(&published), Ok(ENTRANTS));
    let order = published.entrants.clone().unwrap();
    let mut sorted = order.clone();
    sorted.sort();
    let mut mine = public.clone();
    mine.sort();
    assert_eq!(sorted, mine, "the entrants are exactly those who joined the pre-queue");
    assert_ne!(order, public, "the order is the lottery's, not the join order");
    let place_of: HashMap<&str, usize> = order.iter().enumerate().map(|(i, p)| (p.as_str(), i + 1)).collect();
    assert_eq!(drawn["position"].as_u64(), Some(place_of[public[0].as_str()] as u64), "{drawn}");
    // Exactly one instance drew (the one that set the gauge).
    let mut drew = 0;
    for p in &proxies {
        if metric(&c, p, "waiting_room_lottery_entrants{queue=\"q\"}").await == ENTRANTS as f64 {
            drew += 1;
        }
    }
    assert_eq!(drew, 1, "one draw across the instances");

    // Later arrivals queue behind the entrants, FIFO.
    let mut later: Vec<Visitor> = vec![Visitor::default(); LATER];
    for v in &mut later {
        let m = v.join(&c, &proxies[2], "q").await;
        assert_eq!(m["status"], "WAITING", "{m}");
    }

    // Admission follows the draw, then the later arrivals (10 per 200 ms tick).
    let mut admitted: Vec<(i64, usize)> = Vec::new(); // (admitted ms, 1-based place: drawn, then later)
    for (i, v) in visitors.iter_mut().enumerate() {
        let m = v.until_ready(&c, &proxies[i % 3], "q", Duration::from_secs(30)).await;
        admitted.push((admitted_ms(&m), place_of[public[i].as_str()]));
    }
    for (i, v) in later.iter_mut().enumerate() {
        let m = v.until_ready(&c, &proxies[i % 3], "q", Duration::from_secs(30)).await;
        admitted.push((admitted_ms(&m), ENTRANTS + i + 1));
    }
    admitted.sort_by_key(|(_, place)| *place);
    for w in admitted.windows(2) {
        assert!(w[0].0 <= w[1].0, "place {} admitted after place {}: {admitted:?}", w[0].1, w[1].1);
    }

    // Anyone can check the draw with the shipped tool; a tampered copy fails.
    let (code, out) = verify_lottery(&["--url", &proxies[0].base, "--queue", "q", "--public-id", &public[3]]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK") && out.contains(&format!("drawn at place {}", place_of[public[3].as_str()])), "{out}");
    let mut tampered = published.clone();
    if let Some(e) = tampered.entrants.as_mut() {
        e.swap(0, 1);
    }
    let file = proxies[0].dir.join("tampered.json");
    std::fs::write(&file, serde_json::to_string(&tampered).unwrap()).unwrap();
    let (code, out) = verify_lottery(&["--file", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED") && out.contains("place 1"), "{out}");
}

fn admitted_ms(m: &Value) -> i64 {
    let at = m["admitted_at"].as_str().unwrap();
    waiting_room::schedule::At::parse(at).unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_the_opening_a_countdown_and_after_the_close_nobody_new() {
    let upstream = Upstream::start().await;
    let now = waiting_room::clock::now_ms();
    let queues = format!(
        "{}prequeue_from = \"{}\"\nopens_at = \"{}\"\n{}closes_at = \"{}\"\n",
        queue("soon", "/soon", 10, "200ms", "10m", 100),
        rfc3339(now + 3_600_000),
        rfc3339(now + 7_200_000),
        queue("over", "/over", 10, "200ms", "10m", 100),
        rfc3339(now - 1_000),
    );
    let proxy = Proxy::start(ProxySpec::memory(&queues, upstream.addr)).await;
    let c = client();

    // Not open: every way in says when, mints no visitor id, takes no place.
    let r = c.post(proxy.url("/wr/soon/join")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("set-cookie").is_none(), "no visitor id before the opening");
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["status"], "SCHEDULED", "{m}");
    assert_eq!(m["prequeue_from"].as_str().map(|t| t.starts_with(&rfc3339(now + 3_600_000)[..16])), Some(true), "{m}");
    assert!(m["opens_at"].is_string() && m["join_url"].is_null(), "{m}");
    assert_eq!(m["retry_after_seconds"], 30);
    let page = c.get(proxy.url("/wr/soon")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("data-wr-status=\"SCHEDULED\"") && page.contains("Not open yet"), "countdown page");
    assert!(page.contains(">59:5") || page.contains(">1:00:00<"), "the countdown to the pre-queue shows on the page");
    let mut v = Visitor::default();
    let mut ws = connect_ws(&proxy, "soon", &mut v).await;
    assert_eq!(next_json(&mut ws, Duration::from_secs(5)).await.unwrap()["status"], "SCHEDULED");
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await, Some(1000));
    assert!(v.get("wr_visitor").is_none());
    // The lottery's commitment is published before anyone can join.
    let doc: Value = eventually("the commitment", Duration::from_secs(5), || async {
        let r = c.get(proxy.url("/wr/soon/lottery")).send().await.unwrap();
        if r.status() == 200 { Ok(r.json::<Value>().await.unwrap()) } else { Err(r.status().to_string()) }
    })
    .await;
    assert_eq!(doc["state"], "committed");
    assert_eq!(doc["commitment"].as_str().map(str::len), Some(64));
    // A queue without a pre-queue has no lottery.
    let r = c.get(proxy.url("/wr/over/lottery")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("no pre-queue"));

    // Closed: nobody new, told so on every path.
    let m: Value = c.post(proxy.url("/wr/over/join")).send().await.unwrap().json().await.unwrap();
    assert_eq!(m["status"], "CLOSED", "{m}");
    assert!(m["closes_at"].is_string() && m["join_url"].is_null(), "{m}");
    let page = c.get(proxy.url("/wr/over")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("data-wr-status=\"CLOSED\"") && page.contains("This sale is closed"));
    let mut v = Visitor::default();
    let mut ws = connect_ws(&proxy, "over", &mut v).await;
    assert_eq!(next_json(&mut ws, Duration::from_secs(5)).await.unwrap()["status"], "CLOSED");
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await, Some(1000));
    // The protected paths stay gated: nothing reached the upstream.
    let r = c.get(proxy.url("/over/x")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(upstream.count(), 0);
}
