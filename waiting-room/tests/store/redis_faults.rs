//! What the Redis backend does when Redis loses part of a queue's state.

use shared::visitor::VisitorId;
use waiting_room::store::redis::{Keys, RedisStore};
use waiting_room::store::{JoinChecks, JoinKind, QueueStore};

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
