//! What the Redis backend does when Redis loses part of a queue's state.

use shared::visitor::VisitorId;
use waiting_room::store::redis::{Keys, RedisStore};
use waiting_room::store::{JoinChecks, JoinKind, QueueStore, Standing};

fn counted(max: u64) -> JoinChecks {
    JoinChecks { client: Some("client-a".into()), max_per_client: max, ..JoinChecks::default() }
}

#[tokio::test]
async fn a_place_count_that_drifted_from_the_line_heals_at_the_cap() {
    let prefix = format!("test-{:016x}", rand::random::<u64>());
    let store = RedisStore::connect(&crate::redis_url(), &prefix).await.unwrap();
    let p = crate::behaviour::params();
    let vs: Vec<VisitorId> = (0..3).map(|_| VisitorId::random()).collect();
    for v in &vs {
        assert_eq!(store.join("q", *v, &p, &counted(3)).await.unwrap().1, JoinKind::Joined);
    }
    assert_eq!(store.join("q", VisitorId::random(), &p, &counted(3)).await.unwrap().1, JoinKind::ClientFull);
    // Two places leave the line by a path that does not forget their client
    // (an operator's hand, a partial restore): the count still says 3.
    let client = redis::Client::open(crate::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let line = Keys::new(&prefix, "q").key("line");
    let _: i64 = redis::cmd("ZREM")
        .arg(&line)
        .arg(vs[0].to_string())
        .arg(vs[1].to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    // At the cap the count is checked against the line: two places are free.
    for _ in 0..2 {
        assert_eq!(store.join("q", VisitorId::random(), &p, &counted(3)).await.unwrap().1, JoinKind::Joined);
    }
    assert_eq!(store.join("q", VisitorId::random(), &p, &counted(3)).await.unwrap().1, JoinKind::ClientFull);
    let places: i64 =
        redis::cmd("ZCARD").arg(Keys::new(&prefix, "q").key("places")).query_async(&mut conn).await.unwrap();
    assert_eq!(places, 3, "the stale entries are gone");
    // Redis forgetting the queue altogether (a restart without persistence)
    // forgets the line with the counts: the client starts from zero.
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{{{prefix}:q}}*")).query_async(&mut conn).await.unwrap();
    let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
    for _ in 0..3 {
        assert_eq!(store.join("q", VisitorId::random(), &p, &counted(3)).await.unwrap().1, JoinKind::Joined);
    }
}

/// Delete every key of queue `q` under `prefix`: what a Redis restarted
/// without persistence, or a replica that missed the writes, shows.
async fn forget(prefix: &str) {
    let client = redis::Client::open(crate::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{{{prefix}:q}}*")).query_async(&mut conn).await.unwrap();
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
    }
}

#[tokio::test]
async fn a_lost_line_gets_a_new_epoch_and_tickets_of_the_old_one_restore_its_order_once() {
    let prefix = format!("test-{:016x}", rand::random::<u64>());
    let store = RedisStore::connect(&crate::redis_url(), &prefix).await.unwrap();
    let p = crate::behaviour::params();
    let none = JoinChecks::default();
    // Thirty visitors wait; each join says where (epoch, sequence).
    let vs: Vec<VisitorId> = (0..30).map(|_| VisitorId::random()).collect();
    let mut places = Vec::new();
    for v in &vs {
        let placed = store.join_placed("q", *v, &p, &none).await.unwrap();
        assert_eq!(placed.kind, JoinKind::Joined);
        places.push(placed.place.expect("a waiting visitor has a place"));
    }
    let epoch = places[0].epoch;
    assert!(places.iter().all(|pl| pl.epoch == epoch));
    assert!(places.windows(2).all(|w| w[0].seq < w[1].seq), "sequence numbers grow with the line");
    // Joining again keeps the place and names the same one.
    assert_eq!(store.join_placed("q", vs[3], &p, &none).await.unwrap().place, Some(places[3]));
    let before = store.release("q", &p).await.unwrap();
    assert_eq!(before.epoch, epoch);

    forget(&prefix).await;
    let after = store.release("q", &p).await.unwrap();
    assert_ne!(after.epoch, epoch, "a lost line has a new epoch");
    assert_ne!(after.epoch, 0);
    assert_eq!(store.status("q", vs[0], &p).await.unwrap(), Standing::NotInQueue);

    // Fresh arrivals join first; then the old visitors come back with their
    // tickets, in reverse order: they are placed ahead of every fresh
    // arrival, in their original order.
    let fresh: Vec<VisitorId> = (0..5).map(|_| VisitorId::random()).collect();
    for f in &fresh {
        assert_eq!(store.join("q", *f, &p, &none).await.unwrap().1, JoinKind::Joined);
    }
    for (v, place) in vs.iter().zip(&places).rev() {
        let checks = JoinChecks { ticket: Some(*place), ..JoinChecks::default() };
        let placed = store.join_placed("q", *v, &p, &checks).await.unwrap();
        assert_eq!(placed.kind, JoinKind::Restored);
        assert_eq!(placed.place.map(|pl| pl.seq), Some(place.seq), "the old sequence number");
        assert_eq!(placed.place.map(|pl| pl.epoch), Some(after.epoch), "in the new epoch");
    }
    for (i, v) in vs.iter().enumerate() {
        let expected = Standing::Waiting { position: i as u64 + 1, waiting: 35 };
        assert_eq!(store.status("q", *v, &p).await.unwrap(), expected, "visitor {i}");
    }
    for (i, f) in fresh.iter().enumerate() {
        let expected = Standing::Waiting { position: 31 + i as u64, waiting: 35 };
        assert_eq!(store.status("q", *f, &p).await.unwrap(), expected, "fresh arrival {i}");
    }
    // A ticket of the current epoch restores nothing: a newcomer holding it
    // (or anybody who already left this epoch's line) joins at the back.
    let now_place = store.join_placed("q", fresh[0], &p, &none).await.unwrap().place.unwrap();
    let outsider = VisitorId::random();
    let checks = JoinChecks { ticket: Some(now_place), ..JoinChecks::default() };
    assert_eq!(store.join("q", outsider, &p, &checks).await.unwrap().1, JoinKind::Joined);
    // Honoured once: v0 is let in, their session ends, and the old ticket
    // joins them at the back.
    let mut p1 = p;
    p1.release_per_tick = 1;
    p1.tick_ms = 1;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let r = store.release("q", &p1).await.unwrap();
    assert_eq!(r.released, vec![vs[0]], "the head of the restored line goes first");
    assert!(store.end_session("q", vs[0], r.now_ms.div_euclid(1000), r.now_ms + 60_000).await.unwrap());
    let again = JoinChecks { ticket: Some(places[0]), ..JoinChecks::default() };
    let placed = store.join_placed("q", vs[0], &p, &again).await.unwrap();
    assert_eq!(placed.kind, JoinKind::Joined, "a ticket is honoured once per epoch");
    assert_eq!(placed.standing, Standing::Waiting { position: 36, waiting: 36 });
}
