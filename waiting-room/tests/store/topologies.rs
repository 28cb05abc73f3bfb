//! The store on the Redis deployments it supports besides one server: a
//! Cluster (queues spread over its nodes) and replicated primaries
//! (`store.wait_replicas`: a write too few replicas hold is a failure).

use std::time::{Duration, Instant};

use shared::visitor::VisitorId;
use waiting_room::config::{Backend, StoreConfig};
use waiting_room::store::redis::RedisStore;
use waiting_room::store::{JoinChecks, QueueStore, Standing};

use crate::behaviour::params;
use crate::servers::{Cluster, Process, until};

fn single(url: String, wait_replicas: u32) -> StoreConfig {
    StoreConfig {
        backend: Backend::Redis,
        redis_url: url,
        key_prefix: format!("test-{:016x}", rand::random::<u64>()),
        wait_replicas,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_spread_over_the_cluster_nodes_and_each_runs_on_one() {
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let store = crate::cluster(&cluster).await;
    let p = params();
    for q in 0..12 {
        let queue = format!("queue-{q}");
        for i in 0..3u64 {
            let placed = store.join_placed(&queue, VisitorId::random(), &p, &JoinChecks::default()).await.unwrap();
            assert_eq!(placed.standing, Standing::Waiting { position: i + 1, waiting: i + 1 });
        }
        assert_eq!(store.stats(&queue).await.unwrap().waiting, 3);
    }
    let counts = cluster.key_counts();
    assert!(counts.iter().filter(|c| **c > 0).count() >= 2, "keys on one node only: {counts:?}");
    // A queue's keys live together: every key count is a multiple of a queue's.
    let per_queue: u64 = counts.iter().sum::<u64>() / 12;
    assert!(counts.iter().all(|c| c % per_queue == 0), "a queue split over nodes: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_too_few_replicas_hold_is_a_store_failure_and_reads_still_answer() {
    let dir = tempfile::tempdir().unwrap();
    let lonely = Process::server(dir.path(), &[]);
    let config = StoreConfig { response_timeout: Duration::from_millis(400), ..single(lonely.url(), 1) };
    let store = RedisStore::open(&config).await.unwrap();
    let p = params();
    let v = VisitorId::random();
    let err = store.join_placed("q", v, &p, &JoinChecks::default()).await.unwrap_err();
    assert!(err.is_unreplicated() && err.to_string().contains("0 of 1"), "{err}");
    // The read path never waits.
    assert!(store.status("q", v, &p).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_a_replica_holds_is_answered_and_wait_costs_little() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Process::server(dir.path(), &[]);
    let replica = Process::server(dir.path(), &["--replicaof", &format!("127.0.0.1 {}", primary.port)]);
    until("the replica is in sync", Duration::from_secs(10), || {
        replica.cli(&["INFO", "replication"]).filter(|i| i.contains("master_link_status:up")).map(|_| ())
    });
    let p = params();
    let mut took = Vec::new();
    for wait in [0, 1] {
        let store = std::sync::Arc::new(RedisStore::open(&single(primary.url(), wait)).await.unwrap());
        let started = Instant::now();
        for _ in 0..300 {
            store.join_placed("q", VisitorId::random(), &p, &JoinChecks::default()).await.unwrap();
        }
        took.push(started.elapsed() / 300);
        // 32 callers at once on the one multiplexed connection.
        let started = Instant::now();
        let callers = (0..32).map(|_| {
            let (store, p) = (store.clone(), p);
            tokio::spawn(async move {
                for _ in 0..50 {
                    store.join_placed("q", VisitorId::random(), &p, &JoinChecks::default()).await.unwrap();
                }
            })
        });
        for c in futures_util::future::join_all(callers).await {
            c.unwrap();
        }
        took.push(started.elapsed() / 1600);
    }
    eprintln!(
        "join, one caller: {:?} without WAIT, {:?} with WAIT 1; 32 callers: {:?} a join without, {:?} with",
        took[0], took[2], took[1], took[3]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_published_on_one_cluster_node_is_heard_on_every_other() {
    use futures_util::StreamExt;
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let config = StoreConfig { cluster_nodes: cluster.urls(), ..single(String::new(), 0) };
    let store = RedisStore::open(&config).await.unwrap();
    let channel = waiting_room::store::redis::events_channel(&config.key_prefix, "q");
    // The node owning the queue's slot: the one that answers for its key.
    let before = cluster.key_counts();
    store.join_placed("q", VisitorId::random(), &params(), &JoinChecks::default()).await.unwrap();
    let after = cluster.key_counts();
    let owner = (0..3).find(|i| after[*i] > before[*i]).unwrap();
    let mut subscribers = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate().filter(|(i, _)| *i != owner) {
        let mut pubsub = redis::Client::open(node.url()).unwrap().get_async_pubsub().await.unwrap();
        pubsub.subscribe(&channel).await.unwrap();
        subscribers.push((i, pubsub));
    }
    let p = waiting_room::store::Params { tick_ms: 50, ..params() };
    let mut ticked = false;
    for _ in 0..40 {
        ticked |= store.release("q", &p).await.unwrap().ticked;
        if ticked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ticked);
    for (i, pubsub) in &mut subscribers {
        let msg = tokio::time::timeout(Duration::from_secs(2), pubsub.on_message().next()).await;
        let payload: String = msg.unwrap_or_else(|_| panic!("node {i} heard nothing")).unwrap().get_payload().unwrap();
        assert!(payload.starts_with("epoch "), "node {i}: {payload}");
    }
}
