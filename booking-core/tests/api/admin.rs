//! The operator API.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(
    admin_routes_need_the_admin_token,
    stats_count_holds_bookings_claims_and_stock_left,
    invalid_events_and_campaigns_are_refused_with_the_field_named,
);

async fn admin_routes_need_the_admin_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, visitor_token) = app.visitor();
    for token in [None, Some("wrong-token-wrong-token"), Some(visitor_token.as_str())] {
        let r = app.request(Method::GET, "/admin/stats", token, None).await;
        r.assert_problem(StatusCode::UNAUTHORIZED);
    }
    let disabled = TestApp::spawn_with(backend, |c| c.admin.token = Default::default()).await;
    disabled.admin(Method::GET, "/admin/stats", None).await.assert_problem(StatusCode::FORBIDDEN);
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
