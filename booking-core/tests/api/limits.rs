//! The per-visitor rate limit on requests that change something.

use futures_util::future::join_all;
use reqwest::StatusCode;

use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(mutating_requests_past_the_visitor_rate_limit_are_429_with_retry_after);

async fn mutating_requests_past_the_visitor_rate_limit_are_429_with_retry_after(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.rate_limit.mutations = 5;
        c.rate_limit.window = std::time::Duration::from_secs(60);
    })
    .await;
    let (event, seats) = app.create_event(1, 2).await;
    let campaign = app.create_campaign(event, 10).await;
    let (_, token) = app.visitor();
    // Thirty made-up confirms at once: five are looked at, the rest never reach the database.
    let fake = format!("{event}-{}", "f".repeat(32));
    let answers = join_all((0..30).map(|_| app.confirm(&fake, &token))).await;
    let looked_at = answers.iter().filter(|r| r.status == StatusCode::NOT_FOUND).count();
    assert_eq!(looked_at, 5, "exactly the limit was served");
    for r in answers.iter().filter(|r| r.status != StatusCode::NOT_FOUND) {
        r.assert_problem(StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.json["limit"], 5);
        let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=12).contains(&retry), "one request comes back every 12 s: Retry-After {retry}");
    }
    // Every mutating route is limited; reads are not, and neither is another visitor.
    app.hold(event, seats[0], &token).await.assert_problem(StatusCode::TOO_MANY_REQUESTS);
    app.claim(campaign, &token).await.assert_problem(StatusCode::TOO_MANY_REQUESTS);
    app.release(&fake, &token).await.assert_problem(StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(app.get("/api/me/bookings", &token).await.status, StatusCode::OK);
    assert_eq!(app.get(&format!("/api/events/{event}/seats"), &token).await.status, StatusCode::OK);
    let (_, other) = app.visitor();
    assert_eq!(app.hold(event, seats[0], &other).await.status, StatusCode::CREATED);
    let holds = app.query_pairs("SELECT state, count(*) FROM holds GROUP BY state").await;
    assert_eq!(holds, vec![("ACTIVE".to_owned(), 1)], "the refused hold did nothing");
}
