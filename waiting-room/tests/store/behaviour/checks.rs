//! The checks of a join: places per client, proofs of work and spent seeds.

use std::sync::Arc;
use std::time::Duration;

use shared::visitor::VisitorId;
use waiting_room::store::{JoinChecks, JoinKind, Params, Proof, QueueStore, Standing};

use super::{ids, now_ms, params, tick};

fn counted(client: &str, max: u64) -> JoinChecks {
    JoinChecks { client: Some(client.to_owned()), max_per_client: max, ..JoinChecks::default() }
}

fn solved(seed: &str, expires_at_ms: i64) -> JoinChecks {
    JoinChecks { proof: Proof::Solved { seed: seed.to_owned(), expires_at_ms }, ..JoinChecks::default() }
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
