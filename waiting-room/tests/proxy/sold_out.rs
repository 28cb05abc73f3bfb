//! Sold-out reaches the line: three instances on one Redis follow the
//! booking core's stock (a stand-in serving `GET /admin/stock`), and when it
//! runs out every waiting socket on every instance hears it, newcomers are
//! told instead of getting a place, releases stop; stock that comes back is
//! released at most as much as there is.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

async fn admin_json(c: &reqwest::Client, p: &Proxy, method: reqwest::Method, path: &str, body: Option<&str>) -> Value {
    let mut r = c.request(method, format!("{}{path}", p.admin)).bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        r = r.header("content-type", "application/json").body(b.to_owned());
    }
    r.send().await.unwrap().json().await.unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_socket_hears_sold_out_releases_stop_and_freed_stock_is_released_in_measure() {
    let stock = Arc::new(Mutex::new(r#"{"events":[{"id":1,"free_seats":100}],"campaigns":[]}"#.to_owned()));
    let served = stock.clone();
    let stock_addr = raw_upstream(move |head: String| {
        let served = served.clone();
        async move {
            let body = if head.contains("authorization: Bearer stock-token")
                || head.contains("Authorization: Bearer stock-token")
            {
                served.lock().unwrap().clone()
            } else {
                r#"{"detail":"wrong token"}"#.to_owned()
            };
            let status = if body.contains("wrong token") { "401 Unauthorized" } else { "200 OK" };
            format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }
    })
    .await;
    let shared = Shared::new("soldout").await;
    let config = format!(
        "[stock]\nurl = \"http://{stock_addr}/admin/stock\"\ntoken = \"stock-token\"\npoll_interval = \"100ms\"\n\n{}\
         stop_when_sold_out = true\nstock_events = [1]\n{}",
        queue("q", "/a", 5, "400ms", "10m", 0),
        queue("other", "/other", 1, "1h", "10m", 0)
    );
    let mut proxies = Vec::new();
    for _ in 0..3 {
        proxies.push(Proxy::start(shared.spec(&config)).await);
    }
    let c = client();
    eventually("the admin API answers", Duration::from_secs(10), || async {
        let r = c.get(format!("{}/admin/queues/q", proxies[0].admin)).bearer_auth(ADMIN_TOKEN).send().await;
        r.map(|_| ()).map_err(|e| e.to_string())
    })
    .await;
    // Hold the line (paused) while it forms: 30 visitors, 9 on sockets, on all three instances.
    admin_json(&c, &proxies[0], reqwest::Method::PATCH, "/admin/queues/q", Some(r#"{"paused":true}"#)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut visitors = vec![Visitor::default(); 30];
    for (i, v) in visitors.iter_mut().enumerate() {
        assert_eq!(v.join(&c, &proxies[i % 3], "q").await["status"], "WAITING");
    }
    let mut sockets = Vec::new();
    for (i, v) in visitors.iter_mut().take(9).enumerate() {
        let mut ws = connect_ws(&proxies[i % 3], "q", v).await;
        assert_eq!(next_json(&mut ws, Duration::from_secs(5)).await.unwrap()["status"], "WAITING");
        sockets.push(ws);
    }

    // The last seat goes: every socket hears it.
    *stock.lock().unwrap() = r#"{"events":[{"id":1,"free_seats":0}],"campaigns":[]}"#.to_owned();
    let sold = Instant::now();
    let mut heard = Vec::new();
    for ws in &mut sockets {
        loop {
            let m = next_json(ws, Duration::from_secs(5)).await.expect("every socket hears sold out");
            if m["status"] == "SOLD_OUT" {
                heard.push(sold.elapsed());
                break;
            }
        }
    }
    println!("sold out heard by 9 sockets on 3 instances after {:?} (slowest)", heard.iter().max());
    // Newcomers are told before they take a place, on every instance.
    for p in &proxies {
        let r = c.post(p.url("/wr/q/join")).send().await.unwrap();
        assert!(r.headers().get("set-cookie").is_none(), "no place, no visitor id");
        assert_eq!(r.json::<Value>().await.unwrap()["status"], "SOLD_OUT");
    }
    assert_eq!(visitors[20].status(&c, &proxies[1], "q").await["status"], "SOLD_OUT");
    // A visitor id from another queue is no place here: told, not placed.
    let mut stranger = Visitor::default();
    stranger.join(&c, &proxies[0], "other").await;
    assert!(stranger.get("wr_visitor").is_some());
    assert_eq!(stranger.join(&c, &proxies[0], "q").await["status"], "SOLD_OUT");
    let page = c.get(proxies[2].url("/wr/q")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("data-wr-status=\"SOLD_OUT\""));
    // Resumed by the operator: still nobody released while nothing is left.
    admin_json(&c, &proxies[0], reqwest::Method::PATCH, "/admin/queues/q", Some(r#"{"paused":false}"#)).await;
    let released = |s: &Value| s["released_total"].as_u64().unwrap_or(u64::MAX);
    let state = admin_json(&c, &proxies[1], reqwest::Method::GET, "/admin/queues/q", None).await;
    assert_eq!((state["sold_out"].as_bool(), state["stock_left"].as_u64()), (Some(true), Some(0)), "{state}");
    assert_eq!(state["phase"], "open");
    let before = released(&state);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let after = released(&admin_json(&c, &proxies[1], reqwest::Method::GET, "/admin/queues/q", None).await);
    assert_eq!((before, after), (0, 0), "released while sold out");

    // The booking core answers garbage for a while: the last reading stays
    // (still sold out, nothing released), and the failures are counted.
    *stock.lock().unwrap() = "not a stock document".to_owned();
    eventually("failed readings counted", Duration::from_secs(5), || async {
        let failed = metric(&c, &proxies[2], "waiting_room_stock_read_failures_total").await;
        if failed >= 2.0 { Ok(()) } else { Err(format!("{failed} failures")) }
    })
    .await;
    let state = admin_json(&c, &proxies[2], reqwest::Method::GET, "/admin/queues/q", None).await;
    assert_eq!((state["sold_out"].as_bool(), released(&state)), (Some(true), 0), "{state}");

    // Three seats come back (expired holds): the sockets hear the line again,
    // and ticks release at most three (N is 5).
    *stock.lock().unwrap() = r#"{"events":[{"id":1,"free_seats":3}],"campaigns":[]}"#.to_owned();
    let back = loop {
        let m = next_json(&mut sockets[0], Duration::from_secs(5)).await.expect("the line comes back");
        if m["status"] != "SOLD_OUT" {
            break m;
        }
    };
    assert!(back["status"] == "WAITING" || back["status"] == "READY", "{back}");
    let seen = eventually("the stranger's standing once stock is back", Duration::from_secs(3), || async {
        let m = stranger.clone().status(&c, &proxies[0], "q").await;
        if m["status"] != "SOLD_OUT" { Ok(m) } else { Err(m.to_string()) }
    })
    .await;
    assert_eq!(seen["status"], "NOT_IN_QUEUE", "no place was taken while sold out: {seen}");
    let log = eventually("a release of the freed stock", Duration::from_secs(5), || async {
        let log = admin_json(&c, &proxies[0], reqwest::Method::GET, "/admin/queues/q/ticks?limit=50", None).await;
        let ticks = log["ticks"].as_array().cloned().unwrap_or_default();
        if ticks.iter().any(|t| t["released"].as_u64() > Some(0)) { Ok(ticks) } else { Err(log.to_string()) }
    })
    .await;
    for t in log.iter().filter(|t| t["released"].as_u64() > Some(0)) {
        assert!(
            t["n"].as_u64() <= Some(3) && t["released"].as_u64() <= Some(3),
            "a tick released more than is left: {t}"
        );
    }
}
