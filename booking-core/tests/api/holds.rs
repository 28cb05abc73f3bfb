//! Seat holds: one winner per seat, expiry, confirm, release.

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::StatusCode;

use crate::helpers::{Backend, MAIN_QUEUE, TestApp, metric_sum, now_secs};
use crate::on_both_backends;

on_both_backends!(
    a_thousand_concurrent_holds_on_one_seat_grant_exactly_one,
    an_expired_hold_is_taken_by_the_next_visitor_at_once_and_cannot_be_confirmed,
    the_sweeper_returns_expired_holds_to_available,
    a_confirmed_hold_books_the_seat_for_good,
    a_released_seat_can_be_held_again_and_its_hold_is_gone,
    another_visitors_hold_can_be_neither_confirmed_nor_released,
    a_seat_outside_the_event_is_404_and_a_second_hold_by_its_holder_is_409,
    fifty_concurrent_holds_by_one_visitor_on_fifty_seats_grant_exactly_the_cap,
    the_cap_counts_bookings_and_frees_up_with_releases_and_expiries,
    a_hold_ends_with_the_session_and_frees_its_seat_at_once,
    a_storm_of_crossing_holds_keeps_one_holder_per_seat_and_the_cap_and_never_deadlocks,
    a_hold_that_queued_for_the_database_still_lasts_its_full_period,
);

async fn a_thousand_concurrent_holds_on_one_seat_grant_exactly_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (event, seats) = app.create_event(2, 5).await;
    let seat = seats[3];
    let visitors: Vec<(String, String)> = (0..1000).map(|_| app.visitor()).collect();

    let responses = join_all(visitors.iter().map(|(_, token)| app.hold(event, seat, token))).await;

    let winners: Vec<usize> = (0..responses.len()).filter(|i| responses[*i].status == StatusCode::CREATED).collect();
    assert_eq!(winners.len(), 1, "exactly one hold must be granted");
    for r in responses.iter().filter(|r| r.status != StatusCode::CREATED) {
        r.assert_problem(StatusCode::CONFLICT);
    }
    let winner = &visitors[winners[0]];
    let hold = &responses[winners[0]].json;
    assert_eq!(hold["seat_id"].as_i64(), Some(seat));

    let seen_by_winner = app.seat_map(event, &winner.1).await;
    let s = seen_by_winner["seats"].as_array().unwrap().iter().find(|s| s["id"] == seat).unwrap().clone();
    assert_eq!(s["status"], "HELD");
    assert_eq!(s["mine"], true);
    let seen_by_other = app.seat_map(event, &visitors[(winners[0] + 1) % 1000].1).await;
    let s = seen_by_other["seats"].as_array().unwrap().iter().find(|s| s["id"] == seat).unwrap().clone();
    assert_eq!(s["status"], "HELD");
    assert_eq!(s["mine"], false);
    let holders = app.query_pairs(&format!("SELECT held_by, id FROM seats WHERE id = {seat}")).await;
    assert_eq!(holders[0].0, winner.0, "the database agrees on the holder");
}

async fn an_expired_hold_is_taken_by_the_next_visitor_at_once_and_cannot_be_confirmed(backend: Backend) {
    // The sweeper is off (1 h): the hold statement alone must free the seat.
    let app = TestApp::spawn_with(backend, |c| c.holds.length = Duration::from_secs(1)).await;
    let (event, seats) = app.create_event(1, 2).await;
    let (_, alice) = app.visitor();
    let (_, bob) = app.visitor();

    let first = app.hold(event, seats[0], &alice).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    app.hold(event, seats[0], &bob).await.assert_problem(StatusCode::CONFLICT);

    // Wait out the hold (a precondition, not an assertion on timing).
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let second = app.hold(event, seats[0], &bob).await;
    assert_eq!(second.status, StatusCode::CREATED, "the expired hold must not block: {}", second.text);
    let hold_id = first.json["hold_id"].as_str().unwrap();
    app.confirm(hold_id, &alice).await.assert_problem(StatusCode::GONE);
    let booked = app.confirm(second.json["hold_id"].as_str().unwrap(), &bob).await;
    assert_eq!(booked.status, StatusCode::OK, "{}", booked.text);
}

async fn the_sweeper_returns_expired_holds_to_available(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.holds.length = Duration::from_millis(200);
        c.holds.sweep_interval = Duration::from_millis(50);
    })
    .await;
    let (event, seats) = app.create_event(1, 3).await;
    let (_, token) = app.visitor();
    for seat in &seats[..2] {
        assert_eq!(app.hold(event, *seat, &token).await.status, StatusCode::CREATED);
    }
    // Poll (bounded) until the sweeper reports both expiries.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let expired = metric_sum(&app.metrics().await, "booking_core_hold_expiries_total", &[]);
        if expired >= 2.0 {
            assert_eq!(expired, 2.0);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "sweeper did not run ({expired} expiries)");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let held = app.query_pairs("SELECT status, count(*) FROM seats WHERE status = 'HELD' GROUP BY status").await;
    assert!(held.is_empty(), "the seats are AVAILABLE again in the database: {held:?}");
    let holds = app.query_pairs("SELECT state, count(*) FROM holds GROUP BY state").await;
    assert_eq!(holds, vec![("EXPIRED".to_owned(), 2)]);
    let map = app.seat_map(event, &token).await;
    assert_eq!(map["available"], 3);
}

async fn a_confirmed_hold_books_the_seat_for_good(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (event, seats) = app.create_event(1, 2).await;
    let (_, alice) = app.visitor();
    let (_, bob) = app.visitor();
    let hold = app.hold(event, seats[1], &alice).await;
    let hold_id = hold.json["hold_id"].as_str().unwrap().to_owned();

    let booking = app.confirm(&hold_id, &alice).await;
    assert_eq!(booking.status, StatusCode::OK, "{}", booking.text);
    assert_eq!(booking.json["seat_id"].as_i64(), Some(seats[1]));
    assert_eq!(booking.json["seat_label"], "A2");
    let again = app.confirm(&hold_id, &alice).await;
    assert_eq!(again.json["booking_id"], booking.json["booking_id"], "confirming twice is the same booking");

    let taken = app.hold(event, seats[1], &bob).await;
    taken.assert_problem(StatusCode::CONFLICT);
    assert!(taken.json["detail"].as_str().unwrap().contains("booked"));
    app.release(&hold_id, &alice).await.assert_problem(StatusCode::CONFLICT);

    let map = app.seat_map(event, &alice).await;
    assert_eq!(map["seats"][1]["status"], "BOOKED");
    assert_eq!(map["seats"][1]["mine"], true);
    let mine = app.get("/api/me/bookings", &alice).await;
    assert_eq!(mine.json.as_array().unwrap().len(), 1);
    assert_eq!(app.get("/api/me/bookings", &bob).await.json.as_array().unwrap().len(), 0);
}

async fn a_released_seat_can_be_held_again_and_its_hold_is_gone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (event, seats) = app.create_event(1, 1).await;
    let (_, alice) = app.visitor();
    let (_, bob) = app.visitor();
    let hold = app.hold(event, seats[0], &alice).await;
    let hold_id = hold.json["hold_id"].as_str().unwrap().to_owned();
    assert_eq!(app.seat_map(event, &bob).await["available"], 0);

    let released = app.release(&hold_id, &alice).await;
    assert_eq!(released.status, StatusCode::NO_CONTENT);
    assert_eq!(app.release(&hold_id, &alice).await.status, StatusCode::NO_CONTENT, "DELETE is idempotent");
    assert_eq!(app.seat_map(event, &bob).await["available"], 1, "the cached map was invalidated");
    assert_eq!(app.hold(event, seats[0], &bob).await.status, StatusCode::CREATED);
    app.confirm(&hold_id, &alice).await.assert_problem(StatusCode::GONE);
}

async fn another_visitors_hold_can_be_neither_confirmed_nor_released(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (event, seats) = app.create_event(1, 1).await;
    let (_, alice) = app.visitor();
    let (_, mallory) = app.visitor();
    let hold = app.hold(event, seats[0], &alice).await;
    let hold_id = hold.json["hold_id"].as_str().unwrap();
    app.confirm(hold_id, &mallory).await.assert_problem(StatusCode::NOT_FOUND);
    app.release(hold_id, &mallory).await.assert_problem(StatusCode::NOT_FOUND);
    let fake = format!("{event}-{}", "0".repeat(32));
    app.confirm(&fake, &alice).await.assert_problem(StatusCode::NOT_FOUND);
    assert_eq!(app.confirm(hold_id, &alice).await.status, StatusCode::OK);
}

async fn a_seat_outside_the_event_is_404_and_a_second_hold_by_its_holder_is_409(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (first, seats) = app.create_event(1, 2).await;
    let (second, _) = app.create_event(1, 2).await;
    let (_, token) = app.visitor();
    app.hold(second, seats[0], &token).await.assert_problem(StatusCode::NOT_FOUND);
    app.hold(first, 9_999_999, &token).await.assert_problem(StatusCode::NOT_FOUND);
    app.hold(9_999_999, seats[0], &token).await.assert_problem(StatusCode::NOT_FOUND);
    let hold = app.hold(first, seats[0], &token).await;
    let again = app.hold(first, seats[0], &token).await;
    again.assert_problem(StatusCode::CONFLICT);
    assert_eq!(again.json["hold_id"], hold.json["hold_id"], "the 409 names the caller's own hold");
}

async fn fifty_concurrent_holds_by_one_visitor_on_fifty_seats_grant_exactly_the_cap(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let cap = app.config.holds.max_per_visitor;
    assert_eq!(cap, 4, "the default cap");
    let (event, seats) = app.create_event(5, 10).await;
    let (visitor, token) = app.visitor();

    let responses = join_all(seats.iter().map(|seat| app.hold(event, *seat, &token))).await;

    let granted = responses.iter().filter(|r| r.status == StatusCode::CREATED).count() as i64;
    assert_eq!(granted, cap, "exactly the cap is granted");
    for r in responses.iter().filter(|r| r.status != StatusCode::CREATED) {
        r.assert_problem(StatusCode::CONFLICT);
        assert_eq!(r.json["limit"], cap, "{}", r.text);
        assert!(r.json["detail"].as_str().unwrap().contains(&format!("{cap} seats")), "{}", r.text);
    }
    let held = app
        .query_pairs(&format!("SELECT held_by, count(*) FROM seats WHERE held_by = '{visitor}' GROUP BY held_by"))
        .await;
    assert_eq!(held, vec![(visitor.clone(), cap)], "the database agrees");
    // Another visitor is not limited by the first; another event has its own cap.
    let (_, other) = app.visitor();
    let free = responses.iter().zip(&seats).find(|(r, _)| r.status != StatusCode::CREATED).unwrap().1;
    assert_eq!(app.hold(event, *free, &other).await.status, StatusCode::CREATED);
    let (second, second_seats) = app.create_event(1, 1).await;
    assert_eq!(app.hold(second, second_seats[0], &token).await.status, StatusCode::CREATED);
}

async fn the_cap_counts_bookings_and_frees_up_with_releases_and_expiries(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.holds.max_per_visitor = 2).await;
    let (event, seats) = app.create_event(1, 5).await;
    let (_, token) = app.visitor();
    let first = app.hold(event, seats[0], &token).await;
    let booked = app.confirm(first.json["hold_id"].as_str().unwrap(), &token).await;
    assert_eq!(booked.status, StatusCode::OK, "{}", booked.text);
    let second = app.hold(event, seats[1], &token).await;
    assert_eq!(second.status, StatusCode::CREATED);
    let refused = app.hold(event, seats[2], &token).await;
    refused.assert_problem(StatusCode::CONFLICT);
    assert_eq!(refused.json["limit"], 2, "a booking and a hold make two: {}", refused.text);
    assert_eq!(app.release(second.json["hold_id"].as_str().unwrap(), &token).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.hold(event, seats[2], &token).await.status, StatusCode::CREATED, "a release frees a place");

    // An expired hold stops counting at once (no sweeper runs in these tests).
    app.execute("UPDATE seats SET hold_expires_at = 1 WHERE status = 'HELD'").await;
    assert_eq!(app.hold(event, seats[3], &token).await.status, StatusCode::CREATED, "an expiry frees a place");
}

async fn a_hold_ends_with_the_session_and_frees_its_seat_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (event, seats) = app.create_event(1, 3).await;
    let alice = uuid::Uuid::new_v4().simple().to_string();
    let (_, bob) = app.visitor();

    // Eight minutes into a ten-minute session: the hold ends with the session, not five minutes later.
    let session_end = now_secs() + 120;
    let late = app.token_until(&alice, MAIN_QUEUE, session_end);
    let hold = app.hold(event, seats[0], &late).await;
    assert_eq!(hold.status, StatusCode::CREATED, "{}", hold.text);
    assert_eq!(hold.json["expires_at"], crate::helpers::rfc3339(session_end), "{}", hold.text);
    assert_eq!(hold.json["ends_with_session"], true);
    let (_, early_token) = app.visitor();
    let early = app.hold(event, seats[1], &early_token).await;
    assert_eq!(early.json["ends_with_session"], false, "a full hold period fits in a fresh session");
    // The event page shows when the session ends, and the hold's end with it.
    let page = app.get(&format!("/events/{event}"), &late).await;
    assert!(page.text.contains(&crate::helpers::rfc3339(session_end)), "the page shows the session's end");

    // A session that ends in two seconds: once it has, the seat is free for the next visitor.
    let ending = now_secs() + 2;
    let short = app.token_until(&alice, MAIN_QUEUE, ending);
    let hold = app.hold(event, seats[2], &short).await;
    assert_eq!(hold.status, StatusCode::CREATED, "{}", hold.text);
    app.hold(event, seats[2], &bob).await.assert_problem(StatusCode::CONFLICT);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = app.hold(event, seats[2], &bob).await;
        if r.status == StatusCode::CREATED {
            assert!(now_secs() >= ending, "the seat was freed before the session ended");
            break;
        }
        r.assert_problem(StatusCode::CONFLICT);
        assert!(tokio::time::Instant::now() < deadline, "the seat stayed blocked after the session ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Within the verifier's leeway the token still authenticates, but no hold can start.
    let r = app.hold(event, seats[0], &short).await;
    r.assert_problem(StatusCode::UNAUTHORIZED);
    assert_eq!(r.json["reason"], "expired");
}

/// The holds' group commit under a storm: 200 visitors each try 6 of 40
/// seats at once (1,200 holds whose seats and visitors cross between
/// batches). Every seat ends with at most one holder, every 201 is the
/// database's holder, nobody passes the cap, every refusal is a 409; on
/// PostgreSQL the holds went through shared batches and no batch failed
/// (a deadlock between batches would have sent its holds down the single
/// path, `op="hold"`).
async fn a_storm_of_crossing_holds_keeps_one_holder_per_seat_and_the_cap_and_never_deadlocks(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let cap = app.config.holds.max_per_visitor;
    let (event, seats) = app.create_event(4, 10).await;
    let visitors: Vec<(String, String)> = (0..200).map(|_| app.visitor()).collect();
    let attempts: Vec<(usize, i64)> = (0..visitors.len())
        .flat_map(|v| (0..6).map(move |k| (v, (v * 7 + k * 13) % 40)))
        .map(|(v, s)| (v, seats[s]))
        .collect();

    let responses = join_all(attempts.iter().map(|(v, seat)| app.hold(event, *seat, &visitors[*v].1))).await;

    let mut granted: Vec<(String, i64)> = Vec::new();
    for (r, (v, seat)) in responses.iter().zip(&attempts) {
        if r.status == StatusCode::CREATED {
            assert_eq!(r.json["seat_id"].as_i64(), Some(*seat), "{}", r.text);
            granted.push((visitors[*v].0.clone(), *seat));
        } else {
            r.assert_problem(StatusCode::CONFLICT);
        }
    }
    granted.sort();
    let mut seats_granted: Vec<i64> = granted.iter().map(|g| g.1).collect();
    seats_granted.sort_unstable();
    seats_granted.dedup();
    assert_eq!(seats_granted.len(), granted.len(), "no seat was granted twice");
    assert_eq!(granted.len(), 40, "every seat found a holder: the storm asked for each of them");
    let mut held =
        app.query_pairs(&format!("SELECT held_by, id FROM seats WHERE event_id = {event} AND status = 'HELD'")).await;
    held.sort();
    assert_eq!(held, granted, "the database's holders are exactly the 201s");
    let per_visitor = app
        .query_pairs(&format!(
            "SELECT held_by, count(*) FROM seats WHERE event_id = {event} AND status = 'HELD' GROUP BY held_by"
        ))
        .await;
    assert!(per_visitor.iter().all(|(_, n)| *n <= cap), "a visitor passed the cap: {per_visitor:?}");

    if backend == Backend::Postgres {
        let page = app.metrics().await;
        let calls = |op: &str| {
            page.lines()
                .filter(|l| l.starts_with("booking_core_db_query_duration_seconds_count{"))
                .filter(|l| l.contains(&format!("op=\"{op}\"")))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        };
        let batches = calls("hold_batch");
        assert!(batches > 0.0, "holds went through batches");
        assert!(
            batches < attempts.len() as f64 / 2.0,
            "batches were shared: {batches} calls for {} holds",
            attempts.len()
        );
        assert_eq!(calls("hold"), 0.0, "no batch failed back to single holds");
    }
}

/// 1,500 holds at once through a pool of one connection, with holds of
/// 300 ms: most wait in line for the database far longer than a hold lasts.
/// Every hold must still start when it is taken and last its full period
/// (a hold whose end was fixed before the wait would be born expired, and
/// the next taker's hold would seem to overlap it).
async fn a_hold_that_queued_for_the_database_still_lasts_its_full_period(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.holds.length = Duration::from_millis(300);
        c.database.max_connections = 1;
    })
    .await;
    let (event, seats) = app.create_event(15, 100).await;
    let visitors: Vec<(String, String)> = (0..seats.len()).map(|_| app.visitor()).collect();

    let responses = join_all(seats.iter().zip(&visitors).map(|(seat, (_, token))| app.hold(event, *seat, token))).await;

    let granted = responses.iter().filter(|r| r.status == StatusCode::CREATED).count();
    assert_eq!(granted, seats.len(), "every seat was free for its one taker");
    let spans = app
        .query_pairs(&format!(
            "SELECT id, expires_at - created_at FROM holds WHERE event_id = {event} ORDER BY expires_at - created_at"
        ))
        .await;
    assert_eq!(spans.len(), seats.len());
    let short: Vec<&(String, i64)> = spans.iter().filter(|(_, span)| *span != 300).collect();
    assert!(short.is_empty(), "{} holds did not last 300 ms from their start, e.g. {:?}", short.len(), short.first());
}
