//! The holds' group commit broken mid-storm: 600 visitors each try 4 of 400
//! seats at once against the real binary on PostgreSQL, whose holds go to
//! the database in shared batches; the process is killed with SIGKILL (or
//! stopped with SIGTERM, a deploy; or its PostgreSQL crash-restarted under
//! it) once 100 holds were granted, then started again. Every hold answered 201 is in the database as answered (the seat
//! held by that visitor under that hold id, the record active); no visitor
//! holds more than the cap; no answer is a 5xx but 503; after the restart
//! the seats nobody holds can be held at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use rand::seq::SliceRandom;
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::sync::Notify;

use super::servers::Core;
use super::{ADMIN_TOKEN, Answer, Data, Fault, Sale};

const ROWS: usize = 4;
const PER_ROW: usize = 100;
const HOLDERS: usize = 600;
const TRIES: usize = 4;
/// The fault strikes once this many holds have been answered 201.
const STRIKE_AT: usize = 100;
/// `holds.max_per_visitor`'s default.
const CAP: i64 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_hold_storm_loses_no_acknowledged_hold() {
    hold_storm(Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_mid_hold_storm_loses_no_acknowledged_hold() {
    hold_storm(Fault::Terminate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_crash_restarted_mid_hold_storm_loses_no_acknowledged_hold() {
    hold_storm(Fault::RestartPostgres).await;
}

async fn hold_storm(fault: Fault) {
    let sale = Sale::new(Data::PostgresRedis, fault).await;
    let mut core = Core::start(sale.dir.path(), &sale.env, "booking-core-1.log").await;
    let (event, seats) = seed_event(&sale, &core).await;

    let mut plan: Vec<(usize, i64)> = (0..HOLDERS)
        .flat_map(|v| (0..TRIES).map(move |k| (v, (v * 7 + k * 101) % (ROWS * PER_ROW))))
        .map(|(v, s)| (v, seats[s]))
        .collect();
    plan.shuffle(&mut rand::thread_rng());
    let granted = Arc::new(AtomicUsize::new(0));
    let strike = Arc::new(Notify::new());
    let storm = {
        let (client, base, tokens) = (sale.client.clone(), core.public.clone(), sale.tokens.clone());
        let (granted, strike) = (granted.clone(), strike.clone());
        tokio::spawn(async move {
            futures_util::stream::iter(plan)
                .map(|(v, seat)| {
                    let (client, base, token) = (client.clone(), base.clone(), tokens[v].clone());
                    let (granted, strike) = (granted.clone(), strike.clone());
                    async move {
                        let answer = hold(&client, &base, event, seat, &token).await;
                        if matches!(answer, Some((201, _))) && granted.fetch_add(1, Ordering::SeqCst) + 1 == STRIKE_AT {
                            strike.notify_one();
                        }
                        (v, seat, answer)
                    }
                })
                .buffer_unordered(200)
                .collect::<Vec<(usize, i64, Answer)>>()
                .await
        })
    };
    tokio::select! {
        _ = strike.notified() => {}
        _ = tokio::time::sleep(Duration::from_secs(120)) => panic!("the hold storm stalled: {}", core.log()),
    }
    match fault {
        Fault::Terminate => core.terminate(),
        // The booking core outlives its database's restart; batches in
        // flight fail and their holds go down the single path or get 503.
        Fault::RestartPostgres => sale.postgres.as_ref().expect("a private PostgreSQL").crash_restart(),
        _ => core.kill9(),
    }
    let answers = storm.await.unwrap();
    let told_held: Vec<&(usize, i64, Answer)> =
        answers.iter().filter(|(_, _, a)| matches!(a, Some((201, _)))).collect();
    let lost = answers.iter().filter(|(_, _, a)| a.is_none()).count();
    println!("{fault:?}: {} holds told 201, {lost} without an answer", told_held.len());
    assert!(told_held.len() >= STRIKE_AT, "the storm was struck before {STRIKE_AT} holds");
    for (_, _, a) in &answers {
        if let Some((status, body)) = a {
            // 503: the database or the process going away; never another 5xx.
            assert!(matches!(status, 201 | 409 | 503), "unexpected answer {status}: {body}");
        }
    }
    if fault == Fault::Kill {
        assert!(lost > 0, "the kill struck no hold in flight");
    }

    // Every acknowledged hold is in the database exactly as answered.
    let mut conn = sqlx::PgConnection::connect(&sale.database_url).await.unwrap();
    let held: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT s.id, s.held_by, s.hold_id FROM seats s JOIN holds h ON h.id = s.hold_id \
         WHERE s.event_id = $1 AND s.status = 'HELD' AND h.state = 'ACTIVE'",
    )
    .bind(event)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let by_seat: HashMap<i64, (String, String)> = held.iter().map(|(s, v, h)| (*s, (v.clone(), h.clone()))).collect();
    for (v, seat, answer) in &told_held {
        let body = &answer.as_ref().unwrap().1;
        let hold_id = body["hold_id"].as_str().unwrap();
        assert_eq!(
            by_seat.get(seat),
            Some(&(sale.visitors[*v].clone(), hold_id.to_owned())),
            "seat {seat} was answered 201 (hold {hold_id}) but the database holds {:?}",
            by_seat.get(seat)
        );
    }
    let mut per_visitor: HashMap<&str, i64> = HashMap::new();
    for (_, v, _) in &held {
        *per_visitor.entry(v.as_str()).or_default() += 1;
    }
    assert!(per_visitor.values().all(|n| *n <= CAP), "a visitor holds more than the cap");

    // Started again (or, after the database's restart, still running), the
    // seats nobody holds are held at once by a newcomer each.
    if fault != Fault::RestartPostgres {
        core = Core::start(sale.dir.path(), &sale.env, "booking-core-2.log").await;
    }
    let free: Vec<i64> = seats.iter().copied().filter(|s| !by_seat.contains_key(s)).take(40).collect();
    let newcomers: Vec<usize> =
        (0..sale.visitors.len()).filter(|v| !per_visitor.contains_key(sale.visitors[*v].as_str())).collect();
    if free.is_empty() {
        // Only a database restart lets the storm go on to the last seat;
        // a newcomer is then refused by the database (409), not by its absence.
        assert_eq!(fault, Fault::RestartPostgres, "the storm held every seat before the fault");
        let (client, token) = (&sale.client, &sale.tokens[newcomers[0]]);
        let late = hold(client, &core.public, event, seats[0], token).await;
        assert!(matches!(late, Some((409, _))), "after the restart: {late:?}\n{}", core.log());
        return;
    }
    let again = futures_util::future::join_all(free.iter().zip(&newcomers).map(|(seat, v)| {
        let (client, base, token) = (sale.client.clone(), core.public.clone(), sale.tokens[*v].clone());
        async move { hold(&client, &base, event, *seat, &token).await }
    }))
    .await;
    for a in &again {
        assert!(matches!(a, Some((201, _))), "a free seat could not be held after the restart: {a:?}\n{}", core.log());
    }
}

/// An event of ROWS × PER_ROW seats, through the admin API; its seat ids.
async fn seed_event(sale: &Sale, core: &Core) -> (i64, Vec<i64>) {
    let body = json!({"name": "Holds", "venue": "Hall", "starts_at": "2030-01-01T19:00:00Z",
                      "rows": ROWS, "seats_per_row": PER_ROW, "price_cents": 1});
    let r = sale.client.post(format!("{}/admin/events", core.admin)).bearer_auth(ADMIN_TOKEN).json(&body).send();
    let event: Value = r.await.unwrap().json().await.unwrap();
    let event = event["id"].as_i64().unwrap();
    let mut conn = sqlx::PgConnection::connect(&sale.database_url).await.unwrap();
    let seats: Vec<i64> = sqlx::query_scalar("SELECT id FROM seats WHERE event_id = $1 ORDER BY id")
        .bind(event)
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(seats.len(), ROWS * PER_ROW);
    (event, seats)
}

/// POST a hold; `None` when no answer came (the process died, the connection broke).
async fn hold(client: &reqwest::Client, base: &str, event: i64, seat: i64, token: &str) -> Answer {
    let r = client
        .post(format!("{base}/api/events/{event}/holds"))
        .bearer_auth(token)
        .json(&json!({ "seat_id": seat }))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.json::<Value>().await.unwrap_or(Value::Null)))
}
