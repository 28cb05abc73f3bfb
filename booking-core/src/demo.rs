//! The demo `make run` and docker compose serve: one event with a seat map and
//! one coupon campaign, created at start when `[demo] seed = true`.
//!
//! Seeding is idempotent by a simple rule: it only happens into a database
//! with no events at all, so restarting never adds a second demo event and an
//! operator's own events are never mixed with demo data. On a fresh database
//! the demo event therefore gets id 1, which is what the shipped configs
//! protect (`/events/1`) and map to the queue (`[[queues]] events = [1]`).
//!
//! On PostgreSQL, several instances may start at once on one database: the
//! check and the inserts run under a session advisory lock held on a
//! connection of its own (outside the pool, so a pool of one connection
//! cannot deadlock against it), and closing that connection releases the
//! lock even if seeding failed halfway.

use std::time::Duration;

use shared::config::ConfigError;
use sqlx::Connection;

use crate::catalogue::row_label;
use crate::clock::now_ms;
use crate::config::Config;
use crate::store::catalogue::NewEvent;
use crate::store::coupons::NewCampaign;
use crate::store::{Backend, Store, StoreError};

// `[demo]` is read with the rest of the config, which must not depend on the
// seeding code; the old path stays for the callers that name it here (e2e).
pub use crate::config::DemoConfig;

/// Advisory lock key of the seeding step (any constant both instances agree on).
const SEED_LOCK: i64 = 0x5eed_de70;

/// What [`seed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seeded {
    /// The demo event and its campaign were created.
    Created {
        /// The new event.
        event_id: i64,
        /// Its coupon campaign.
        campaign_id: i64,
    },
    /// The database already had events; nothing was written.
    Skipped {
        /// How many events there were.
        events: i64,
    },
}

/// Seed when enabled, logging what happened; called once at start, before
/// any cache exists, so nothing needs invalidating. A failure stops the start
/// (naming `demo.seed`, the key that asked for it).
pub async fn seed_if_enabled(config: &Config, store: &Store) -> Result<(), ConfigError> {
    if !config.demo.seed {
        return Ok(());
    }
    let seeded = seed(store, &config.demo, now_ms())
        .await
        .map_err(|e| ConfigError::new("demo.seed", format!("cannot seed the demo event: {e}")))?;
    match seeded {
        Seeded::Created { event_id, campaign_id } => {
            tracing::info!(event_id, campaign_id, "seeded the demo event and its coupon campaign");
            let admitted = config.queues.iter().any(|q| q.all_events || q.events.contains(&event_id));
            if !admitted {
                // Not an error (the operator may add a queue later), but the page would answer 403.
                tracing::warn!(event_id, "no [[queues]] entry admits to the demo event; its page will answer 403");
            }
        }
        Seeded::Skipped { events } => tracing::info!(events, "the database has events; demo seeding skipped"),
    }
    Ok(())
}

/// Create the demo event and campaign unless the database has events.
pub async fn seed(store: &Store, demo: &DemoConfig, now: i64) -> Result<Seeded, StoreError> {
    match store.backend() {
        Backend::Postgres(pool) => {
            let mut lock = sqlx::PgConnection::connect_with(&pool.connect_options()).await?;
            sqlx::query("SELECT pg_advisory_lock($1)").bind(SEED_LOCK).execute(&mut lock).await?;
            let seeded = seed_unlocked(store, demo, now).await;
            // Closing the session releases the lock; if closing fails the
            // server drops the session (and the lock) when the socket goes.
            let _ = lock.close().await;
            seeded
        }
        // One writer connection per process; SQLite files are not shared by instances.
        Backend::Sqlite { .. } => seed_unlocked(store, demo, now).await,
    }
}

async fn seed_unlocked(store: &Store, demo: &DemoConfig, now: i64) -> Result<Seeded, StoreError> {
    const COUNT: &str = "SELECT count(*) FROM events";
    let events: i64 = store
        .timed("demo_count_events", async {
            match store.backend() {
                Backend::Postgres(pool) => sqlx::query_scalar(COUNT).fetch_one(pool).await,
                Backend::Sqlite { reader, .. } => sqlx::query_scalar(COUNT).fetch_one(reader).await,
            }
        })
        .await?;
    if events > 0 {
        return Ok(Seeded::Skipped { events });
    }
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let event = NewEvent {
        name: demo.event_name.clone(),
        venue: demo.venue.clone(),
        // Whole minutes read better on the page.
        starts_at: (now.saturating_add(ms(demo.starts_in)) / 60_000) * 60_000,
        rows: (0..demo.rows).map(row_label).collect(),
        seats_per_row: demo.seats_per_row,
        price_cents: demo.price_cents,
    };
    let event = store.create_event(&event, now).await?;
    let campaign = NewCampaign {
        event_id: event.id,
        name: demo.coupon_name.clone(),
        stock: demo.coupon_stock,
        // A minute in the past, so a clock a little behind still finds it open.
        opens_at: now - 60_000,
        closes_at: now.saturating_add(ms(demo.coupon_window)),
    };
    let campaign = store.create_campaign(&campaign, now).await?;
    Ok(Seeded::Created { event_id: event.id, campaign_id: campaign.id })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::DatabaseConfig;
    use crate::metrics::Metrics;

    fn small() -> DemoConfig {
        DemoConfig { seed: true, rows: 3, seats_per_row: 4, coupon_stock: 5, ..DemoConfig::default() }
    }

    async fn sqlite_store(dir: &std::path::Path) -> Store {
        let url = format!("sqlite://{}", dir.join("demo.db").display());
        Store::connect(&DatabaseConfig { url, ..DatabaseConfig::default() }, Metrics::new().unwrap()).await.unwrap()
    }

    /// A fresh PostgreSQL database at `DATABASE_URL` (default: local server, user postgres).
    async fn postgres_store() -> Store {
        let base =
            std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("demo_{:016x}", rand::random::<u64>());
        let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
        let server = base.rsplit_once('/').map_or(base.as_str(), |(s, _)| s);
        let url = format!("{server}/{name}");
        Store::connect(&DatabaseConfig { url, ..DatabaseConfig::default() }, Metrics::new().unwrap()).await.unwrap()
    }

    async fn seeding_twice_creates_one_event_and_one_campaign(store: Store) {
        let first = seed(&store, &small(), now_ms()).await.unwrap();
        let Seeded::Created { event_id, campaign_id } = first else { panic!("first seed skipped: {first:?}") };
        assert_eq!(seed(&store, &small(), now_ms()).await.unwrap(), Seeded::Skipped { events: 1 });
        let stats = store.stats(now_ms()).await.unwrap();
        assert_eq!((stats.events, stats.seats), (1, 12));
        assert_eq!(stats.campaigns.len(), 1);
        assert_eq!((stats.campaigns[0].id, stats.campaigns[0].event_id), (campaign_id, event_id));
        assert_eq!(stats.campaigns[0].stock_left, 5);
        let seats = store.seat_map(event_id).await.unwrap();
        assert_eq!(seats.first().map(|s| s.label.as_str()), Some("A1"));
        assert_eq!(seats.last().map(|s| s.label.as_str()), Some("C4"));
        let campaign = store.campaign(campaign_id).await.unwrap().unwrap();
        assert!(campaign.opens_at <= now_ms() && campaign.closes_at > now_ms() + 300 * 86_400_000);
    }

    #[tokio::test]
    async fn seeding_is_idempotent_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        seeding_twice_creates_one_event_and_one_campaign(sqlite_store(dir.path()).await).await;
    }

    #[tokio::test]
    async fn seeding_is_idempotent_on_postgres() {
        seeding_twice_creates_one_event_and_one_campaign(postgres_store().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn instances_seeding_one_postgres_database_at_once_create_one_event() {
        let store = postgres_store().await;
        let runs: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { seed(&store, &small(), now_ms()).await.unwrap() })
            })
            .collect();
        let mut created = 0;
        for run in runs {
            created += usize::from(matches!(run.await.unwrap(), Seeded::Created { .. }));
        }
        assert_eq!(created, 1);
        assert_eq!(store.stats(now_ms()).await.unwrap().events, 1);
    }

    #[tokio::test]
    async fn a_database_with_events_of_its_own_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(dir.path()).await;
        let own = NewEvent {
            name: "Mine".into(),
            venue: "Here".into(),
            starts_at: 0,
            rows: vec!["A".into()],
            seats_per_row: 1,
            price_cents: 0,
        };
        store.create_event(&own, now_ms()).await.unwrap();
        assert_eq!(seed(&store, &small(), now_ms()).await.unwrap(), Seeded::Skipped { events: 1 });
        assert!(store.stats(now_ms()).await.unwrap().campaigns.is_empty());
    }

    #[test]
    fn demo_values_are_checked_like_the_admin_api_checks_them() {
        assert!(DemoConfig::default().validate().is_ok());
        let bad = |d: DemoConfig| d.validate().unwrap_err().key;
        assert_eq!(bad(DemoConfig { rows: 0, ..DemoConfig::default() }), "demo.rows");
        assert_eq!(bad(DemoConfig { rows: 700, seats_per_row: 1000, ..DemoConfig::default() }), "demo.rows");
        assert_eq!(bad(DemoConfig { coupon_stock: 0, ..DemoConfig::default() }), "demo.coupon_stock");
        assert_eq!(bad(DemoConfig { event_name: " ".into(), ..DemoConfig::default() }), "demo.event_name");
        assert_eq!(
            bad(DemoConfig { coupon_window: Duration::from_secs(1), ..DemoConfig::default() }),
            "demo.coupon_window"
        );
    }
}
