//! Prometheus metrics, all named `booking_core_…`, in a registry owned by one
//! application (not the process-global default) so that several instances in
//! one test process never collide.
//!
//! Most metrics are counted where things happen. Coupon stock left is read
//! from the database when `/metrics` is scraped instead: the database is the
//! only place that knows what every instance has issued, so each instance
//! reports the same truth (dashboards take the `max` across instances).

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Least time between two stock reads: scrapes must not turn into a way to
/// load the database.
const STOCK_REFRESH_EVERY: Duration = Duration::from_secs(1);
/// Longest a scrape waits for the stock read before serving the last values.
const STOCK_REFRESH_TIMEOUT: Duration = Duration::from_secs(2);

/// Every metric the booking core exports. Cloning is cheap: each metric is an
/// `Arc` inside.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Request latency by route template and method.
    pub http_duration: HistogramVec,
    /// Responses by route template, method and status code.
    pub http_responses: IntCounterVec,
    /// Seat holds granted.
    pub holds: IntCounter,
    /// Hold attempts refused because the seat was taken.
    pub hold_conflicts: IntCounter,
    /// Holds confirmed into bookings.
    pub confirms: IntCounter,
    /// Holds released by their visitor.
    pub releases: IntCounter,
    /// Expired holds the sweeper turned back into available seats.
    pub expiries: IntCounter,
    /// Coupon claims committed.
    pub claims: IntCounter,
    /// Claims refused because the campaign is sold out.
    pub sold_out: IntCounter,
    /// Claims refused because the visitor already has one.
    pub claim_duplicates: IntCounter,
    /// Gate rebuilds from the database (Redis lost its keys, or first use).
    pub gate_rebuilds: IntCounter,
    /// Gate admissions undone because the database did not commit the claim.
    pub gate_undos: IntCounter,
    /// Gate calls that failed (Redis unreachable) and fell back to the database.
    pub gate_errors: IntCounter,
    /// Expired gate leases the reconciler settled, by outcome (`claimed`: the
    /// database had the claim; `returned`: back to stock).
    pub expired_leases: IntCounterVec,
    /// Requests refused by the entry-token check, by reason.
    pub auth_failures: IntCounterVec,
    /// Seat maps served from the local cache.
    pub cache_hits: IntCounter,
    /// Seat maps loaded from the database.
    pub cache_misses: IntCounter,
    /// Connections in the database pool (sampled at scrape time).
    pub pool_size: IntGauge,
    /// Idle connections in the database pool (sampled at scrape time).
    pub pool_idle: IntGauge,
    /// Database statement latency by operation.
    pub db_duration: HistogramVec,
    /// Coupon codes not yet claimed, per campaign still open or upcoming
    /// (read from the database at scrape time, see [`Metrics::refresh_stock_left`]).
    pub stock_left: IntGaugeVec,
    /// Coupon codes in total, per campaign still open or upcoming (with
    /// `stock_left`, the share issued).
    pub stock: IntGaugeVec,
    /// When the stock was last read. A tokio mutex, held across the read, so
    /// concurrent scrapes skip the read instead of queuing more of them.
    stock_read_at: Arc<tokio::sync::Mutex<Option<Instant>>>,
}

impl Metrics {
    /// Create and register every metric in a fresh registry.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(format!("booking_core_{name}"), help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(format!("booking_core_{name}"), help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let http_duration = HistogramVec::new(
            HistogramOpts::new("booking_core_http_request_duration_seconds", "HTTP request latency by route template")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            &["route", "method"],
        )?;
        registry.register(Box::new(http_duration.clone()))?;
        let http_responses = IntCounterVec::new(
            Opts::new("booking_core_http_responses_total", "HTTP responses by route template, method and status"),
            &["route", "method", "status"],
        )?;
        registry.register(Box::new(http_responses.clone()))?;
        let auth_failures = IntCounterVec::new(
            Opts::new("booking_core_auth_failures_total", "Requests refused by the entry-token check, by reason"),
            &["reason"],
        )?;
        registry.register(Box::new(auth_failures.clone()))?;
        let expired_leases = IntCounterVec::new(
            Opts::new("booking_core_gate_expired_leases_total", "Expired claim gate leases settled, by outcome"),
            &["outcome"],
        )?;
        registry.register(Box::new(expired_leases.clone()))?;
        for outcome in ["claimed", "returned"] {
            expired_leases.with_label_values(&[outcome]);
        }
        let db_duration = HistogramVec::new(
            HistogramOpts::new("booking_core_db_query_duration_seconds", "Database statement latency by operation")
                .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0]),
            &["op"],
        )?;
        registry.register(Box::new(db_duration.clone()))?;
        let stock_left = IntGaugeVec::new(
            Opts::new(
                "booking_core_coupon_stock_left",
                "Coupon codes not yet claimed, per campaign that has not closed (read from the database)",
            ),
            &["campaign"],
        )?;
        registry.register(Box::new(stock_left.clone()))?;
        let stock = IntGaugeVec::new(
            Opts::new(
                "booking_core_coupon_stock",
                "Coupon codes in total, per campaign that has not closed (read from the database)",
            ),
            &["campaign"],
        )?;
        registry.register(Box::new(stock.clone()))?;
        Ok(Metrics {
            http_duration,
            http_responses,
            holds: counter("holds_total", "Seat holds granted")?,
            hold_conflicts: counter("hold_conflicts_total", "Hold attempts refused because the seat was taken")?,
            confirms: counter("confirms_total", "Holds confirmed into bookings")?,
            releases: counter("releases_total", "Holds released by their visitor")?,
            expiries: counter("hold_expiries_total", "Expired holds returned to available by the sweeper")?,
            claims: counter("claims_total", "Coupon claims committed to the database")?,
            sold_out: counter("claims_sold_out_total", "Coupon claims refused because the campaign is sold out")?,
            claim_duplicates: counter("claim_duplicates_total", "Coupon claims refused because the visitor has one")?,
            gate_rebuilds: counter("gate_rebuilds_total", "Claim gate rebuilds from the database")?,
            gate_undos: counter("gate_undos_total", "Claim gate admissions undone after a failed commit")?,
            gate_errors: counter("gate_errors_total", "Claim gate calls that failed and fell back to the database")?,
            expired_leases,
            auth_failures,
            cache_hits: counter("seat_map_cache_hits_total", "Seat maps served from the local cache")?,
            cache_misses: counter("seat_map_cache_misses_total", "Seat maps loaded from the database")?,
            pool_size: gauge("db_pool_connections", "Connections open in the database pool")?,
            pool_idle: gauge("db_pool_idle_connections", "Idle connections in the database pool")?,
            db_duration,
            stock_left,
            stock,
            stock_read_at: Arc::new(tokio::sync::Mutex::new(None)),
            registry,
        })
    }

    /// Read the stock (total and left) of every campaign that has not closed
    /// into `booking_core_coupon_stock` and `booking_core_coupon_stock_left`,
    /// at most once per second; a failed or slow read keeps the previous
    /// values (a scrape never fails for it).
    ///
    /// `read` gives `(campaign, stock, left)` rows (`Store::stock_left`); it is
    /// passed in rather than the store, which records its own timings here.
    pub async fn refresh_stock_left<F, E>(&self, read: impl FnOnce() -> F)
    where
        F: Future<Output = Result<Vec<(i64, i64, i64)>, E>>,
        E: Display,
    {
        let Ok(mut read_at) = self.stock_read_at.try_lock() else { return };
        if read_at.is_some_and(|at| at.elapsed() < STOCK_REFRESH_EVERY) {
            return;
        }
        *read_at = Some(Instant::now());
        match tokio::time::timeout(STOCK_REFRESH_TIMEOUT, read()).await {
            Ok(Ok(campaigns)) => {
                // Reset first so closed campaigns leave the page.
                self.stock.reset();
                self.stock_left.reset();
                for (campaign, stock, left) in campaigns {
                    let label = campaign.to_string();
                    self.stock.with_label_values(&[&label]).set(stock);
                    self.stock_left.with_label_values(&[&label]).set(left);
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot read coupon stock for /metrics"),
            Err(_) => tracing::warn!("reading coupon stock for /metrics timed out"),
        }
    }

    /// The registry in the Prometheus text format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on a malformed metric family, which
        // the registry refuses at registration; an empty page is the fallback.
        if TextEncoder::new().encode(&self.registry.gather(), &mut out).is_err() {
            out.clear();
        }
        out
    }
}
