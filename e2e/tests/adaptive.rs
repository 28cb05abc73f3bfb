//! Adaptive admission with real processes: the proxy measures the booking
//! core's real latency (its database pool cut to one connection), decides N
//! from it once per tick, and replaces admitted visitors who never arrive.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::{ADMIN_TOKEN, Stack, StackOptions};
use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

const QUEUE: &str = "sale";

/// A visitor on a WebSocket: connects (and so joins), reads pushes until
/// READY; returns the entry token.
async fn admitted(proxy: String) -> String {
    let url = format!("{}/wr/{QUEUE}/ws", proxy.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next()).await.expect("no READY in time").unwrap().unwrap();
        if let Message::Text(text) = frame {
            let status: Value = serde_json::from_str(&text).unwrap();
            if status["status"] == "READY" {
                return status["token"].as_str().unwrap().to_owned();
            }
        }
    }
}

async fn admin(stack: &Stack, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}{path}", stack.proxy_admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The value of a metric series of the proxy (0 when absent).
async fn metric(stack: &Stack, series: &str) -> f64 {
    let text = reqwest::get(&stack.proxy_metrics).await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

fn ticks(log: &Value) -> Vec<(u64, u64, u64, String)> {
    let mut t: Vec<(u64, u64, u64, String)> = log["ticks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["tick"].as_u64().unwrap(),
                t["n"].as_u64().unwrap(),
                t["released"].as_u64().unwrap(),
                t["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    t.sort();
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_admission_grows_until_the_booking_core_slows_then_cuts() {
    // Enough work per visitor that N reaches the booking core's capacity
    // while visitors are still waiting (N grows by a tenth a second).
    const VISITORS: usize = 600;
    const REQUESTS: usize = 20;
    const MAX: u64 = 1000;
    let stack = Stack::start(StackOptions {
        redis: true,
        postgres: true,
        tick: "250ms".into(),
        paths: vec!["/api/events".into(), "/api/coupons".into(), "/api/me".into()],
        waiting_room_extra: format!(
            "admission = \"adaptive\"\nmin_per_tick = 2\nmax_per_tick = {MAX}\ntarget_p99 = \"50ms\"\n\
             arrival_grace = \"30s\"\nabandon_after = \"0s\"\n"
        ),
        // The booking core's capacity, limited for real: one database connection.
        env: vec![("BC_DATABASE__MAX_CONNECTIONS".into(), "1".into())],
        ..StackOptions::default()
    })
    .await
    .unwrap();
    // Each request is the seat map of a 2,000-seat hall: a few milliseconds
    // of the booking core's CPU, so a few dozen visitors per tick are more
    // than it serves.
    let (event, _) = stack.seed(40, 50, 10).await.unwrap();
    let mut visitors = Vec::new();
    for _ in 0..VISITORS {
        let proxy = stack.proxy.clone();
        visitors.push(tokio::spawn(async move {
            let token = admitted(proxy.clone()).await;
            let c = reqwest::Client::new();
            let mut failed = 0;
            for _ in 0..REQUESTS {
                let url = format!("{proxy}/api/events/{event}/seats");
                let r = c.get(url).bearer_auth(&token).send().await.unwrap();
                failed += usize::from(!r.status().is_success());
            }
            failed
        }));
    }
    let mut failed = 0;
    for v in visitors {
        failed += v.await.unwrap();
    }
    // The last arrivals reach a tick's window within a report and a tick.
    // A window whose tick answer is lost (a store timeout under load) is lost
    // with its counts: at most a few of the arrivals, never one twice.
    let arrivals_series = format!("waiting_room_arrivals_total{{queue=\"{QUEUE}\"}}");
    let enough = VISITORS as f64 * 0.95;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric(&stack, &arrivals_series).await < enough && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let state = admin(&stack, &format!("/admin/queues/{QUEUE}")).await;
    let log = ticks(&admin(&stack, &format!("/admin/queues/{QUEUE}/ticks?limit=1000")).await);
    let trace: Vec<(u64, &str)> = log.iter().map(|t| (t.1, t.3.as_str())).collect();
    let context = format!("trace (n, reason of the decision behind it): {trace:?}\nstate: {state}");
    assert_eq!(failed, 0, "admitted requests failed; {context}");
    assert_eq!(state["controller"]["mode"], "adaptive", "{context}");

    // Every tick released at most its N, and N stayed within the bounds.
    for (tick, n, released, _) in &log {
        assert!(*released <= *n && (2..=MAX).contains(n), "tick {tick}: {released} of {n}; {context}");
    }
    let released: u64 = log.iter().map(|t| t.2).sum();
    assert_eq!(released, VISITORS as u64, "{context}");
    // It grew from the minimum while the booking core kept up ...
    assert!(log.iter().any(|t| t.3 == "headroom" && t.1 >= 6), "never grew to 3x the minimum; {context}");
    // ... and cut N the moment the booking core's p99 crossed the target:
    // each overload decision left N at most 80% of the one before it.
    let cuts: Vec<(u64, u64)> = log.windows(2).filter(|w| w[1].3 == "overload").map(|w| (w[0].1, w[1].1)).collect();
    assert!(!cuts.is_empty(), "the booking core on one connection was never seen overloaded; {context}");
    for (before, after) in &cuts {
        assert!(*after <= (*before * 8).div_ceil(10).max(2), "{before} -> {after}; {context}");
    }
    // Every visitor arrived once (ten requests each, either lane), none is a no-show.
    let arrivals = metric(&stack, &arrivals_series).await;
    assert!((enough..=VISITORS as f64).contains(&arrivals), "{arrivals} arrivals; {context}");
    assert_eq!(metric(&stack, &format!("waiting_room_no_shows_total{{queue=\"{QUEUE}\"}}")).await, 0.0);
    let overloads = format!("waiting_room_adaptive_decisions_total{{queue=\"{QUEUE}\",reason=\"overload\"}}");
    // (The last decision may not have been applied by a tick yet.)
    assert!(metric(&stack, &overloads).await >= cuts.len() as f64, "{context}");
    // The decision shown carries the signals it judged.
    assert!(state["controller"]["signals"]["samples"].as_u64().is_some(), "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_shows_stop_counting_toward_max_active_so_the_line_keeps_moving() {
    const VISITORS: usize = 30;
    // Sessions last ten minutes and at most 12 may be active: without
    // replacing no-shows, 12 get in and the other 18 wait ten minutes.
    let stack = Stack::start(StackOptions {
        tick: "250ms".into(),
        paths: vec!["/api/events".into(), "/api/coupons".into(), "/api/me".into()],
        waiting_room_extra: "max_active = 12\nadmission = \"adaptive\"\nmin_per_tick = 12\nmax_per_tick = 12\n\
                             arrival_grace = \"1s\"\nabandon_after = \"0s\"\n"
            .into(),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    // One visitor in three arrives (one request); the others never do.
    let mut visitors = Vec::new();
    for i in 0..VISITORS {
        let proxy = stack.proxy.clone();
        visitors.push(tokio::spawn(async move {
            let token = admitted(proxy.clone()).await;
            if i % 3 == 0 {
                let r = reqwest::Client::new()
                    .get(format!("{proxy}/api/me/bookings"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "{}", r.status());
            }
        }));
    }
    for v in visitors {
        v.await.unwrap();
    }
    let state = admin(&stack, &format!("/admin/queues/{QUEUE}")).await;
    assert_eq!(state["waiting"], 0, "{state}");
    assert_eq!(state["released_total"], VISITORS, "{state}");
    let arrivals = VISITORS.div_ceil(3) as f64;
    // Every one who never came is found out within the grace and a tick (one
    // who came late would count in both).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let seen = metric(&stack, &format!("waiting_room_arrivals_total{{queue=\"{QUEUE}\"}}")).await;
        let gone = metric(&stack, &format!("waiting_room_no_shows_total{{queue=\"{QUEUE}\"}}")).await;
        // (A tick whose answer a store timeout lost takes its window's
        // counts with it: a little slack, never a double count.)
        if seen <= arrivals && seen >= arrivals - 3.0 && gone >= VISITORS as f64 - arrivals - 12.0 {
            assert!(gone <= VISITORS as f64 - arrivals + 3.0, "no-shows {gone}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "arrivals {seen}, no-shows {gone}; {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
