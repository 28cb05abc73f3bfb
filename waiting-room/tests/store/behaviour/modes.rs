//! The release modes: the lottery and its draw, random ticks, passthrough, and the release cap.

use std::sync::Arc;
use std::time::Duration;

use shared::visitor::VisitorId;
use waiting_room::config::QueueMode;
use waiting_room::store::{Draw, JoinKind, Params, QueueStore, Standing};

use super::{OPEN, ids, params, position, tick};

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
