//! Observability end to end: the Grafana dashboard's queries run against a
//! real Prometheus scraping a real stack, and the proxy's request id is found
//! in the booking core's JSON log.
//!
//! The dashboard test starts Debian's `prometheus` (`/usr/bin/prometheus`, or
//! `PROMETHEUS_BIN`) with `configs/prometheus.yml`, its two targets pointed at
//! the stack, drives a sale through the proxy in two rounds (so every counter
//! is seen before and after it moves), then runs every PromQL expression in
//! `grafana/dashboards/waiting-room.json` and fails if one errors, names a
//! metric the services do not export, returns nothing, or (for the traffic
//! the test caused) shows no activity.
#![allow(clippy::unwrap_used)]

mod dashboard;
mod prometheus;
mod request_ids;
mod traffic;

use std::collections::BTreeSet;
use std::time::Instant;

use e2e::{Stack, StackOptions};
use serde_json::Value;

use dashboard::{dashboard, expressions, metric_names, substitute};
use prometheus::{Prometheus, now_secs};
use traffic::{exported_names, sale_round};

const QUEUE: &str = "sale";
/// Visitors per traffic round (one on a WebSocket, the rest polling).
const VISITORS: usize = 8;
const ROUNDS: usize = 2;
const STOCK: i64 = 12;

/// Metrics the test's traffic must show as activity (a value above zero) in
/// every dashboard expression made only of them. Gauges that may rightly be
/// zero at the end (waiting, ETA, open sockets, stock left) are not here;
/// their activity is checked with `max_over_time` below.
const MUST_MOVE: &[&str] = &[
    "waiting_room_joins_total",
    "waiting_room_admissions_total",
    "waiting_room_active_sessions",
    "waiting_room_release_rate",
    "waiting_room_configured_release_rate",
    "waiting_room_release_per_tick",
    "waiting_room_tick_duration_seconds_bucket",
    "waiting_room_ws_messages_total",
    "waiting_room_push_delay_seconds_bucket",
    "waiting_room_gate_decisions_total",
    "waiting_room_upstream_latency_seconds_bucket",
    "waiting_room_upstream_latency_seconds_count",
    "waiting_room_requests_total",
    "waiting_room_token_cache_total",
    "waiting_room_adaptive_n",
    "waiting_room_adaptive_decisions_total",
    "waiting_room_arrivals_total",
    "booking_core_holds_total",
    "booking_core_confirms_total",
    "booking_core_releases_total",
    "booking_core_hold_expiries_total",
    "booking_core_hold_conflicts_total",
    "booking_core_claims_total",
    "booking_core_claims_sold_out_total",
    "booking_core_claim_duplicates_total",
    "booking_core_coupon_stock",
    "booking_core_http_responses_total",
    "booking_core_http_request_duration_seconds_bucket",
    "booking_core_db_query_duration_seconds_bucket",
    "booking_core_db_pool_connections",
    "booking_core_auth_failures_total",
    "booking_core_seat_map_cache_hits_total",
    "booking_core_seat_map_cache_misses_total",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_dashboard_query_runs_against_prometheus_scraping_the_stack() {
    e2e::binaries().unwrap();
    let started = Instant::now();
    let stack = Stack::start(StackOptions {
        release_per_tick: 2,
        env: vec![
            // Short holds and a quick sweeper, so expiries happen within the test.
            ("BC_HOLDS__LENGTH".into(), "2s".into()),
            ("BC_HOLDS__SWEEP_INTERVAL".into(), "200ms".into()),
        ],
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let (event, campaign) = stack.seed(4, 10, STOCK).await.unwrap();
    let prometheus = Prometheus::start(&stack).await;
    prometheus.wait_targets_up().await;
    // Before any traffic: a series first scraped at 1 would hide that 1 from rate().
    prometheus.wait_scraped_after(now_secs()).await;

    for round in 0..ROUNDS {
        sale_round(&stack, event, campaign, round).await;
        prometheus.wait_scraped_after(now_secs()).await;
    }
    // Unconfirmed holds expire after 2 s; the sweeper counts them.
    prometheus.wait_for("booking_core_hold_expiries_total", |v| v > 0.0).await;
    prometheus.wait_scraped_after(now_secs()).await;

    let exported = exported_names(&stack).await;
    let known: Value =
        reqwest::get(format!("{}/api/v1/label/__name__/values", prometheus.url)).await.unwrap().json().await.unwrap();
    let known: BTreeSet<String> =
        known["data"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_owned()).collect();

    let exprs = expressions(&dashboard());
    assert!(exprs.len() >= 30, "only {} expressions found", exprs.len());
    let mut failures = Vec::new();
    for (source, raw) in &exprs {
        let expr = substitute(raw);
        if expr.contains('$') {
            failures.push(format!("{source}: unknown variable in {raw}"));
            continue;
        }
        let names = metric_names(&expr);
        if names.is_empty() {
            failures.push(format!("{source}: no metric in {expr}"));
        }
        for name in &names {
            if !known.contains(name) || !exported.contains(name) {
                failures.push(format!("{source}: {name} is not exported by either service ({expr})"));
            }
        }
        match prometheus.query(&expr).await {
            Err(e) => failures.push(format!("{source}: {expr}: {e}")),
            Ok(result) if result.is_empty() => failures.push(format!("{source}: no data for {expr}")),
            Ok(result) => {
                let moved = result
                    .iter()
                    .any(|s| s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v > 0.0));
                if names.iter().all(|n| MUST_MOVE.contains(&n.as_str())) && !moved {
                    failures.push(format!("{source}: no activity in {expr}: {result:?}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} dashboard queries failed:\n{}",
        failures.len(),
        exprs.len(),
        failures.join("\n")
    );

    // The gauges that may rightly read zero now did move during the sale.
    for expr in [
        format!("max_over_time(waiting_room_waiting_visitors{{queue=\"{QUEUE}\"}}[5m])"),
        format!("max_over_time(waiting_room_eta_seconds{{queue=\"{QUEUE}\"}}[5m])"),
        "max_over_time(waiting_room_ws_connections[5m])".to_owned(),
    ] {
        let values = prometheus.values(&expr).await;
        assert!(values.iter().any(|v| *v > 0.0), "{expr}: {values:?}");
    }
    // Stock left is the database's truth: every code went to a claim.
    let campaign_label = format!("{{campaign=\"{campaign}\"}}");
    assert_eq!(prometheus.values(&format!("booking_core_coupon_stock{campaign_label}")).await, [STOCK as f64]);
    assert_eq!(prometheus.values(&format!("booking_core_coupon_stock_left{campaign_label}")).await, [0.0]);
    assert_eq!(prometheus.values("booking_core_claims_total").await, [STOCK as f64]);
    eprintln!("observability test took {:?}", started.elapsed());
}
