//! Entry tokens: verified on every `/api` route before any database work.

use reqwest::{Method, StatusCode};
use serde_json::json;
use shared::keys::KeyDir;
use shared::token::EntryClaims;

use crate::helpers::{Backend, MAIN_QUEUE, OTHER_QUEUE, TestApp, metric_sum, now_secs};
use crate::on_both_backends;

on_both_backends!(
    requests_without_a_valid_token_are_refused_without_touching_the_database,
    a_key_added_to_the_key_folder_is_trusted_without_a_restart,
);

/// Database statements run so far, whatever the operation.
async fn db_statements(app: &TestApp) -> f64 {
    metric_sum(&app.metrics().await, "booking_core_db_query_duration_seconds_count", &["op=\"sweep\""])
}

async fn requests_without_a_valid_token_are_refused_without_touching_the_database(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (event, seats) = app.create_event(1, 1).await;
    let campaign = app.create_campaign(event, 5).await;
    let visitor = uuid::Uuid::new_v4().simple().to_string();
    let now = now_secs();
    let sign = |keys: &KeyDir, aud: &str, exp: i64, sub: &str| {
        let claims = EntryClaims { sub: sub.into(), aud: aud.into(), iat: now - 700, exp, jti: "j".into() };
        keys.signer.sign(&claims).unwrap()
    };
    let stranger = tempfile::tempdir().unwrap();
    let stranger_keys = KeyDir::open_or_create(stranger.path()).unwrap();
    let unauthenticated = [
        None,
        Some("not-a-token".to_owned()),
        Some(sign(&app.keys, MAIN_QUEUE, now - 60, &visitor)), // expired beyond the leeway
        Some(sign(&stranger_keys, MAIN_QUEUE, now + 600, &visitor)), // signed by another key
        Some(sign(&app.keys, MAIN_QUEUE, now + 600, "not-a-visitor")),
    ];
    let forbidden = [
        sign(&app.keys, "no-such-queue", now + 600, &visitor),
        sign(&app.keys, OTHER_QUEUE, now + 600, &visitor), // a real queue, not this event's
    ];
    let hold_id = format!("{event}-{}", "a".repeat(32));
    let before = db_statements(&app).await;

    for token in &unauthenticated {
        let t = token.as_deref();
        let holds = format!("/api/events/{event}/holds");
        let confirm = format!("/api/holds/{hold_id}/confirm");
        let release = format!("/api/holds/{hold_id}");
        let claim = format!("/api/coupons/{campaign}/claims");
        let body = Some(json!({"seat_id": seats[0]}));
        app.request(Method::POST, &holds, t, body).await.assert_problem(StatusCode::UNAUTHORIZED);
        app.request(Method::POST, &confirm, t, None).await.assert_problem(StatusCode::UNAUTHORIZED);
        app.request(Method::DELETE, &release, t, None).await.assert_problem(StatusCode::UNAUTHORIZED);
        app.request(Method::POST, &claim, t, None).await.assert_problem(StatusCode::UNAUTHORIZED);
        for path in ["/api/events", "/api/me/bookings", "/api/me/coupons", "/api/events/popular"] {
            app.request(Method::GET, path, t, None).await.assert_problem(StatusCode::UNAUTHORIZED);
        }
    }
    let r = app.request(Method::GET, "/api/events", Some(&forbidden[0]), None).await;
    r.assert_problem(StatusCode::FORBIDDEN);
    for token in &forbidden {
        app.hold(event, seats[0], token).await.assert_problem(StatusCode::FORBIDDEN);
        app.get(&format!("/api/events/{event}/seats"), token).await.assert_problem(StatusCode::FORBIDDEN);
        app.confirm(&hold_id, token).await.assert_problem(StatusCode::FORBIDDEN);
    }

    assert_eq!(db_statements(&app).await, before, "a refused request ran a database statement");
    let (_, good) = app.visitor();
    assert_eq!(app.hold(event, seats[0], &good).await.status, StatusCode::CREATED);
    assert!(db_statements(&app).await > before, "the counter does count statements");
    let cookie = app.client.get(app.url("/api/events")).header("cookie", format!("wr_entry={good}")).send();
    assert_eq!(cookie.await.unwrap().status(), StatusCode::OK, "the wr_entry cookie works too");
}

async fn a_key_added_to_the_key_folder_is_trusted_without_a_restart(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rotated = tempfile::tempdir().unwrap();
    let new_keys = KeyDir::open_or_create(rotated.path()).unwrap();
    let now = now_secs();
    let claims = EntryClaims {
        sub: uuid::Uuid::new_v4().simple().to_string(),
        aud: MAIN_QUEUE.into(),
        iat: now,
        exp: now + 600,
        jti: "j".into(),
    };
    let token = new_keys.signer.sign(&claims).unwrap();
    let kid = new_keys.signer.kid().to_owned();
    std::fs::copy(
        rotated.path().join("public").join(format!("{kid}.pem")),
        app.keys_dir().join("public").join(format!("{kid}.pem")),
    )
    .unwrap();
    let r = app.get("/api/events", &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let (_, old) = app.visitor();
    assert_eq!(app.get("/api/events", &old).await.status, StatusCode::OK, "the old key stays trusted");
}
