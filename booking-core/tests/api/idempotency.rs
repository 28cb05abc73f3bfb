//! `Idempotency-Key` on holds, confirms and claims.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(
    a_retried_hold_returns_the_same_hold_and_expiry,
    the_same_key_with_a_different_body_is_422,
    a_key_whose_first_request_is_still_running_is_409,
    a_retried_claim_and_confirm_return_the_first_answer,
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
