//! What adaptive admission reads and writes: joins per tick, decisions, reports and no-shows.

use std::sync::Arc;

use shared::visitor::VisitorId;
use waiting_room::adaptive::{ControllerState, Record, Signals, bucket};
use waiting_room::store::{AdaptiveParams, JoinChecks, Params, Proof, QueueStore, Report};

use super::{OPEN, ids, params, tick};

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

fn decision(tick: u64, n: u64) -> Record {
    Record {
        tick,
        n,
        reason: "headroom".into(),
        state: ControllerState::settled(n as f64),
        signals: Signals::default(),
    }
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
