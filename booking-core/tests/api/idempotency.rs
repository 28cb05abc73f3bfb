//! `Idempotency-Key` on holds, confirms and claims.

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(
    a_retried_hold_returns_the_same_hold_and_expiry,
    the_same_key_with_a_different_body_is_422,
    a_key_whose_first_request_is_still_running_is_409,
    a_retried_claim_and_confirm_return_the_first_answer,
    refusals_that_change_nothing_leave_no_record,
    records_expire_and_the_sweeper_deletes_them,
);

async fn a_retried_hold_returns_the_same_hold_and_expiry(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (event, seats) = app.create_event(1, 2).await;
    let (_, token) = app.visitor();
    let path = format!("/api/events/{event}/holds");
    let first = app.post_with_key(&path, &token, "k-1", json!({ "seat_id": seats[0] })).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    // Same request, re-serialized differently: still the same request.
    let retry = app.post_with_key(&path, &token, "k-1", json!({ "seat_id": seats[0] })).await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert_eq!(retry.text, first.text, "byte-identical replay, same hold_id and expires_at");
    assert_eq!(retry.headers.get("idempotent-replayed").unwrap(), "true");
    let holds = app.query_pairs("SELECT state, count(*) FROM holds GROUP BY state").await;
    assert_eq!(holds, vec![("ACTIVE".to_owned(), 1)], "the retry did not hold again");
    // Without a key, the same request is a new attempt: the seat is already ours.
    app.hold(event, seats[0], &token).await.assert_problem(StatusCode::CONFLICT);
}

async fn the_same_key_with_a_different_body_is_422(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (event, seats) = app.create_event(1, 2).await;
    let (_, token) = app.visitor();
    let path = format!("/api/events/{event}/holds");
    let first = app.post_with_key(&path, &token, "k-2", json!({ "seat_id": seats[0] })).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let other = app.post_with_key(&path, &token, "k-2", json!({ "seat_id": seats[1] })).await;
    other.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    let map = app.seat_map(event, &token).await;
    assert_eq!(map["seats"][1]["status"], "AVAILABLE", "the mismatched request did nothing");
    // Keys are per visitor: another visitor may use the same key.
    let (_, bob) = app.visitor();
    let theirs = app.post_with_key(&path, &bob, "k-2", json!({ "seat_id": seats[1] })).await;
    assert_eq!(theirs.status, StatusCode::CREATED);
}

async fn a_key_whose_first_request_is_still_running_is_409(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (event, seats) = app.create_event(1, 1).await;
    let (visitor, token) = app.visitor();
    let now_ms = crate::helpers::now_secs() * 1000;
    // A first request that is mid-flight: its record says `running`.
    app.execute(&format!(
        "INSERT INTO idempotency_keys (visitor_id, key, fingerprint, state, created_at) \
         VALUES ('{visitor}', 'k-3', 'f', 'running', {now_ms})"
    ))
    .await;
    let path = format!("/api/events/{event}/holds");
    app.post_with_key(&path, &token, "k-3", json!({ "seat_id": seats[0] })).await.assert_problem(StatusCode::CONFLICT);
    assert_eq!(app.seat_map(event, &token).await["available"], 1);
    let too_long = "k".repeat(201);
    app.post_with_key(&path, &token, &too_long, json!({ "seat_id": seats[0] }))
        .await
        .assert_problem(StatusCode::BAD_REQUEST);
}

async fn a_retried_claim_and_confirm_return_the_first_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (event, seats) = app.create_event(1, 1).await;
    let campaign = app.create_campaign(event, 3).await;
    let (_, token) = app.visitor();
    let path = format!("/api/coupons/{campaign}/claims");
    let first = app.post_with_key(&path, &token, "c-1", json!({})).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    let retry = app.post_with_key(&path, &token, "c-1", json!({})).await;
    assert_eq!(retry.status, StatusCode::CREATED, "a retried claim is not a duplicate");
    assert_eq!(retry.json["code"], first.json["code"]);

    let hold = app.hold(event, seats[0], &token).await;
    let confirm = format!("/api/holds/{}/confirm", hold.json["hold_id"].as_str().unwrap());
    let booked = app.post_with_key(&confirm, &token, "b-1", json!({})).await;
    assert_eq!(booked.status, StatusCode::OK, "{}", booked.text);
    let again = app.post_with_key(&confirm, &token, "b-1", json!({})).await;
    assert_eq!(again.text, booked.text);
}

async fn records(app: &TestApp) -> i64 {
    app.query_pairs("SELECT 'all', count(*) FROM idempotency_keys").await[0].1
}

async fn refusals_that_change_nothing_leave_no_record(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.rate_limit.mutations = 1000).await;
    let (event, seats) = app.create_event(1, 2).await;
    let (_, token) = app.visitor();
    // The attack of the issue: confirming made-up hold ids with fresh keys, concurrently.
    let made_up: Vec<String> = (0..100).map(|_| format!("{event}-{}", uuid::Uuid::new_v4().simple())).collect();
    let answers = join_all(made_up.iter().enumerate().map(|(i, hold)| {
        let (app, token) = (&app, &token);
        async move {
            app.post_with_key(&format!("/api/holds/{hold}/confirm"), token, &format!("fresh-{i}"), json!({})).await
        }
    }))
    .await;
    for r in &answers {
        r.assert_problem(StatusCode::NOT_FOUND);
    }
    let path = format!("/api/events/{event}/holds");
    app.post_with_key(&path, &token, "no-seat", json!({ "seat_id": 999_999 }))
        .await
        .assert_problem(StatusCode::NOT_FOUND);
    assert_eq!(records(&app).await, 0, "404s were stored");

    // What changed something, or refused on the state of things (409/410), is kept for replay.
    let first = app.post_with_key(&path, &token, "real", json!({ "seat_id": seats[0] })).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let (_, other) = app.visitor();
    let taken = app.post_with_key(&path, &other, "taken", json!({ "seat_id": seats[0] })).await;
    taken.assert_problem(StatusCode::CONFLICT);
    assert_eq!(records(&app).await, 2);
}

async fn records_expire_and_the_sweeper_deletes_them(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.idempotency.ttl = Duration::from_secs(3600);
        c.idempotency.sweep_interval = Duration::from_millis(100);
    })
    .await;
    let (event, seats) = app.create_event(1, 2).await;
    let (visitor, token) = app.visitor();
    let path = format!("/api/events/{event}/holds");
    let fresh = app.post_with_key(&path, &token, "fresh", json!({ "seat_id": seats[0] })).await;
    assert_eq!(fresh.status, StatusCode::CREATED);
    // A record from two hours ago: past idempotency.ttl.
    let old = crate::helpers::now_secs() * 1000 - 7_200_000;
    app.execute(&format!(
        "INSERT INTO idempotency_keys (visitor_id, key, fingerprint, state, status, body, created_at) \
         VALUES ('{visitor}', 'old', 'f', 'done', 201, '{{}}', {old})"
    ))
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let keys = app.query_pairs("SELECT key, created_at FROM idempotency_keys").await;
        if keys.len() == 1 {
            assert_eq!(keys[0].0, "fresh", "the live record stays");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the sweeper did not delete the expired record: {keys:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An expired key that no sweeper has reached yet runs anew, not as a replay.
    let lazy = TestApp::spawn_with(backend, |c| {
        c.idempotency.ttl = Duration::from_secs(3600);
        c.idempotency.sweep_interval = Duration::from_secs(3600);
    })
    .await;
    let (event, seats) = lazy.create_event(1, 1).await;
    let (visitor, token) = lazy.visitor();
    lazy.execute(&format!(
        "INSERT INTO idempotency_keys (visitor_id, key, fingerprint, state, status, body, created_at) \
         VALUES ('{visitor}', 'stale', 'f', 'done', 410, '{{}}', {old})"
    ))
    .await;
    let path = format!("/api/events/{event}/holds");
    let again = lazy.post_with_key(&path, &token, "stale", json!({ "seat_id": seats[0] })).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
    assert!(again.headers.get("idempotent-replayed").is_none());
    let replay = lazy.post_with_key(&path, &token, "stale", json!({ "seat_id": seats[0] })).await;
    assert_eq!((replay.status, replay.text), (StatusCode::CREATED, again.text), "the new answer is kept");
}
