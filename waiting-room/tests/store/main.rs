//! One behaviour suite for every queue store backend: each test below runs
//! against the in-process store, against real Redis (at `REDIS_URL`, default
//! 127.0.0.1:6379, each test under its own key prefix) and against a
//! three-node Redis Cluster the test starts (one per test: nextest runs each
//! test in its own process, so a shared one could not be stopped).
#![allow(clippy::unwrap_used)]

mod behaviour;
mod redis_faults;
#[path = "../support/redis_servers.rs"]
mod servers;
mod topologies;

use std::sync::Arc;

use waiting_room::store::QueueStore;
use waiting_room::store::memory::MemoryStore;
use waiting_room::store::redis::RedisStore;

/// The Redis the tests use (`REDIS_URL`, else the local default).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A fresh in-memory store.
pub async fn memory() -> Arc<dyn QueueStore> {
    Arc::new(MemoryStore::new())
}

/// A Redis store under a fresh key prefix.
pub async fn redis() -> Arc<dyn QueueStore> {
    let prefix = format!("test-{:016x}", rand::random::<u64>());
    Arc::new(RedisStore::connect(&redis_url(), &prefix).await.expect("Redis must be running at REDIS_URL"))
}

/// A store on `cluster`, under a fresh key prefix.
pub async fn cluster(cluster: &servers::Cluster) -> Arc<dyn QueueStore> {
    let config = waiting_room::config::StoreConfig {
        backend: waiting_room::config::Backend::Redis,
        cluster_nodes: cluster.urls(),
        key_prefix: format!("test-{:016x}", rand::random::<u64>()),
        ..Default::default()
    };
    Arc::new(RedisStore::open(&config).await.unwrap())
}

/// Generate `mod memory { #[tokio::test] fn name() }` and `mod redis { … }` for
/// each behaviour test, so the backends cannot drift apart.
macro_rules! for_each_backend {
    ($($name:ident),* $(,)?) => {
        mod memory_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::behaviour::$name(crate::memory().await).await;
                }
            )*
        }
        mod redis_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::behaviour::$name(crate::redis().await).await;
                }
            )*
        }
        mod cluster_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let cluster = tokio::task::spawn_blocking(crate::servers::Cluster::start).await.unwrap();
                    crate::behaviour::$name(crate::cluster(&cluster).await).await;
                }
            )*
        }
    };
}

for_each_backend!(
    an_ended_session_frees_its_slot_and_its_admission_is_revoked,
    positions_follow_join_order_and_a_rejoin_keeps_the_place,
    concurrent_joins_get_distinct_consecutive_positions,
    free_entry_admits_while_nobody_waits_and_below_the_threshold,
    the_first_call_starts_the_first_interval_and_ticks_are_spaced,
    a_tick_releases_exactly_min_n_waiting_in_join_order,
    max_active_caps_a_release,
    sessions_end_at_admission_plus_m_and_stop_counting,
    abandoned_visitors_are_skipped_without_taking_a_slot,
    a_visitor_back_within_the_window_keeps_the_place_and_later_rejoins_at_the_back,
    paused_queues_release_nobody_and_queue_all_disables_free_entry,
    standings_read_many_visitors_without_touching_them,
    places_per_client_are_capped_and_free_again_once_they_leave_the_line,
    concurrent_joins_of_one_client_never_pass_the_cap,
    a_new_place_needs_a_proof_and_each_solution_buys_one,
    spent_seeds_are_forgotten_a_minute_after_their_challenge_expires,
    every_tick_reports_the_places_added_in_the_interval_before_it,
    adaptive_ticks_release_the_decided_n_and_the_log_shows_every_tick,
    reports_merge_into_the_next_tick_and_no_shows_stop_counting_toward_max_active,
    the_lottery_orders_its_entrants_once_and_later_arrivals_follow,
    a_draw_happens_once_however_many_instances_try,
    random_ticks_draw_from_the_whole_line_and_passthrough_lets_everyone_in,
    a_release_cap_limits_each_tick_to_what_is_left_to_sell,
    the_catalog_saves_only_over_the_version_read_and_a_purge_forgets_a_queue,
    a_join_sent_again_after_its_answer_was_lost_keeps_the_first_place,
);
