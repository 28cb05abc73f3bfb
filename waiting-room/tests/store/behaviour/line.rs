//! The line itself: join order, ticks, free entry, sessions, abandonment, pauses and standings.

use std::sync::Arc;
use std::time::Duration;

use shared::visitor::VisitorId;
use waiting_room::store::{JoinKind, Params, QueueStore, Standing};

use super::{OPEN, ids, now_ms, params, position, tick};

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
