//! Sessions that end with the purchase: the `wr-session` header the proxy
//! consumes, and `session_end` in the body the event page reads.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, Response, TestApp};
use crate::on_both_backends;

on_both_backends!(
    the_confirm_that_leaves_no_hold_ends_the_session_and_its_replay_says_so_again,
    claims_end_the_session_only_when_configured,
);

fn session_header(r: &Response) -> Option<&str> {
    r.headers.get("wr-session").map(|v| v.to_str().unwrap())
}

async fn the_confirm_that_leaves_no_hold_ends_the_session_and_its_replay_says_so_again(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (event, seats) = app.create_event(1, 3).await;
    let (_, token) = app.visitor();
    let first = app.hold(event, seats[0], &token).await.json["hold_id"].as_str().unwrap().to_owned();
    let second = app.hold(event, seats[1], &token).await.json["hold_id"].as_str().unwrap().to_owned();

    // Two seats in the cart: confirming the first must not strand the second.
    let booked = app.post_with_key(&format!("/api/holds/{first}/confirm"), &token, "c-1", json!({})).await;
    assert_eq!(booked.status, StatusCode::OK, "{}", booked.text);
    assert_eq!(session_header(&booked), None);
    assert!(booked.json.get("session_end").is_none(), "{}", booked.text);
    assert!(booked.json["booking_id"].is_i64());

    // Failures never end a session.
    let fake = format!("{event}-{}", "e".repeat(32));
    let missing = app.confirm(&fake, &token).await;
    missing.assert_problem(StatusCode::NOT_FOUND);
    assert_eq!(session_header(&missing), None);

    let last = app.post_with_key(&format!("/api/holds/{second}/confirm"), &token, "c-2", json!({})).await;
    assert_eq!(last.status, StatusCode::OK, "{}", last.text);
    assert_eq!(session_header(&last), Some("end; reason=\"confirm\""));
    assert_eq!(last.json["session_end"], "confirm");
    assert_eq!(last.json["seat_id"].as_i64(), Some(seats[1]));

    // A replay (its first answer may never have reached the proxy) says so again, byte for byte.
    let replay = app.post_with_key(&format!("/api/holds/{second}/confirm"), &token, "c-2", json!({})).await;
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(session_header(&replay), Some("end; reason=\"confirm\""));
    assert_eq!(replay.text, last.text);
    // So does the earlier replay, which did not end it.
    let early = app.post_with_key(&format!("/api/holds/{first}/confirm"), &token, "c-1", json!({})).await;
    assert_eq!((session_header(&early), early.text.as_str()), (None, booked.text.as_str()));

    // A live hold on another event the visitor's queue covers keeps the session open too.
    let (_, other) = app.visitor();
    let (second_event, other_seats) = app.create_event(1, 2).await;
    let here = app.hold(event, seats[2], &other).await.json["hold_id"].as_str().unwrap().to_owned();
    app.hold(second_event, other_seats[0], &other).await;
    let r = app.confirm(&here, &other).await;
    assert_eq!((r.status, session_header(&r)), (StatusCode::OK, None), "a hold on another event of the queue");
}

async fn claims_end_the_session_only_when_configured(backend: Backend) {
    let default = TestApp::spawn(backend).await;
    let (event, _) = default.create_event(1, 1).await;
    let campaign = default.create_campaign(event, 5).await;
    let (_, token) = default.visitor();
    let r = default.claim(campaign, &token).await;
    assert_eq!((r.status, session_header(&r)), (StatusCode::CREATED, None), "{}", r.text);
    assert!(r.json.get("session_end").is_none());

    let both = TestApp::spawn_with(backend, |c| {
        c.end_session_on = vec![booking_core::config::SessionEndOn::Confirm, booking_core::config::SessionEndOn::Claim];
    })
    .await;
    let (event, seats_b) = both.create_event(1, 2).await;
    let campaign = both.create_campaign(event, 5).await;
    let (_, holder) = both.visitor();
    both.hold(event, seats_b[0], &holder).await;
    let r = both.claim(campaign, &holder).await;
    assert_eq!((r.status, session_header(&r)), (StatusCode::CREATED, None), "a live hold keeps the session open");
    let (_, buyer) = both.visitor();
    let r = both.claim(campaign, &buyer).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(session_header(&r), Some("end; reason=\"claim\""));
    assert_eq!(r.json["session_end"], "claim");
    assert!(r.json["code"].is_string());
    let again = both.claim(campaign, &buyer).await;
    again.assert_problem(StatusCode::CONFLICT);
    assert_eq!(session_header(&again), None, "a duplicate is no purchase");

    let never = TestApp::spawn_with(backend, |c| c.end_session_on = vec![]).await;
    let (event, never_seats) = never.create_event(1, 1).await;
    let (_, token) = never.visitor();
    let hold = never.hold(event, never_seats[0], &token).await.json["hold_id"].as_str().unwrap().to_owned();
    let r = never.confirm(&hold, &token).await;
    assert_eq!((r.status, session_header(&r)), (StatusCode::OK, None));
}
