//! First-come coupon claims: never over-issued, one per visitor, every 201 durable.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use booking_core::coupons::gate::GateAnswer;

use futures_util::StreamExt;
use rand::seq::SliceRandom;
use reqwest::StatusCode;

use crate::helpers::{Backend, MAIN_QUEUE, OTHER_QUEUE, Response, TestApp, delete_redis_prefix, metric_sum, now_secs};
use crate::on_both_backends;

on_both_backends!(
    five_thousand_claims_from_two_thousand_visitors_issue_exactly_the_stock,
    a_reservation_whose_claim_died_returns_to_stock_when_its_lease_expires,
    a_committed_claim_the_gate_never_heard_of_is_counted_when_its_lease_expires,
    a_gate_that_says_sold_out_while_the_database_has_codes_is_rebuilt,
    a_second_claim_is_409_with_the_existing_code,
    claims_before_opening_or_after_closing_are_403,
    a_sold_out_campaign_answers_410,
    a_missing_campaign_is_404_and_another_queues_campaign_is_403,
);

const STOCK: i64 = 500;
const VISITORS: usize = 2000;
const CLAIMS: usize = 5000;
const CONCURRENCY: usize = 400;

/// Fire `CLAIMS` claims from `VISITORS` visitors (every visitor two or three
/// times, in random order), `CONCURRENCY` at a time. `on_progress` sees the
/// number of answers so far.
async fn flood(app: &TestApp, campaign: i64, on_progress: impl Fn(usize) + Send + Sync) -> Vec<(String, Response)> {
    let visitors: Vec<(String, String)> = (0..VISITORS).map(|_| app.visitor()).collect();
    let mut plan: Vec<usize> = (0..CLAIMS).map(|i| i % VISITORS).collect();
    plan.shuffle(&mut rand::thread_rng());
    let done = AtomicUsize::new(0);
    futures_util::stream::iter(plan)
        .map(|i| {
            let (id, token) = &visitors[i];
            let done = &done;
            let on_progress = &on_progress;
            async move {
                let r = claim_until_settled(app, campaign, token).await;
                on_progress(done.fetch_add(1, Ordering::SeqCst) + 1);
                (id.clone(), r)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await
}

/// Claim, retrying (like a client honouring `Retry-After`, only sooner) while
/// the answer is 503: every remaining code reserved by claims in flight.
async fn claim_until_settled(app: &TestApp, campaign: i64, token: &str) -> Response {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = app.claim(campaign, token).await;
        if r.status != StatusCode::SERVICE_UNAVAILABLE {
            return r;
        }
        r.assert_problem(StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.headers.contains_key("retry-after"), "a 503 says when to retry");
        assert!(tokio::time::Instant::now() < deadline, "still 503 after 30 s: {}", r.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sample the gate and the database until `stop` flips: at every sample the
/// gate's books balance, every committed claim is counted by the gate as
/// issued or reserved, and the gate counts no claim the database lacks. Each
/// sample reads the database, then the gate, so the first comparison holds at
/// the gate's read and the second is made against the next sample's database
/// read. Returns the samples taken.
async fn sample_invariants(app: &TestApp, campaign: i64, stop: &AtomicBool) -> usize {
    let mut samples = 0;
    let mut issued_before = 0;
    while !stop.load(Ordering::SeqCst) {
        let (gate, claimed) = app.gate_and_claimed(campaign).await;
        assert!(issued_before <= claimed, "the gate counted {issued_before} issued, the database then had {claimed}");
        if let Some(g) = gate {
            let n = |k: &str| g[k].as_i64().unwrap();
            assert_eq!(n("free") + n("reserved") + n("issued"), n("total"), "the gate's books: {g}");
            assert!(claimed <= n("issued") + n("reserved"), "{claimed} committed, gate {g}");
            issued_before = n("issued");
            samples += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    samples
}

/// Assert the invariants after a flood; returns the number of 201s.
async fn audit(app: &TestApp, campaign: i64, answers: &[(String, Response)]) -> usize {
    let rows = app
        .query_pairs(&format!(
            "SELECT visitor_id, id FROM coupon_codes WHERE campaign_id = {campaign} AND visitor_id IS NOT NULL"
        ))
        .await;
    let in_db: HashMap<String, i64> = rows.iter().cloned().collect();
    assert_eq!(in_db.len(), rows.len(), "no visitor holds two codes");
    assert!(rows.len() as i64 <= STOCK, "over-issued: {} > {STOCK}", rows.len());
    let mut winners = HashSet::new();
    for (visitor, r) in answers {
        match r.status {
            StatusCode::CREATED => {
                assert!(winners.insert(visitor.clone()), "visitor {visitor} was told 201 twice");
                assert_eq!(in_db.get(visitor), r.json["claim_id"].as_i64().as_ref(), "a 201 without its row");
            }
            StatusCode::CONFLICT | StatusCode::GONE => {
                r.assert_problem(r.status);
            }
            other => panic!("unexpected {other}: {}", r.text),
        }
    }
    assert_eq!(winners.len(), rows.len(), "every row was acknowledged exactly once");
    winners.len()
}

async fn five_thousand_claims_from_two_thousand_visitors_issue_exactly_the_stock(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.rate_limit.mutations = 100_000).await;
    let (event, _) = app.create_event(1, 1).await;
    let campaign = app.create_campaign(event, STOCK).await;
    let stop = AtomicBool::new(false);
    let (answers, samples) = tokio::join!(
        async {
            let answers = flood(&app, campaign, |_| {}).await;
            stop.store(true, Ordering::SeqCst);
            answers
        },
        sample_invariants(&app, campaign, &stop)
    );
    assert!(samples > 3, "the invariants were sampled during the flood ({samples})");
    assert_eq!(audit(&app, campaign, &answers).await as i64, STOCK);
    let (gate, _) = app.gate_and_claimed(campaign).await;
    let gate = gate.unwrap();
    assert_eq!(
        (gate["free"].as_i64(), gate["reserved"].as_i64(), gate["issued"].as_i64()),
        (Some(0), Some(0), Some(STOCK))
    );
    let stats = app.admin(reqwest::Method::GET, "/admin/stats", None).await;
    assert_eq!(stats.json["campaigns"][0]["stock_left"], 0);
    assert_eq!(stats.json["claims"], STOCK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushing_redis_in_the_middle_of_a_claim_flood_never_over_issues() {
    let app = TestApp::spawn_with(Backend::Postgres, |c| c.rate_limit.mutations = 100_000).await;
    let (event, _) = app.create_event(1, 1).await;
    let campaign = app.create_campaign(event, STOCK).await;
    let prefix = app.redis_prefix().unwrap().to_owned();
    let flushes = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let flusher = {
        let flushes = flushes.clone();
        tokio::spawn(async move {
            // Delete this test's keys (and only those) while claims are in flight.
            while rx.recv().await.is_some() {
                delete_redis_prefix(&prefix).await;
                flushes.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let answers = flood(&app, campaign, |done| {
        if done == 300 || done == 1200 || done == 3000 {
            let _ = tx.send(());
        }
    })
    .await;
    drop(tx);
    flusher.await.unwrap();
    assert_eq!(flushes.load(Ordering::SeqCst), 3);
    let during = audit(&app, campaign, &answers).await;

    // Whatever the flood left unissued (a gate answer given while an admission
    // was being undone) goes to the next visitors; never more than the stock.
    let top_up: Vec<(String, Response)> = futures_util::stream::iter(0..100)
        .map(|_| async {
            let (id, token) = app.visitor();
            (id, claim_until_settled(&app, campaign, &token).await)
        })
        .buffer_unordered(20)
        .collect()
        .await;
    let after = top_up.iter().filter(|(_, r)| r.status == StatusCode::CREATED).count();
    let all: Vec<(String, Response)> = answers.into_iter().chain(top_up).collect();
    assert_eq!(audit(&app, campaign, &all).await, during + after);
    assert_eq!((during + after) as i64, STOCK, "the whole stock is issued, exactly");
    let rebuilds = metric_sum(&app.metrics().await, "booking_core_gate_rebuilds_total", &[]);
    assert!(rebuilds >= 2.0, "the gate was rebuilt after the flush ({rebuilds})");
}

async fn a_second_claim_is_409_with_the_existing_code(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (event, _) = app.create_event(1, 1).await;
    let campaign = app.create_campaign(event, 10).await;
    let (_, token) = app.visitor();
    let first = app.claim(campaign, &token).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    let code = first.json["code"].as_str().unwrap();
    assert!(code.starts_with(&format!("C{campaign}-")), "{code}");
    let second = app.claim(campaign, &token).await;
    second.assert_problem(StatusCode::CONFLICT);
    assert_eq!(second.json["code"], first.json["code"]);
    assert_eq!(second.json["claim_id"], first.json["claim_id"]);
    let mine = app.get("/api/me/coupons", &token).await;
    assert_eq!(mine.json.as_array().unwrap().len(), 1);
    assert_eq!(mine.json[0]["code"], first.json["code"]);
}

async fn claims_before_opening_or_after_closing_are_403(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (event, _) = app.create_event(1, 1).await;
    let now = now_secs();
    let later = app.create_campaign_window(event, 5, now + 3600, now + 7200).await;
    let over = app.create_campaign_window(event, 5, now - 7200, now - 3600).await;
    let (_, token) = app.visitor();
    let r = app.claim(later, &token).await;
    r.assert_problem(StatusCode::FORBIDDEN);
    assert!(r.json["opens_at"].is_string());
    app.claim(over, &token).await.assert_problem(StatusCode::FORBIDDEN);
    let rows = app.query_pairs("SELECT code, id FROM coupon_codes WHERE visitor_id IS NOT NULL").await;
    assert!(rows.is_empty());
}

async fn a_sold_out_campaign_answers_410(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (event, _) = app.create_event(1, 1).await;
    let campaign = app.create_campaign(event, 2).await;
    for _ in 0..2 {
        let (_, token) = app.visitor();
        assert_eq!(app.claim(campaign, &token).await.status, StatusCode::CREATED);
    }
    let (_, late) = app.visitor();
    app.claim(campaign, &late).await.assert_problem(StatusCode::GONE);
    assert_eq!(metric_sum(&app.metrics().await, "booking_core_claims_sold_out_total", &[]), 1.0);
}

async fn a_missing_campaign_is_404_and_another_queues_campaign_is_403(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (event, _) = app.create_event(1, 1).await;
    let campaign = app.create_campaign(event, 2).await;
    let (_, token) = app.visitor();
    app.claim(campaign + 100, &token).await.assert_problem(StatusCode::NOT_FOUND);
    let outsider = app.token_for(&uuid::Uuid::new_v4().simple().to_string(), OTHER_QUEUE);
    app.claim(campaign, &outsider).await.assert_problem(StatusCode::FORBIDDEN);
}

/// A short lease and a quick reconciler, so expiries happen within a test.
fn quick_leases(c: &mut booking_core::Config) {
    c.coupons.lease = Duration::from_secs(2);
    c.coupons.reconcile_interval = Duration::from_millis(100);
}

/// Poll (bounded) until the gate of `campaign` has nothing reserved; returns its counts.
async fn until_nothing_reserved(app: &TestApp, campaign: i64) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (gate, _) = app.gate_and_claimed(campaign).await;
        let gate = gate.expect("the gate exists");
        if gate["reserved"] == 0 {
            return gate;
        }
        assert!(tokio::time::Instant::now() < deadline, "reservations never expired: {gate}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_reservation_whose_claim_died_returns_to_stock_when_its_lease_expires(backend: Backend) {
    let app = TestApp::spawn_with(backend, quick_leases).await;
    let (event, _) = app.create_event(1, 1).await;
    let campaign = app.create_campaign(event, 3).await;
    let coupons = app.app.state.coupons();
    let row = coupons.campaign(campaign).await.unwrap();
    // What a process killed between reservation and commit leaves behind: a lease, no claim.
    let dead = uuid::Uuid::new_v4().simple().to_string();
    assert!(matches!(coupons.gate().reserve(&row, &dead).await, GateAnswer::Reserved { .. }));
    let (gate, claimed) = app.gate_and_claimed(campaign).await;
    let gate = gate.unwrap();
    assert_eq!((gate["free"].as_i64(), gate["reserved"].as_i64(), claimed), (Some(2), Some(1), 0));
    // Its visitor is told the claim is in flight (not "already claimed"), and when to look again.
    let token = app.token_for(&dead, MAIN_QUEUE);
    let r = app.claim(campaign, &token).await;
    r.assert_problem(StatusCode::CONFLICT);
    assert!(r.json["detail"].as_str().unwrap().contains("still being processed"), "{}", r.text);
    assert!(r.headers.contains_key("retry-after"));

    let gate = until_nothing_reserved(&app, campaign).await;
    assert_eq!((gate["free"].as_i64(), gate["issued"].as_i64()), (Some(3), Some(0)), "back to stock: {gate}");
    let returned = metric_sum(&app.metrics().await, "booking_core_gate_expired_leases_total", &["claimed"]);
    assert_eq!(returned, 1.0);
    let r = app.claim(campaign, &token).await;
    assert_eq!(r.status, StatusCode::CREATED, "the visitor can claim again: {}", r.text);
}

async fn a_committed_claim_the_gate_never_heard_of_is_counted_when_its_lease_expires(backend: Backend) {
    let app = TestApp::spawn_with(backend, quick_leases).await;
    let (event, _) = app.create_event(1, 1).await;
    let campaign = app.create_campaign(event, 3).await;
    let state = &app.app.state;
    let row = state.coupons().campaign(campaign).await.unwrap();
    // Killed after the commit, before the gate heard of it: a lease and a claim.
    let visitor = uuid::Uuid::new_v4().simple().to_string();
    assert!(matches!(state.coupons().gate().reserve(&row, &visitor).await, GateAnswer::Reserved { .. }));
    let committed = state.store().claim_code(campaign, &visitor, 1, 1, i64::MAX).await.unwrap();
    assert!(matches!(committed, booking_core::store::coupons::ClaimAttempt::Claimed(_)));

    let gate = until_nothing_reserved(&app, campaign).await;
    assert_eq!((gate["free"].as_i64(), gate["issued"].as_i64()), (Some(2), Some(1)), "counted as issued: {gate}");
    let r = app.claim(campaign, &app.token_for(&visitor, MAIN_QUEUE)).await;
    r.assert_problem(StatusCode::CONFLICT);
    assert!(r.json["code"].is_string(), "the duplicate answer names the code: {}", r.text);
}

async fn a_gate_that_says_sold_out_while_the_database_has_codes_is_rebuilt(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (event, _) = app.create_event(1, 1).await;
    let campaign = app.create_campaign(event, 3).await;
    let coupons = app.app.state.coupons();
    let row = coupons.campaign(campaign).await.unwrap();
    let (_, first) = app.visitor();
    assert_eq!(app.claim(campaign, &first).await.status, StatusCode::CREATED);
    // A gate that lost count: it believes every code is gone.
    coupons.gate().sold_out(&row, "nobody").await;
    let (gate, _) = app.gate_and_claimed(campaign).await;
    assert_eq!(gate.unwrap()["free"], 0);

    let (_, second) = app.visitor();
    let r = app.claim(campaign, &second).await;
    assert_eq!(r.status, StatusCode::CREATED, "the database's free codes are still claimable: {}", r.text);
    let (gate, claimed) = app.gate_and_claimed(campaign).await;
    let gate = gate.unwrap();
    assert_eq!(claimed, 2);
    assert_eq!(
        gate["free"].as_i64().unwrap() + gate["reserved"].as_i64().unwrap() + gate["issued"].as_i64().unwrap(),
        3
    );
    let (_, third) = app.visitor();
    assert_eq!(app.claim(campaign, &third).await.status, StatusCode::CREATED);
    let (_, late) = app.visitor();
    claim_until_settled(&app, campaign, &late).await.assert_problem(StatusCode::GONE);
}
