//! Traffic: visitors queue, get in and buy through the proxy, in rounds of a sale.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use e2e::Stack;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::{QUEUE, VISITORS};

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// A visitor on a WebSocket: connects (and so joins), then reads pushes until
/// READY; returns the entry token.
async fn websocket_visitor(proxy: String) -> String {
    let url = format!("{}/wr/{QUEUE}/ws", proxy.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url.into_client_request().unwrap()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut messages = 0;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next()).await.expect("no READY in time").unwrap().unwrap();
        if let Message::Text(text) = frame {
            messages += 1;
            let status: Value = serde_json::from_str(&text).unwrap();
            if status["status"] == "READY" {
                // Waited at least one tick: the READY came as a push after the first message.
                assert!(messages >= 2, "the WebSocket visitor was never pushed an update: {status}");
                return status["token"].as_str().unwrap().to_owned();
            }
        }
    }
}

/// A visitor of the queue API joins: (visitor cookie, first status).
async fn join(proxy: &str) -> (String, Value) {
    let r = client().post(format!("{proxy}/wr/{QUEUE}/join")).send().await.unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    (cookie, r.json().await.unwrap())
}

/// A visitor who joined polls until READY; returns the token.
async fn poll_until_ready(proxy: String, cookie: String, mut status: Value) -> String {
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(30);
    while status["status"] != "READY" {
        assert!(Instant::now() < deadline, "never admitted: {status}");
        tokio::time::sleep(Duration::from_millis(150)).await;
        let r = c.get(format!("{proxy}/wr/{QUEUE}/status")).header("cookie", &cookie).send().await.unwrap();
        status = r.json().await.unwrap();
    }
    status["token"].as_str().unwrap().to_owned()
}

/// One round of a sale: visitors queue (one on a WebSocket), get in, look at
/// the seat map, hold seats (then confirm, release or abandon them), claim
/// coupons twice; strangers without a token are turned away.
pub async fn sale_round(stack: &Stack, event: i64, campaign: i64, round: usize) {
    let mut joined = Vec::new();
    for _ in 1..VISITORS {
        joined.push(join(&stack.proxy).await);
    }
    // The socket joins last, so it waits at the back of the line through
    // several ticks (and scrapes) and is pushed each move.
    let ws = tokio::spawn(websocket_visitor(stack.proxy.clone()));
    let polling: Vec<_> = joined
        .into_iter()
        .map(|(cookie, status)| tokio::spawn(poll_until_ready(stack.proxy.clone(), cookie, status)))
        .collect();
    let mut tokens = Vec::new();
    for p in polling {
        tokens.push(p.await.unwrap());
    }
    tokens.push(ws.await.unwrap());

    let c = client();
    let seats_url = format!("{}/api/events/{event}/seats", stack.proxy);
    // Turned away: an API client (401), a browser (302 to the queue page),
    // and a request that bypasses the proxy (the booking core's own 401).
    let r = c.get(&seats_url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c.get(&seats_url).header("accept", "text/html").send().await.unwrap();
    assert_eq!(r.status(), 302);
    let r = c.get(format!("{}/api/events/{event}/seats", stack.booking)).send().await.unwrap();
    assert_eq!(r.status(), 401);

    let mut seat_ids: Vec<i64> = Vec::new();
    let mut held = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        // Twice: the second map comes from the cache, the token from the gate's cache.
        for _ in 0..2 {
            let r = c.get(&seats_url).bearer_auth(token).send().await.unwrap();
            assert_eq!(r.status(), 200, "{}", stack.logs());
            let map: Value = r.json().await.unwrap();
            seat_ids = map["seats"].as_array().unwrap().iter().map(|s| s["id"].as_i64().unwrap()).collect();
        }
        seat_ids.sort_unstable();
        // The coupon first: a confirmed booking ends the visitor's session.
        let claim = format!("{}/api/coupons/{campaign}/claims", stack.proxy);
        let first = c.post(&claim).bearer_auth(token).send().await.unwrap().status().as_u16();
        assert!(first == 201 || first == 410, "claim: {first}");
        let second = c.post(&claim).bearer_auth(token).send().await.unwrap().status().as_u16();
        assert_eq!(second, if first == 201 { 409 } else { 410 }, "second claim");
        let seat = seat_ids[round * VISITORS + i];
        let r = c
            .post(format!("{}/api/events/{event}/holds", stack.proxy))
            .bearer_auth(token)
            .json(&json!({ "seat_id": seat }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", stack.logs());
        let hold: Value = r.json().await.unwrap();
        let hold_url = format!("{}/api/holds/{}", stack.proxy, hold["hold_id"].as_str().unwrap());
        match i % 3 {
            0 => {
                let r = c.post(format!("{hold_url}/confirm")).bearer_auth(token).send().await.unwrap();
                assert_eq!(r.status(), 200, "{}", stack.logs());
                held.push(seat);
            }
            1 => assert_eq!(c.delete(&hold_url).bearer_auth(token).send().await.unwrap().status(), 204),
            _ => {} // left to expire
        }
    }
    // A booked seat cannot be held again.
    let r = c
        .post(format!("{}/api/events/{event}/holds", stack.proxy))
        .bearer_auth(&tokens[1])
        .json(&json!({ "seat_id": held[0] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
}

/// Every sample name the two services export right now (histogram series
/// with their `_bucket`/`_sum`/`_count` suffixes, as Prometheus stores them).
pub async fn exported_names(stack: &Stack) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for url in [stack.proxy_metrics.clone(), format!("{}/metrics", stack.booking_admin)] {
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}
