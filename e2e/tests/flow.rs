//! The whole visitor flow through the real proxy and booking core.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use e2e::{Stack, StackOptions};
use serde_json::Value;

/// GET `url` with the entry token; the JSON body.
async fn get_json(c: &reqwest::Client, url: &str, token: &str) -> Value {
    c.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap()
}

async fn flow(options: StackOptions) {
    let stack = Stack::start(options).await.unwrap();
    let (event, campaign) = stack.seed(4, 10, 5).await.unwrap();
    let c = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    // Without a token the proxy refuses, and the booking core refuses too when bypassed.
    let r = c.get(format!("{}/api/events/{event}/seats", stack.proxy)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c.get(format!("{}/api/events/{event}/seats", stack.booking)).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // Join, wait for the release, get the token.
    let r = c.post(format!("{}/wr/sale/join", stack.proxy)).send().await.unwrap();
    let visitor_cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let mut status: Value = r.json().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while status["status"] != "READY" {
        assert!(Instant::now() < deadline, "never admitted: {status}\n{}", stack.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = c
            .get(format!("{}/wr/sale/status", stack.proxy))
            .header("cookie", &visitor_cookie)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    }
    let token = status["token"].as_str().unwrap().to_owned();

    // Claim, seat map, hold, confirm: all through the proxy with the token. The
    // coupon comes first because the confirmed booking ends the session.
    let r = c.post(format!("{}/api/coupons/{campaign}/claims", stack.proxy)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let r = c.post(format!("{}/api/coupons/{campaign}/claims", stack.proxy)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 409, "one coupon per visitor");
    let seats = get_json(&c, &format!("{}/api/events/{event}/seats", stack.proxy), &token).await;
    let seat =
        seats["seats"].as_array().unwrap().iter().find(|s| s["status"] == "AVAILABLE").unwrap()["id"].as_i64().unwrap();
    let r = c
        .post(format!("{}/api/events/{event}/holds", stack.proxy))
        .bearer_auth(&token)
        .json(&serde_json::json!({"seat_id": seat}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", stack.logs());
    let hold: Value = r.json().await.unwrap();
    let r = c
        .post(format!("{}/api/holds/{}/confirm", stack.proxy, hold["hold_id"].as_str().unwrap()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let booking: Value = r.json().await.unwrap();
    assert_eq!(booking["session_end"], "confirm", "the purchase ended the session: {booking}");
    // Asked of the booking core directly: the proxy no longer admits the token.
    let bookings = get_json(&c, &format!("{}/api/me/bookings", stack.booking), &token).await;
    assert_eq!(bookings.as_array().map(Vec::len), Some(1), "{bookings}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_queues_is_admitted_and_books_a_seat_and_a_coupon_on_the_embedded_defaults() {
    flow(StackOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_queues_is_admitted_and_books_a_seat_and_a_coupon_on_redis_and_postgres() {
    flow(StackOptions { redis: true, postgres: true, ..StackOptions::default() }).await;
}
