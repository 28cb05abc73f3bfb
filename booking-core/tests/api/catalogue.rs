//! Events, seat maps, popularity, and cache invalidation across instances.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{Backend, TestApp, metric_sum};
use crate::on_both_backends;

on_both_backends!(events_are_listed_and_described, popular_events_rank_by_seat_map_views);

async fn events_are_listed_and_described(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (first, _) = app.create_event(2, 3).await;
    let (second, _) = app.create_event(1, 1).await;
    let (_, token) = app.visitor();
    let list = app.get("/api/events", &token).await;
    assert_eq!(list.status, StatusCode::OK);
    let ids: Vec<i64> = list.json.as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![first, second]);
    let one = app.get(&format!("/api/events/{first}"), &token).await;
    assert_eq!(one.json["seat_count"], 6);
    assert_eq!(one.json["venue"], "Hall");
    assert_eq!(one.json["starts_at"], "2030-01-01T19:30:00Z");
    app.get("/api/events/424242", &token).await.assert_problem(StatusCode::NOT_FOUND);
    let map = app.seat_map(first, &token).await;
    let labels: Vec<&str> = map["seats"].as_array().unwrap().iter().map(|s| s["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["A1", "A2", "A3", "B1", "B2", "B3"]);
}

async fn popular_events_rank_by_seat_map_views(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut events = Vec::new();
    for _ in 0..7 {
        events.push(app.create_event(1, 1).await.0);
    }
    let (_, token) = app.visitor();
    // create_event viewed each map once; event i gets i more views.
    for (i, event) in events.iter().enumerate() {
        for _ in 0..i {
            app.seat_map(*event, &token).await;
        }
    }
    // Views are counted off the request path (never making a seat map wait
    // for Redis), so the ranking catches up a moment later.
    let expected: Vec<(i64, u64)> = (2..7).rev().map(|i| (events[i], i as u64 + 1)).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let popular = app.get("/api/events/popular", &token).await;
        assert_eq!(popular.status, StatusCode::OK, "{}", popular.text);
        let ranked: Vec<(i64, u64)> = popular
            .json
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["id"].as_i64().unwrap(), e["views"].as_u64().unwrap()))
            .collect();
        if ranked == expected || std::time::Instant::now() > deadline {
            assert_eq!(ranked, expected);
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_on_one_instance_reaches_the_other_instances_cached_seat_map_through_redis() {
    let one = TestApp::spawn_with(Backend::Postgres, |c| c.catalogue.seat_map_ttl = Duration::from_secs(3600)).await;
    let two = one.spawn_sibling().await;
    let (event, seats) = one.create_event(1, 2).await;
    let (_, token) = one.visitor();
    assert_eq!(two.seat_map(event, &token).await["available"], 2);
    assert_eq!(two.seat_map(event, &token).await["available"], 2);
    let hits = metric_sum(&two.metrics().await, "booking_core_seat_map_cache_hits_total", &[]);
    assert!(hits >= 1.0, "the second read was served from the cache");

    assert_eq!(one.hold(event, seats[0], &token).await.status, StatusCode::CREATED);
    // The invalidation travels asynchronously; poll (bounded) for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let map = two.seat_map(event, &token).await;
        if map["available"] == 1 {
            assert_eq!(map["seats"][0]["mine"], true);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "instance two still shows the stale map");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
