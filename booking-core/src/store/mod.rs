//! The database: one [`Store`] over PostgreSQL or SQLite.
//!
//! Most statements are written once and run on both backends (both accept
//! `$1` placeholders, `RETURNING` and `ON CONFLICT`); where the backends
//! differ (identity columns, `FOR UPDATE SKIP LOCKED`, data-modifying CTEs,
//! series generation) each module says so next to the two statements. The
//! behaviour test suite runs against both, so they cannot drift apart.
//!
//! SQLite gets one writer connection and a pool of readers: SQLite serializes
//! writers anyway, and a single writer turns lock contention (`SQLITE_BUSY`)
//! into a queue in the pool instead of errors.
//!
//! Timestamps are epoch milliseconds (`BIGINT`) on both backends.

use std::future::Future;
use std::str::FromStr;
use std::time::Instant;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::config::DatabaseConfig;
use crate::metrics::Metrics;

pub mod admin;
pub mod catalogue;
pub mod coupons;
pub mod holds;
pub mod idempotency;

pub use admin::{CampaignStats, Stats};
pub use catalogue::{EventRow, SeatRow};
pub use coupons::{CampaignRow, ClaimRow};
pub use holds::{BookingRow, HoldRow};
pub use idempotency::{IdempotencyRecord, Started};

/// PostgreSQL migrations, applied at start.
static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
/// SQLite migrations, applied at start.
static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Canonical name of a foreign-key violation on SQLite, which does not say
/// which constraint failed.
pub const FOREIGN_KEY: &str = "foreign_key";

/// Why a statement failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A named constraint refused the write; callers map the name to a 4xx.
    #[error("constraint {0} violated")]
    Constraint(String),
    /// The database could not be reached in time (pool timeout, I/O, shut down).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else: a bug or a schema mismatch.
    #[error("database error: {0}")]
    Other(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let Some(name) = constraint_name(&e) {
            return StoreError::Constraint(name);
        }
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                StoreError::Unavailable(e)
            }
            other => StoreError::Other(other),
        }
    }
}

/// SQLite reports unique violations by column list, not by name; this table
/// gives them the names the PostgreSQL schema uses, so callers match one name.
const SQLITE_UNIQUE: &[(&str, &str)] = &[
    ("coupon_codes.visitor_id, coupon_codes.campaign_id", "coupon_codes_campaign_visitor_key"),
    ("coupon_codes.code", "coupon_codes_code_key"),
    ("bookings.seat_id", "bookings_seat_key"),
    ("bookings.hold_id", "bookings_hold_key"),
    ("seats.event_id, seats.label", "seats_event_label_key"),
    ("holds.id", "holds_pkey"),
];

fn constraint_name(e: &sqlx::Error) -> Option<String> {
    let db = e.as_database_error()?;
    if let Some(name) = db.constraint() {
        return Some(name.to_owned());
    }
    let message = db.message();
    if let Some(columns) = message.strip_prefix("UNIQUE constraint failed: ") {
        let name = SQLITE_UNIQUE.iter().find(|(cols, _)| *cols == columns).map(|(_, n)| *n).unwrap_or("unique");
        return Some(name.to_owned());
    }
    if message.starts_with("FOREIGN KEY constraint failed") {
        return Some(FOREIGN_KEY.to_owned());
    }
    if let Some(name) = message.strip_prefix("CHECK constraint failed: ") {
        return Some(name.to_owned());
    }
    None
}

/// The connection pools of one backend.
#[derive(Debug, Clone)]
pub enum Backend {
    /// PostgreSQL: one pool.
    Postgres(PgPool),
    /// SQLite: a single writer connection and a pool of readers on one file.
    Sqlite {
        /// The only connection that writes.
        writer: SqlitePool,
        /// Connections for plain reads.
        reader: SqlitePool,
    },
}

/// The database handle: cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    metrics: Metrics,
}

/// Run `$body` with `$pool` bound to the backend's pool for writes (or
/// transactional reads). Both arms are the same code, type-checked per backend.
macro_rules! on_writer {
    ($store:expr, $op:literal, |$pool:ident| $body:expr) => {
        $store
            .timed($op, async {
                match &$store.backend {
                    $crate::store::Backend::Postgres($pool) => $body,
                    $crate::store::Backend::Sqlite { writer: $pool, .. } => $body,
                }
            })
            .await
    };
}

/// Like `on_writer!`, on the pool for plain reads.
macro_rules! on_reader {
    ($store:expr, $op:literal, |$pool:ident| $body:expr) => {
        $store
            .timed($op, async {
                match &$store.backend {
                    $crate::store::Backend::Postgres($pool) => $body,
                    $crate::store::Backend::Sqlite { reader: $pool, .. } => $body,
                }
            })
            .await
    };
}

pub(crate) use {on_reader, on_writer};

impl Store {
    /// Connect to the configured database and apply its migrations.
    pub async fn connect(config: &DatabaseConfig, metrics: Metrics) -> Result<Store, StartError> {
        let backend = if config.is_postgres() {
            let pool = PgPoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(config.acquire_timeout)
                .connect(&config.url)
                .await
                .map_err(StartError::Connect)?;
            PG_MIGRATOR.run(&pool).await?;
            Backend::Postgres(pool)
        } else {
            let options = SqliteConnectOptions::from_str(&config.url)
                .map_err(StartError::Connect)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(config.acquire_timeout);
            if let Some(parent) = options.get_filename().parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| StartError::Connect(sqlx::Error::Io(e)))?;
            }
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(config.acquire_timeout)
                .connect_with(options.clone())
                .await
                .map_err(StartError::Connect)?;
            SQLITE_MIGRATOR.run(&writer).await?;
            let reader = SqlitePoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(config.acquire_timeout)
                .connect_with(options)
                .await
                .map_err(StartError::Connect)?;
            Backend::Sqlite { writer, reader }
        };
        Ok(Store { backend, metrics })
    }

    /// The pools, for tools (the benchmark) that run their own statements.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// True on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Time one statement (or transaction) under the `op` label and map its error.
    pub(crate) async fn timed<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = fut.await;
        self.metrics.db_duration.with_label_values(&[op]).observe(started.elapsed().as_secs_f64());
        result.map_err(StoreError::from)
    }

    /// `SELECT 1`: does the database answer?
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_reader!(self, "ping", |pool| sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
    }

    /// Sample the pool gauges (called when `/metrics` is scraped).
    pub fn sample_pool(&self) {
        let (size, idle) = match &self.backend {
            Backend::Postgres(p) => (p.size(), p.num_idle()),
            Backend::Sqlite { writer, reader } => {
                (writer.size() + reader.size(), writer.num_idle().saturating_add(reader.num_idle()))
            }
        };
        self.metrics.pool_size.set(i64::from(size));
        self.metrics.pool_idle.set(i64::try_from(idle).unwrap_or(i64::MAX));
    }

    /// Close every pool, waiting for checked-out connections to come back.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Postgres(p) => p.close().await,
            Backend::Sqlite { writer, reader } => {
                reader.close().await;
                writer.close().await;
            }
        }
    }
}

/// Why the store could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened.
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    /// A migration failed.
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}
