//! The behaviour every backend must show. Times are short (ticks of 100-300 ms)
//! and every wait is followed by an assertion on state, never on timing.

use std::sync::Arc;
use std::time::Duration;

use shared::visitor::VisitorId;
use waiting_room::adaptive::{Record, Signals, State, bucket};
use waiting_room::config::QueueMode;
use waiting_room::store::{AdaptiveParams, Draw, JoinChecks, JoinKind, Params, Proof, QueueStore, Report, Standing};

/// No places cap, no challenge.
const OPEN: JoinChecks = JoinChecks { client: None, max_per_client: 0, proof: Proof::NotRequired, ticket: None };

pub fn params() -> Params {
    Params {
        release_per_tick: 5,
        tick_ms: 200,
        session_ms: 60_000,
        free_entry: 0,
        max_active: 0,
        abandon_after_ms: 0,
        paused: false,
        queue_all: false,
        adaptive: None,
        arrival_grace_ms: 0,
        entrants_until_ms: 0,
        mode: QueueMode::Fifo,
        release_cap: 0,
    }
}

fn ids(n: usize) -> Vec<VisitorId> {
    (0..n).map(|_| VisitorId::random()).collect()
}

async fn position(store: &Arc<dyn QueueStore>, q: &str, v: VisitorId, p: &Params) -> Option<u64> {
    match store.status(q, v, p).await.unwrap() {
        Standing::Waiting { position, .. } => Some(position),
        _ => None,
    }
}

/// Call release until a tick happens (the store decides when one is due).
async fn tick(store: &Arc<dyn QueueStore>, q: &str, p: &Params) -> waiting_room::store::Release {
    for _ in 0..100 {
        let r = store.release(q, p).await.unwrap();
        if r.ticked {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(r.next_due_in_ms.clamp(1, 50))).await;
    }
    panic!("no tick happened within 100 calls");
}

pub async fn positions_follow_join_order_and_a_rejoin_keeps_the_place(store: Arc<dyn QueueStore>) {
    let p = params();
    let vs = ids(10);
    for (i, v) in vs.iter().enumerate() {
        let (s, kind) = store.join("q", *v, &p, &OPEN).await.unwrap();
        assert_eq!(s, Standing::Waiting { position: i as u64 + 1, waiting: i as u64 + 1 });
        assert_eq!(kind, JoinKind::Joined);
    }
    let (again, kind) = store.join("q", vs[3], &p, &OPEN).await.unwrap();
    assert_eq!(again, Standing::Waiting { position: 4, waiting: 10 });
    assert_eq!(kind, JoinKind::Existing);
    assert_eq!(position(&store, "q", vs[9], &p).await, Some(10));
    assert_eq!(store.status("q", VisitorId::random(), &p).await.unwrap(), Standing::NotInQueue);
    // Queues are independent.
    assert_eq!(store.join("other", vs[0], &p, &OPEN).await.unwrap().0, Standing::Waiting { position: 1, waiting: 1 });
}

pub async fn concurrent_joins_get_distinct_consecutive_positions(store: Arc<dyn QueueStore>) {
    let p = params();
    let vs = ids(500);
    let mut tasks = Vec::new();
    for v in vs.clone() {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { store.join("q", v, &p, &OPEN).await.unwrap().0 }));
    }
    let mut positions = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Standing::Waiting { position, .. } => positions.push(position),
            other => panic!("unexpected {other:?}"),
        }
    }
    positions.sort_unstable();
    assert_eq!(positions, (1..=500).collect::<Vec<u64>>());
}

pub async fn free_entry_admits_while_nobody_waits_and_below_the_threshold(store: Arc<dyn QueueStore>) {
    let p = Params { free_entry: 2, ..params() };
    let vs = ids(4);
    let (a, ka) = store.join("q", vs[0], &p, &OPEN).await.unwrap();
    assert!(matches!(a, Standing::Ready { .. }), "{a:?}");
    assert_eq!(ka, JoinKind::FreeEntry);
    assert!(matches!(store.join("q", vs[1], &p, &OPEN).await.unwrap().0, Standing::Ready { .. }));
    // Two sessions active: the third waits, and so does the fourth (someone waits).
    assert_eq!(store.join("q", vs[2], &p, &OPEN).await.unwrap().0, Standing::Waiting { position: 1, waiting: 1 });
    let relaxed = Params { free_entry: 100, ..p };
    assert_eq!(store.join("q", vs[3], &relaxed, &OPEN).await.unwrap().0, Standing::Waiting { position: 2, waiting: 2 });
    let stats = store.stats("q").await.unwrap();
    assert_eq!((stats.waiting, stats.active), (2, 2));
    // A free-entry visitor re-joining stays READY with the same session.
    let (again, kind) = store.join("q", vs[0], &p, &OPEN).await.unwrap();
    assert_eq!((again, kind), (a, JoinKind::Existing));
}

pub async fn the_first_call_starts_the_first_interval_and_ticks_are_spaced(store: Arc<dyn QueueStore>) {
    let p = params();
    let vs = ids(3);
    for v in &vs {
        store.join("q", *v, &p, &OPEN).await.unwrap();
    }
    let first = store.release("q", &p).await.unwrap();
    assert!(!first.ticked, "the first call only starts the interval");
    assert!(first.released.is_empty());
    assert!(first.next_due_in_ms > 0 && first.next_due_in_ms <= 200);
    let r = tick(&store, "q", &p).await;
    assert_eq!(r.released, vs);
    let soon = store.release("q", &p).await.unwrap();
    assert!(!soon.ticked, "a second release within the interval must not tick");
    let next = tick(&store, "q", &p).await;
    assert!(next.now_ms - r.now_ms >= 200, "ticks {} ms apart", next.now_ms - r.now_ms);
    assert_eq!(next.tick, r.tick + 1);
}

pub async fn a_tick_releases_exactly_min_n_waiting_in_join_order(store: Arc<dyn QueueStore>) {
    let p = params(); // N = 5
    let vs = ids(7);
    for v in &vs {
        store.join("q", *v, &p, &OPEN).await.unwrap();
    }
    store.release("q", &p).await.unwrap();
    let r1 = tick(&store, "q", &p).await;
    assert_eq!(r1.released, vs[..5].to_vec());
    assert_eq!((r1.waiting, r1.active), (2, 5));
    assert_eq!(position(&store, "q", vs[5], &p).await, Some(1));
    let r2 = tick(&store, "q", &p).await;
    assert_eq!(r2.released, vs[5..].to_vec());
    for v in &vs {
        match store.status("q", *v, &p).await.unwrap() {
            Standing::Ready { admitted_at_ms, expires_at_ms } => {
                assert_eq!(expires_at_ms - admitted_at_ms, 60_000);
            }
            other => panic!("{other:?}"),
        }
    }
    let r3 = tick(&store, "q", &p).await;
    assert!(r3.released.is_empty());
    let stats = store.stats("q").await.unwrap();
    assert_eq!((stats.released_total, stats.ticks, stats.active), (7, 3, 7));
}

pub async fn max_active_caps_a_release(store: Arc<dyn QueueStore>) {
    let p = Params { max_active: 3, ..params() };
    let vs = ids(6);
    for v in &vs {
        store.join("q", *v, &p, &OPEN).await.unwrap();
    }
    store.release("q", &p).await.unwrap();
    assert_eq!(tick(&store, "q", &p).await.released.len(), 3);
    assert_eq!(tick(&store, "q", &p).await.released.len(), 0, "cap reached: nobody else gets in");
}

pub async fn sessions_end_at_admission_plus_m_and_stop_counting(store: Arc<dyn QueueStore>) {
    let p = Params { session_ms: 300, free_entry: 10, ..params() };
    let v = VisitorId::random();
    let (s, _) = store.join("q", v, &p, &OPEN).await.unwrap();
    let Standing::Ready { admitted_at_ms, expires_at_ms } = s else { panic!("{s:?}") };
    assert_eq!(expires_at_ms - admitted_at_ms, 300);
    assert_eq!(store.stats("q").await.unwrap().active, 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.status("q", v, &p).await.unwrap(), Standing::NotInQueue);
    assert_eq!(store.stats("q").await.unwrap().active, 0);
    // They may queue again (and get in again through free entry).
    assert!(matches!(store.join("q", v, &p, &OPEN).await.unwrap().0, Standing::Ready { .. }));
}

pub async fn abandoned_visitors_are_skipped_without_taking_a_slot(store: Arc<dyn QueueStore>) {
    let p = Params { release_per_tick: 50, abandon_after_ms: 1_000, tick_ms: 100, ..params() };
    let vs = ids(100);
    for v in &vs {
        store.join("q", *v, &p, &OPEN).await.unwrap();
    }
    store.release("q", &p).await.unwrap();
    // 30 visitors (every third of the first 90) leave; the rest keep polling.
    let gone: Vec<VisitorId> = vs.iter().step_by(3).take(30).copied().collect();
    let present: Vec<VisitorId> = vs.iter().filter(|v| !gone.contains(v)).copied().collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    store.touch("q", &present).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = tick(&store, "q", &p).await;
    assert_eq!(r.abandoned, 30);
    assert_eq!(r.released.len(), 50);
    assert_eq!(r.released, present[..50].to_vec(), "only present visitors, in join order");
    assert_eq!(r.waiting, 20);
    assert_eq!(store.stats("q").await.unwrap().abandoned_total, 30);
}

pub async fn a_visitor_back_within_the_window_keeps_the_place_and_later_rejoins_at_the_back(
    store: Arc<dyn QueueStore>,
) {
    let p = Params { abandon_after_ms: 1_000, ..params() };
    let vs = ids(3);
    for v in &vs {
        store.join("q", *v, &p, &OPEN).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(position(&store, "q", vs[0], &p).await, Some(1), "back within the window");
    store.touch("q", &vs[2..]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    // vs[1] was last seen 1.2 s ago: the place is gone, a join puts them at the back.
    let (s, kind) = store.join("q", vs[1], &p, &OPEN).await.unwrap();
    assert_eq!(kind, JoinKind::Rejoined);
    assert_eq!(s, Standing::Waiting { position: 3, waiting: 3 });
    assert_eq!(position(&store, "q", vs[2], &p).await, Some(2));
}

pub async fn paused_queues_release_nobody_and_queue_all_disables_free_entry(store: Arc<dyn QueueStore>) {
    let paused = Params { paused: true, ..params() };
    let vs = ids(3);
    let all = Params { queue_all: true, free_entry: 100, ..params() };
    assert!(matches!(store.join("q", vs[0], &all, &OPEN).await.unwrap().0, Standing::Waiting { .. }));
    store.join("q", vs[1], &paused, &OPEN).await.unwrap();
    store.release("q", &paused).await.unwrap();
    let r = tick(&store, "q", &paused).await;
    assert!(r.released.is_empty());
    assert_eq!(r.waiting, 2);
    let r = tick(&store, "q", &params()).await;
    assert_eq!(r.released, vs[..2].to_vec());
}

pub async fn standings_read_many_visitors_without_touching_them(store: Arc<dyn QueueStore>) {
    let p = Params { abandon_after_ms: 1_000, release_per_tick: 1, ..params() };
    let vs = ids(3);
    for v in &vs {
        store.join("q", *v, &p, &OPEN).await.unwrap();
    }
    store.release("q", &p).await.unwrap();
    tick(&store, "q", &p).await;
    let stranger = VisitorId::random();
    let got = store.standings("q", &[vs[0], vs[1], vs[2], stranger]).await.unwrap();
    assert!(matches!(got[0], Standing::Ready { .. }));
    assert_eq!(got[1], Standing::Waiting { position: 1, waiting: 2 });
    assert_eq!(got[2], Standing::Waiting { position: 2, waiting: 2 });
    assert_eq!(got[3], Standing::NotInQueue);
    // Reading is not a visit: without a poll or touch, the visitors are abandoned.
    tokio::time::sleep(Duration::from_millis(600)).await;
    store.standings("q", &vs).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = tick(&store, "q", &p).await;
    assert_eq!(r.abandoned, 2);
    assert!(r.released.is_empty());
}

fn counted(client: &str, max: u64) -> JoinChecks {
    JoinChecks { client: Some(client.to_owned()), max_per_client: max, ..JoinChecks::default() }
}

fn solved(seed: &str, expires_at_ms: i64) -> JoinChecks {
    JoinChecks { proof: Proof::Solved { seed: seed.to_owned(), expires_at_ms }, ..JoinChecks::default() }
}

fn now_ms() -> i64 {
    waiting_room::clock::now_ms()
}

pub async fn places_per_client_are_capped_and_free_again_once_they_leave_the_line(store: Arc<dyn QueueStore>) {
    let p = Params { release_per_tick: 2, ..params() };
    let vs = ids(6);
    for v in &vs[..3] {
        assert_eq!(store.join("q", *v, &p, &counted("a", 3)).await.unwrap().1, JoinKind::Joined);
    }
    let (s, kind) = store.join("q", vs[3], &p, &counted("a", 3)).await.unwrap();
    assert_eq!((s, kind), (Standing::NotInQueue, JoinKind::ClientFull));
    assert!(kind.refused());
    assert_eq!(store.status("q", vs[3], &p).await.unwrap(), Standing::NotInQueue, "a refused join holds nothing");
    // A place already held is kept, another client has its own count, another queue its own line.
    assert_eq!(store.join("q", vs[0], &p, &counted("a", 3)).await.unwrap().1, JoinKind::Existing);
    assert_eq!(store.join("q", vs[4], &p, &counted("b", 3)).await.unwrap().1, JoinKind::Joined);
    assert_eq!(store.join("other", vs[3], &p, &counted("a", 3)).await.unwrap().1, JoinKind::Joined);
    // Released places stop counting: two of "a" are let in, two more may join.
    store.release("q", &p).await.unwrap();
    assert_eq!(tick(&store, "q", &p).await.released, vs[..2].to_vec());
    for v in [vs[3], vs[5]] {
        assert_eq!(store.join("q", v, &p, &counted("a", 3)).await.unwrap().1, JoinKind::Joined);
    }
    let late = VisitorId::random();
    assert_eq!(store.join("q", late, &p, &counted("a", 3)).await.unwrap().1, JoinKind::ClientFull);
    // Abandoned places stop counting too (nothing is released while paused).
    let away = Params { paused: true, abandon_after_ms: 1_000, ..params() };
    for v in ids(3) {
        assert_eq!(store.join("ab", v, &away, &counted("a", 3)).await.unwrap().1, JoinKind::Joined);
    }
    store.release("ab", &away).await.unwrap();
    assert_eq!(store.join("ab", late, &away, &counted("a", 3)).await.unwrap().1, JoinKind::ClientFull);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(tick(&store, "ab", &away).await.abandoned, 3);
    let back = ids(3);
    for v in &back {
        assert_eq!(store.join("ab", *v, &away, &counted("a", 3)).await.unwrap().1, JoinKind::Joined);
    }
    // A place lost on return (away too long) is given back before the rejoin counts.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(store.join("ab", back[0], &away, &counted("a", 3)).await.unwrap().1, JoinKind::Rejoined);
    // Free entry is no waiting place: not refused at the cap, not counted.
    let open = Params { free_entry: 10, ..params() };
    let free = ids(4);
    for v in &free {
        assert_eq!(store.join("free", *v, &open, &counted("a", 1)).await.unwrap().1, JoinKind::FreeEntry);
    }
}

pub async fn concurrent_joins_of_one_client_never_pass_the_cap(store: Arc<dyn QueueStore>) {
    let p = params();
    let mut tasks = Vec::new();
    for v in ids(300) {
        let store = store.clone();
        let checks = counted("a", 7);
        tasks.push(tokio::spawn(async move { store.join("q", v, &p, &checks).await.unwrap().1 }));
    }
    let mut kinds = Vec::new();
    for t in tasks {
        kinds.push(t.await.unwrap());
    }
    assert_eq!(kinds.iter().filter(|k| **k == JoinKind::Joined).count(), 7);
    assert_eq!(kinds.iter().filter(|k| **k == JoinKind::ClientFull).count(), 293);
    assert_eq!(store.stats("q").await.unwrap().waiting, 7);
}

pub async fn a_new_place_needs_a_proof_and_each_solution_buys_one(store: Arc<dyn QueueStore>) {
    let p = params();
    let vs = ids(4);
    let exp = now_ms() + 60_000;
    let missing = JoinChecks { proof: Proof::Missing, ..JoinChecks::default() };
    assert_eq!(store.join("q", vs[0], &p, &missing).await.unwrap(), (Standing::NotInQueue, JoinKind::NeedsChallenge));
    assert_eq!(store.join("q", vs[0], &p, &solved("seed-1", exp)).await.unwrap().1, JoinKind::Joined);
    // Once in line, no proof is needed; the same solution buys nobody else a place.
    assert_eq!(store.join("q", vs[0], &p, &missing).await.unwrap().1, JoinKind::Existing);
    assert_eq!(
        store.join("q", vs[1], &p, &solved("seed-1", exp)).await.unwrap(),
        (Standing::NotInQueue, JoinKind::ChallengeSpent)
    );
    assert_eq!(store.join("q", vs[1], &p, &solved("seed-2", exp)).await.unwrap().1, JoinKind::Joined);
    // Spent in one queue is spent there only.
    assert_eq!(store.join("other", vs[2], &p, &solved("seed-1", exp)).await.unwrap().1, JoinKind::Joined);
    // Free entry admits only with a proof too, and an admitted visitor needs none.
    let open = Params { free_entry: 10, ..params() };
    assert_eq!(store.join("free", vs[3], &open, &missing).await.unwrap().1, JoinKind::NeedsChallenge);
    assert_eq!(store.join("free", vs[3], &open, &solved("seed-3", exp)).await.unwrap().1, JoinKind::FreeEntry);
    assert!(matches!(
        store.join("free", vs[3], &open, &missing).await.unwrap(),
        (Standing::Ready { .. }, JoinKind::Existing)
    ));
    // Concurrent uses of one solution: exactly one place.
    let mut tasks = Vec::new();
    for v in ids(200) {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { store.join("q", v, &p, &solved("seed-4", exp)).await.unwrap().1 }));
    }
    let mut joined = 0;
    for t in tasks {
        match t.await.unwrap() {
            JoinKind::Joined => joined += 1,
            kind => assert_eq!(kind, JoinKind::ChallengeSpent),
        }
    }
    assert_eq!(joined, 1);
}

pub async fn spent_seeds_are_forgotten_a_minute_after_their_challenge_expires(store: Arc<dyn QueueStore>) {
    let p = params();
    // Expired 59.6 s ago: remembered for another 0.4 s (the proxy refuses it long before).
    let exp = now_ms() - waiting_room::store::SPENT_GRACE_MS + 400;
    assert_eq!(store.join("q", VisitorId::random(), &p, &solved("old", exp)).await.unwrap().1, JoinKind::Joined);
    assert_eq!(
        store.join("q", VisitorId::random(), &p, &solved("old", exp)).await.unwrap().1,
        JoinKind::ChallengeSpent
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(store.join("q", VisitorId::random(), &p, &solved("old", exp)).await.unwrap().1, JoinKind::Joined);
}

pub async fn every_tick_reports_the_places_added_in_the_interval_before_it(store: Arc<dyn QueueStore>) {
    let p = Params { release_per_tick: 1, ..params() };
    for v in ids(4) {
        store.join("q", v, &p, &OPEN).await.unwrap();
    }
    assert_eq!(store.release("q", &p).await.unwrap().joined, 0, "the first call only starts the interval");
    for v in ids(7) {
        store.join("q", v, &p, &OPEN).await.unwrap();
    }
    let r = tick(&store, "q", &p).await;
    assert_eq!(r.joined, 7);
    let between = store.release("q", &p).await.unwrap();
    assert!(!between.ticked && between.joined == 7, "calls between ticks report the last tick's: {between:?}");
    // Refused joins and existing places add nothing.
    store
        .join("q", VisitorId::random(), &p, &JoinChecks { proof: Proof::Missing, ..JoinChecks::default() })
        .await
        .unwrap();
    assert_eq!(tick(&store, "q", &p).await.joined, 0);
}

pub async fn an_ended_session_frees_its_slot_and_its_admission_is_revoked(store: Arc<dyn QueueStore>) {
    let p = Params { free_entry: 1, max_active: 1, ..params() };
    let [buyer, next] = ids(2)[..] else { unreachable!() };
    let (s, _) = store.join("q", buyer, &p, &OPEN).await.unwrap();
    let Standing::Ready { admitted_at_ms, expires_at_ms } = s else { panic!("{s:?}") };
    let iat = admitted_at_ms.div_euclid(1000);
    assert!(matches!(store.join("q", next, &p, &OPEN).await.unwrap().0, Standing::Waiting { .. }));
    assert!(!store.revoked("q", buyer, iat).await.unwrap());
    // The purchase ends it: once, and only that admission.
    assert!(!store.end_session("q", buyer, iat - 1, expires_at_ms).await.unwrap(), "an older admission");
    assert!(store.end_session("q", buyer, iat, expires_at_ms).await.unwrap());
    assert!(!store.end_session("q", buyer, iat, expires_at_ms).await.unwrap(), "ended already");
    assert!(store.revoked("q", buyer, iat).await.unwrap());
    assert!(store.revoked("q", buyer, iat - 5).await.unwrap(), "older tokens too");
    assert!(!store.revoked("q", buyer, iat + 1).await.unwrap(), "a later admission is not");
    assert!(!store.revoked("q", next, iat).await.unwrap());
    assert!(!store.revoked("other", buyer, iat).await.unwrap());
    assert_eq!(store.status("q", buyer, &p).await.unwrap(), Standing::NotInQueue);
    // The slot is free for the next tick.
    let r = tick(&store, "q", &p).await;
    let r = if r.released.is_empty() { tick(&store, "q", &p).await } else { r };
    assert_eq!(r.released, vec![next]);
    // Revocations go with the tokens they cover.
    let short = VisitorId::random();
    store.end_session("q", short, iat, now_ms() + 200).await.unwrap();
    assert!(store.revoked("q", short, iat).await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!store.revoked("q", short, iat).await.unwrap(), "kept past the tokens it covers");
}

fn decision(tick: u64, n: u64) -> Record {
    Record { tick, n, reason: "headroom".into(), state: State::settled(n as f64), signals: Signals::default() }
}

pub async fn adaptive_ticks_release_the_decided_n_and_the_log_shows_every_tick(store: Arc<dyn QueueStore>) {
    let bounds = AdaptiveParams { min: 2, max: 8, pin: 0 };
    let p = Params { adaptive: Some(bounds), ..params() };
    for v in ids(40) {
        store.join("q", v, &p, &OPEN).await.unwrap();
    }
    // No decision yet: the minimum.
    let first = tick(&store, "q", &p).await;
    assert_eq!((first.n, first.released.len()), (2, 2));
    assert!(first.window.is_some(), "the caller that ticked gets the window");
    assert_eq!(first.decision, None);
    assert!(store.save_decision("q", &decision(first.tick, 6)).await.unwrap());
    // Another instance's call that does not tick gets no window.
    let idle = store.release("q", &p).await.unwrap();
    assert!(!idle.ticked && idle.window.is_none(), "{idle:?}");
    assert_eq!(idle.decision.map(|d| d.n), Some(6));
    let second = tick(&store, "q", &p).await;
    assert_eq!((second.n, second.released.len()), (6, 6));
    // A decision is clamped to the bounds; an older tick's never replaces a newer one.
    assert!(store.save_decision("q", &decision(second.tick, 100)).await.unwrap());
    assert!(!store.save_decision("q", &decision(first.tick, 3)).await.unwrap());
    let third = tick(&store, "q", &p).await;
    assert_eq!((third.n, third.released.len()), (8, 8));
    // The operator's pin wins over the decision.
    let pinned = Params { adaptive: Some(AdaptiveParams { pin: 3, ..bounds }), ..p };
    let fourth = tick(&store, "q", &pinned).await;
    assert_eq!((fourth.n, fourth.released.len()), (3, 3));
    // Fixed mode: the operator's N.
    let fifth = tick(&store, "q", &params()).await;
    assert_eq!((fifth.n, fifth.released.len()), (5, 5));
    let log = store.ticks("q", 10).await.unwrap();
    let seen: Vec<(u64, u64, u64, &str)> = log.iter().map(|t| (t.tick, t.n, t.released, t.mode.as_str())).collect();
    assert_eq!(
        seen,
        vec![
            (fifth.tick, 5, 5, "fixed"),
            (fourth.tick, 3, 3, "pinned"),
            (third.tick, 8, 8, "adaptive"),
            (second.tick, 6, 6, "adaptive"),
            (first.tick, 2, 2, "adaptive"),
        ]
    );
    assert_eq!(log[2].reason, "headroom");
    assert_eq!(log.iter().map(|t| t.waiting).collect::<Vec<_>>(), vec![16, 21, 24, 32, 38]);
    assert_eq!(store.ticks("q", 2).await.unwrap().len(), 2);
}

pub async fn reports_merge_into_the_next_tick_and_no_shows_stop_counting_toward_max_active(store: Arc<dyn QueueStore>) {
    let p = Params {
        max_active: 4,
        arrival_grace_ms: 1_000,
        adaptive: Some(AdaptiveParams { min: 4, max: 4, pin: 0 }),
        ..params()
    };
    for v in ids(20) {
        store.join("q", v, &p, &OPEN).await.unwrap();
    }
    let first = tick(&store, "q", &p).await;
    assert_eq!(first.released.len(), 4);
    let iat = first.now_ms.div_euclid(1000);
    // Two instances report; one admitted visitor arrives (twice: counted once),
    // and a token of no admission counts for nothing.
    let a = Report {
        instance: 1,
        buckets: vec![(bucket(10.0), 9), (bucket(900.0), 1)],
        samples: 10,
        errors: 0,
        in_flight: 2,
        arrivals: vec![(first.released[0], iat), (VisitorId::random(), iat)],
    };
    let b = Report {
        instance: 2,
        buckets: vec![(bucket(10.0), 5)],
        samples: 5,
        errors: 1,
        in_flight: 3,
        arrivals: vec![(first.released[0], iat)],
    };
    store.report("q", &a).await.unwrap();
    store.report("q", &b).await.unwrap();
    let second = tick(&store, "q", &p).await;
    let w = second.window.clone().unwrap();
    assert_eq!((w.samples, w.errors, w.in_flight, w.arrived), (15, 1, 5, 1), "{w:?}");
    assert_eq!(w.buckets[bucket(10.0)], 14);
    assert_eq!(w.buckets[bucket(900.0)], 1);
    let signals = Signals::from_window(&w, second.waiting, 0, 200);
    assert!(signals.p50_ms >= 10.0 && signals.p50_ms < 13.0, "{signals:?}");
    assert!(signals.p99_ms >= 900.0 && signals.p99_ms < 1100.0, "{signals:?}");
    // The next window starts empty (in flight is a level, not a sum: kept).
    store.report("q", &Report { instance: 1, ..Report::default() }).await.unwrap();
    // The cap is full until the three who never came pass the grace; then
    // they stop counting and three more get in.
    let mut later = second;
    let mut ticks = 0;
    while later.no_shows == 0 {
        assert!(later.released.is_empty(), "released past the cap: {later:?}");
        later = tick(&store, "q", &p).await;
        ticks += 1;
        assert!(ticks < 40, "no no-shows after {ticks} ticks");
    }
    assert_eq!(later.no_shows, 3);
    assert_eq!(later.window.as_ref().map(|w| (w.no_shows, w.samples)), Some((3, 0)));
    assert_eq!(later.released.len(), 3, "{later:?}");
    // A no-show who turns up late counts again: the cap is full once more.
    let late = Report { instance: 1, arrivals: vec![(first.released[1], iat)], ..Report::default() };
    store.report("q", &late).await.unwrap();
    let next = tick(&store, "q", &p).await;
    assert_eq!(next.window.as_ref().map(|w| w.arrived), Some(1));
    assert!(next.released.is_empty(), "{next:?}");
}

fn wall_ms() -> i64 {
    waiting_room::clock::now_ms()
}

/// Wait until the wall clock (which the store's is, on this machine) passes `at_ms`.
async fn until(at_ms: i64) {
    let left = at_ms - wall_ms();
    if left > 0 {
        tokio::time::sleep(Duration::from_millis(u64::try_from(left).unwrap_or(0) + 20)).await;
    }
}

pub async fn the_lottery_orders_its_entrants_once_and_later_arrivals_follow(store: Arc<dyn QueueStore>) {
    use waiting_room::lottery;
    // The first seed stored stays, whoever offers another.
    let seed = lottery::new_seed();
    assert!(store.lottery("q", None).await.unwrap().is_none());
    let first = store.lottery("q", Some(&seed)).await.unwrap().unwrap();
    assert_eq!(first.seed, seed);
    assert!(first.drawn.is_none());
    assert_eq!(store.lottery("q", Some(&lottery::new_seed())).await.unwrap().unwrap().seed, seed);

    // 30 entrants join the pre-queue at once (releases paused, no free entry).
    let opens_at = wall_ms() + 700;
    let p = Params { entrants_until_ms: opens_at, paused: true, queue_all: true, free_entry: 10, ..params() };
    let entrants = ids(30);
    let joins = entrants.iter().map(|v| {
        let store = store.clone();
        let v = *v;
        async move { store.join("q", v, &p, &OPEN).await.unwrap() }
    });
    for (s, _) in futures_util::future::join_all(joins).await {
        assert!(matches!(s, Standing::Waiting { .. }), "{s:?}");
    }
    let mut listed = store.entrants("q").await.unwrap();
    listed.sort();
    let mut expected = entrants.clone();
    expected.sort();
    assert_eq!(listed, expected, "every pre-queue join is an entrant");
    let order = lottery::draw("q", &seed, &entrants);
    let visitors: Vec<VisitorId> = order.iter().map(|(_, v)| *v).collect();
    let published = serde_json::to_string(&order.iter().map(|(p, _)| p).collect::<Vec<_>>()).unwrap();
    assert_eq!(store.draw("q", opens_at, &visitors, &published).await.unwrap(), Draw::TooEarly);

    // After the opening: later arrivals are not entrants, and queue behind.
    until(opens_at).await;
    let open = Params { entrants_until_ms: opens_at, ..params() };
    let later = ids(5);
    for v in &later {
        store.join("q", *v, &open, &OPEN).await.unwrap();
    }
    assert_eq!(store.entrants("q").await.unwrap().len(), 30, "joins after the opening are no entrants");
    // A draw that leaves an entrant out changes nothing.
    assert_eq!(store.draw("q", opens_at, &visitors[1..], &published).await.unwrap(), Draw::Changed);
    assert_eq!(store.draw("q", opens_at, &visitors, &published).await.unwrap(), Draw::Drawn);
    assert_eq!(store.draw("q", opens_at, &visitors, &published).await.unwrap(), Draw::AlreadyDrawn);
    let record = store.lottery("q", None).await.unwrap().unwrap();
    assert_eq!(record.drawn.as_ref().map(|(_, o)| o.as_str()), Some(published.as_str()));
    assert_eq!(record.seed, seed);

    // The line: the entrants in drawn order, then the later arrivals in theirs.
    for (i, v) in visitors.iter().chain(&later).enumerate() {
        assert_eq!(position(&store, "q", *v, &open).await, Some(i as u64 + 1), "place {}", i + 1);
    }
    // Ticks release in that order.
    let r = tick(&store, "q", &open).await;
    assert_eq!(r.released, visitors[..5].to_vec());
}

pub async fn a_draw_happens_once_however_many_instances_try(store: Arc<dyn QueueStore>) {
    use waiting_room::lottery;
    let seed = lottery::new_seed();
    store.lottery("q", Some(&seed)).await.unwrap();
    let opens_at = wall_ms() + 300;
    let p = Params { entrants_until_ms: opens_at, paused: true, queue_all: true, ..params() };
    let entrants = ids(50);
    for v in &entrants {
        store.join("q", *v, &p, &OPEN).await.unwrap();
    }
    until(opens_at).await;
    // 20 "instances" draw at once, each with the order it computed.
    let draws = (0..20).map(|_| {
        let store = store.clone();
        let seed = seed.clone();
        async move {
            let listed = store.entrants("q").await.unwrap();
            let order = lottery::draw("q", &seed, &listed);
            let visitors: Vec<VisitorId> = order.iter().map(|(_, v)| *v).collect();
            let published = serde_json::to_string(&order.iter().map(|(p, _)| p).collect::<Vec<_>>()).unwrap();
            store.draw("q", opens_at, &visitors, &published).await.unwrap()
        }
    });
    let outcomes = futures_util::future::join_all(draws).await;
    assert_eq!(outcomes.iter().filter(|d| **d == Draw::Drawn).count(), 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|d| matches!(d, Draw::Drawn | Draw::AlreadyDrawn)), "{outcomes:?}");
    // The line is the rule's order (a second permutation would have moved it).
    let open = Params { entrants_until_ms: opens_at, ..params() };
    for (i, (_, v)) in lottery::draw("q", &seed, &entrants).iter().enumerate() {
        assert_eq!(position(&store, "q", *v, &open).await, Some(i as u64 + 1));
    }
}

pub async fn random_ticks_draw_from_the_whole_line_and_passthrough_lets_everyone_in(store: Arc<dyn QueueStore>) {
    // Random: 200 wait, ticks of 20; after five ticks, 100 released, drawn
    // from the whole line: some from its back half (FIFO would release only
    // the first 100), never one twice, and the rest still waiting.
    let p = Params { release_per_tick: 20, tick_ms: 100, mode: QueueMode::Random, ..params() };
    let vs = ids(200);
    for v in &vs {
        store.join("q", *v, &p, &OPEN).await.unwrap();
    }
    let mut released = Vec::new();
    while released.len() < 100 {
        let r = tick(&store, "q", &p).await;
        assert!(r.released.len() <= 20, "{}", r.released.len());
        released.extend(r.released);
    }
    let mut unique = released.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), released.len(), "a visitor released twice");
    let back_half = released.iter().filter(|v| vs[100..].contains(v)).count();
    // Drawn uniformly, about 50 of the 100 come from the back half; FIFO gives 0.
    assert!((20..=80).contains(&back_half), "{back_half} of 100 from the back half");
    for v in &vs {
        let s = store.status("q", *v, &p).await.unwrap();
        assert_eq!(matches!(s, Standing::Ready { .. }), released.contains(v), "{s:?}");
    }

    // Passthrough: a join is admitted at once although a line waits (below
    // max_active), and the next tick lets everyone waiting in.
    let pass = Params { mode: QueueMode::Passthrough, max_active: 1_000, ..p };
    let newcomer = VisitorId::random();
    let (s, kind) = store.join("q", newcomer, &pass, &OPEN).await.unwrap();
    assert!(matches!(s, Standing::Ready { .. }), "{s:?}");
    assert_eq!(kind, JoinKind::FreeEntry);
    let r = tick(&store, "q", &pass).await;
    assert_eq!(r.released.len(), 100, "everyone waiting goes in");
    assert_eq!(r.waiting, 0);
    // At max_active a passthrough join waits, and a paused queue admits nobody.
    let full = Params { max_active: 1, ..pass };
    assert!(matches!(store.join("q", VisitorId::random(), &full, &OPEN).await.unwrap().0, Standing::Waiting { .. }));
    let paused = Params { paused: true, ..pass };
    assert!(matches!(store.join("q", VisitorId::random(), &paused, &OPEN).await.unwrap().0, Standing::Waiting { .. }));
}

pub async fn a_release_cap_limits_each_tick_to_what_is_left_to_sell(store: Arc<dyn QueueStore>) {
    let p = Params { release_per_tick: 5, release_cap: 2, ..params() };
    let vs = ids(10);
    for v in &vs {
        store.join("q", *v, &p, &OPEN).await.unwrap();
    }
    let r = tick(&store, "q", &p).await;
    assert_eq!(r.released, vs[..2].to_vec(), "two left to sell: two released, in order");
    assert_eq!(r.n, 2);
    let r = tick(&store, "q", &Params { release_cap: 0, ..p }).await;
    assert_eq!(r.released, vs[2..7].to_vec(), "no cap: N again");
}

pub async fn the_catalog_saves_only_over_the_version_read_and_a_purge_forgets_a_queue(store: Arc<dyn QueueStore>) {
    assert_eq!(store.load_catalog().await.unwrap(), None);
    assert_eq!(store.save_catalog(1, "{}").await.unwrap(), None, "nothing stored: only version 0 saves");
    assert_eq!(store.save_catalog(0, r#"{"queues":[]}"#).await.unwrap(), Some(1));
    assert_eq!(store.load_catalog().await.unwrap(), Some((1, r#"{"queues":[]}"#.to_owned())));
    // 20 savers that all read version 1: exactly one wins.
    let saves = (0..20).map(|i| {
        let store = store.clone();
        async move { store.save_catalog(1, &format!(r#"{{"n":{i}}}"#)).await.unwrap() }
    });
    let outcomes = futures_util::future::join_all(saves).await;
    assert_eq!(outcomes.iter().filter(|o| **o == Some(2)).count(), 1, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| o.is_none()).count(), 19, "{outcomes:?}");
    let (version, json) = store.load_catalog().await.unwrap().unwrap();
    assert_eq!(version, 2);
    assert!(json.starts_with(r#"{"n":"#), "{json}");

    // A purge empties the queue's line, sessions and counters; others keep theirs.
    let p = params();
    for v in ids(12) {
        store.join("gone", v, &p, &OPEN).await.unwrap();
        store.join("kept", v, &p, &OPEN).await.unwrap();
    }
    tick(&store, "gone", &p).await;
    let before = store.stats("gone").await.unwrap();
    assert_eq!((before.waiting, before.active), (7, 5));
    store.purge("gone").await.unwrap();
    let after = store.stats("gone").await.unwrap();
    assert_eq!((after.waiting, after.active, after.released_total), (0, 0, 0), "{after:?}");
    assert_eq!(store.stats("kept").await.unwrap().waiting, 12);
    let fresh = VisitorId::random();
    store.join("gone", fresh, &p, &OPEN).await.unwrap();
    assert_eq!(position(&store, "gone", fresh, &p).await, Some(1), "a new line starts at the front");
}

pub async fn a_join_sent_again_after_its_answer_was_lost_keeps_the_first_place(store: Arc<dyn QueueStore>) {
    // The breaker sends a join whose answer timed out once more; the visitor
    // id may be one minted for that join. The second call must find the place
    // the first one made, not append the visitor again at the back.
    let p = params();
    let visitors = ids(10);
    for v in &visitors {
        store.join("q", *v, &p, &OPEN).await.unwrap();
    }
    let minted = VisitorId::random();
    store.join("q", minted, &p, &OPEN).await.unwrap();
    for v in ids(5) {
        store.join("q", v, &p, &OPEN).await.unwrap();
    }
    let (again, kind) = store.join("q", minted, &p, &OPEN).await.unwrap();
    assert_eq!(again, Standing::Waiting { position: 11, waiting: 16 }, "{kind:?}");
    assert_eq!(kind, JoinKind::Existing);
    assert_eq!(position(&store, "q", visitors[9], &p).await, Some(10));
}
