//! The process around the API: health, metrics, config errors, shutdown.

use reqwest::StatusCode;

use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(health_and_metrics_are_served_without_a_token, shutdown_stops_serving);

async fn health_and_metrics_are_served_without_a_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (event, seats) = app.create_event(1, 1).await;
    let (_, token) = app.visitor();
    app.hold(event, seats[0], &token).await;
    let health = app.client.get(app.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let live = app.client.get(app.admin_url("/livez")).send().await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    let ready = app.client.get(app.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let checks: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(checks["checks"]["database"], "ok", "{checks}");
    let redis = if app.redis_prefix().is_some() { "ok" } else { "not configured" };
    assert_eq!(checks["checks"]["redis"].as_str().unwrap_or("not configured"), redis, "{checks}");
    let page = app.metrics().await;
    // On PostgreSQL holds are group-committed: the one hold went as a batch of one.
    let hold_op = if backend == Backend::Postgres { "hold_batch" } else { "hold" };
    let hold_count = format!("booking_core_db_query_duration_seconds_count{{op=\"{hold_op}\"}} 1");
    for name in [
        "booking_core_http_request_duration_seconds_bucket{method=\"POST\",route=\"/api/events/{id}/holds\"",
        "# HELP booking_core_holds_total",
        "booking_core_holds_total 1",
        "booking_core_db_pool_connections",
        "booking_core_db_pool_idle_connections",
        "booking_core_seat_map_cache_misses_total",
        hold_count.as_str(),
        "booking_core_claims_sold_out_total",
        "booking_core_hold_expiries_total",
    ] {
        assert!(page.contains(name), "missing {name}:\n{page}");
    }
    assert!(!page.contains(&format!("/api/events/{event}/holds")), "raw paths must not be labels");
}

async fn shutdown_stops_serving(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (health, api) = (app.admin_url("/healthz"), app.url("/api/openapi.json"));
    assert_eq!(app.client.get(&health).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(app.client.get(&api).send().await.unwrap().status(), StatusCode::OK);
    let TestApp { app: running, client, .. } = app;
    running.stop().await.unwrap();
    assert!(client.get(&health).send().await.is_err(), "nothing listens on the operator listener after shutdown");
    assert!(client.get(&api).send().await.is_err(), "nothing listens after shutdown");
}

#[test]
fn an_invalid_config_exits_with_code_2_naming_the_key() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_booking-core"))
        .env("BC_DATABASE__URL", "mysql://nope")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("database.url"), "{stderr}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_booking-core"))
        .args(["--config", "/nonexistent/booking-core.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/booking-core.toml"));
}
