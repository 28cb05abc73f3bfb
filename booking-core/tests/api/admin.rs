//! The operator API.

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(
    admin_routes_need_the_admin_token,
    failed_admin_attempts_are_rate_limited_per_client_address,
    operator_routes_are_served_on_the_operator_listener_only,
    stats_count_holds_bookings_claims_and_stock_left,
    invalid_events_and_campaigns_are_refused_with_the_field_named,
);

async fn admin_routes_need_the_admin_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, visitor_token) = app.visitor();
    let longer = format!("{ADMIN_TOKEN}x");
    let shorter = &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1];
    for token in [None, Some("wrong-token-wrong-token"), Some(visitor_token.as_str()), Some(&longer), Some(shorter)] {
        let r = app.operator(Method::GET, "/admin/stats", token, None).await;
        r.assert_problem(StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.admin(Method::GET, "/admin/stats", None).await.status, StatusCode::OK);
    let disabled = TestApp::spawn_with(backend, |c| c.admin.token = Default::default()).await;
    disabled.admin(Method::GET, "/admin/stats", None).await.assert_problem(StatusCode::FORBIDDEN);
}

async fn failed_admin_attempts_are_rate_limited_per_client_address(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.admin.max_failures = 3;
        c.admin.failure_window = Duration::from_secs(60);
    })
    .await;
    // Concurrent guesses: exactly the allowance is judged, the rest are refused unseen.
    let guesses = join_all((0..20).map(|i| {
        let guess = format!("guess-{i:02}-0123456789abcdef");
        let app = &app;
        async move { app.operator(Method::GET, "/admin/stats", Some(&guess), None).await }
    }))
    .await;
    let unauthorized = guesses.iter().filter(|r| r.status == StatusCode::UNAUTHORIZED).count();
    assert_eq!(unauthorized, 3, "exactly admin.max_failures guesses are judged");
    for r in guesses.iter().filter(|r| r.status != StatusCode::UNAUTHORIZED) {
        r.assert_problem(StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
    }
    // Now even the right token waits for the window: guessing cannot continue by interleaving it.
    app.admin(Method::GET, "/admin/stats", None).await.assert_problem(StatusCode::TOO_MANY_REQUESTS);
    // The operator routes without a token, and the public API, are not affected.
    assert_eq!(app.client.get(app.admin_url("/metrics")).send().await.unwrap().status(), StatusCode::OK);
    let (_, token) = app.visitor();
    assert_eq!(app.get("/api/events", &token).await.status, StatusCode::OK);
}

async fn operator_routes_are_served_on_the_operator_listener_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_ne!(app.url("/"), app.admin_url("/"));
    for (method, path) in [
        (Method::GET, "/healthz"),
        (Method::GET, "/livez"),
        (Method::GET, "/readyz"),
        (Method::GET, "/metrics"),
        (Method::GET, "/admin/stats"),
        (Method::POST, "/admin/events"),
        (Method::GET, "/admin/openapi.json"),
        (Method::DELETE, "/metrics"),
    ] {
        let r = app.request(method.clone(), path, Some(ADMIN_TOKEN), None).await;
        r.assert_problem(StatusCode::NOT_FOUND);
        assert!(!r.headers.contains_key("allow"), "{method} {path}: the public listener reveals the route");
    }
    for path in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(app.operator(Method::GET, path, None, None).await.status, StatusCode::OK, "{path}");
        assert!(doc_has(&app, path).await, "{path} is not in the operator document");
    }
    assert!(app.metrics().await.contains("booking_core_holds_total"));
    assert_eq!(app.admin(Method::GET, "/admin/stats", None).await.status, StatusCode::OK);
    let doc = app.operator(Method::GET, "/admin/openapi.json", None, None).await;
    assert!(doc.json["paths"]["/admin/stats"].is_object(), "{}", doc.text);
    let (_, token) = app.visitor();
    app.operator(Method::GET, "/api/events", Some(&token), None).await.assert_problem(StatusCode::NOT_FOUND);
    let public_doc = app.request(Method::GET, "/api/openapi.json", None, None).await;
    assert!(public_doc.json["paths"]["/admin/stats"].is_null(), "the public document lists operator routes");
    assert!(public_doc.json["paths"]["/api/events"].is_object());
}

async fn stats_count_holds_bookings_claims_and_stock_left(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (event, seats) = app.create_event(3, 4).await;
    let campaign = app.create_campaign(event, 7).await;
    let (_, token) = app.visitor();
    let first = app.hold(event, seats[0], &token).await;
    app.hold(event, seats[1], &token).await;
    app.confirm(first.json["hold_id"].as_str().unwrap(), &token).await;
    app.claim(campaign, &token).await;

    let stats = app.admin(Method::GET, "/admin/stats", None).await;
    assert_eq!(stats.status, StatusCode::OK, "{}", stats.text);
    assert_eq!(stats.json["events"], 1);
    assert_eq!(stats.json["seats"], 12);
    assert_eq!(stats.json["active_holds"], 1);
    assert_eq!(stats.json["bookings"], 1);
    assert_eq!(stats.json["claims"], 1);
    assert_eq!(stats.json["campaigns"][0]["stock"], 7);
    assert_eq!(stats.json["campaigns"][0]["stock_left"], 6);

    // What the waiting room reads to tell its line the sale sold out: a held
    // seat and a booked one are not free, a claimed code is not left.
    let stock = app.admin(Method::GET, "/admin/stock", None).await;
    assert_eq!(stock.status, StatusCode::OK, "{}", stock.text);
    assert_eq!(stock.json["events"], json!([{"id": event, "free_seats": 10}]));
    assert_eq!(stock.json["campaigns"], json!([{"id": campaign, "codes_left": 6}]));
    app.operator(Method::GET, "/admin/stock", None, None).await.assert_problem(StatusCode::UNAUTHORIZED);
}

async fn invalid_events_and_campaigns_are_refused_with_the_field_named(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let event = json!({"name": "X", "venue": "Y", "starts_at": "2030-01-01T00:00:00Z", "rows": 0, "seats_per_row": 1, "price_cents": 1});
    let r = app.admin(Method::POST, "/admin/events", Some(event)).await;
    r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.json["detail"].as_str().unwrap().starts_with("rows:"), "{}", r.text);
    let event =
        json!({"name": "X", "venue": "Y", "starts_at": "tomorrow", "rows": 1, "seats_per_row": 1, "price_cents": 1});
    let r = app.admin(Method::POST, "/admin/events", Some(event)).await;
    r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json["field"], "starts_at");

    let campaign =
        json!({"event_id": 999, "stock": 5, "opens_at": "2030-01-01T00:00:00Z", "closes_at": "2030-01-02T00:00:00Z"});
    app.admin(Method::POST, "/admin/campaigns", Some(campaign)).await.assert_problem(StatusCode::NOT_FOUND);
    let (event_id, _) = app.create_event(1, 1).await;
    let backwards = json!({"event_id": event_id, "stock": 5, "opens_at": "2030-01-02T00:00:00Z", "closes_at": "2030-01-01T00:00:00Z"});
    app.admin(Method::POST, "/admin/campaigns", Some(backwards)).await.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    let empty = json!({"event_id": event_id, "stock": 0, "opens_at": "2030-01-01T00:00:00Z", "closes_at": "2030-01-02T00:00:00Z"});
    app.admin(Method::POST, "/admin/campaigns", Some(empty)).await.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
}

async fn doc_has(app: &TestApp, path: &str) -> bool {
    let doc = app.operator(Method::GET, "/admin/openapi.json", None, None).await;
    doc.json["paths"][path]["get"].is_object()
}
