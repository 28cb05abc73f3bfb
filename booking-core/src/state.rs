//! [`AppState`]: the cheap `Clone` handle every request and background task
//! gets — an `Arc` around the services, each of which is itself cheap to clone.

use std::sync::Arc;

use tokio::sync::watch;

use crate::auth::Auth;
use crate::catalogue::Catalogue;
use crate::config::Config;
use crate::coupons::Coupons;
use crate::holds::Holds;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::redis_breaker::RedisLink;
use crate::store::Store;

/// Shared application state.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The services [`AppState`] bundles.
pub struct Services {
    /// The database.
    pub store: Store,
    /// Entry-token verification.
    pub auth: Auth,
    /// Events, seat maps, popularity.
    pub catalogue: Catalogue,
    /// Seat holds and bookings.
    pub holds: Holds,
    /// Coupon claims.
    pub coupons: Coupons,
    /// The application's metrics.
    pub metrics: Metrics,
    /// The Redis connection, when `[redis]` names one (readiness pings it).
    pub redis: Option<RedisLink>,
}

struct Inner {
    config: Config,
    services: Services,
    limits: Limits,
    /// Flips to true when shutdown starts (readiness then answers 503).
    shutdown: watch::Receiver<bool>,
}

impl AppState {
    /// Bundle the services; `shutdown` flips when the application stops.
    pub fn new(config: Config, services: Services, shutdown: watch::Receiver<bool>) -> AppState {
        let limits = Limits::new(&config);
        AppState(Arc::new(Inner { config, services, limits, shutdown }))
    }

    /// The validated config.
    pub fn config(&self) -> &Config {
        &self.0.config
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.0.services.store
    }

    /// Entry-token verification.
    pub fn auth(&self) -> &Auth {
        &self.0.services.auth
    }

    /// Events, seat maps, popularity.
    pub fn catalogue(&self) -> &Catalogue {
        &self.0.services.catalogue
    }

    /// Seat holds and bookings.
    pub fn holds(&self) -> &Holds {
        &self.0.services.holds
    }

    /// Coupon claims.
    pub fn coupons(&self) -> &Coupons {
        &self.0.services.coupons
    }

    /// The application's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.0.services.metrics
    }

    /// The Redis connection, if Redis is configured.
    pub fn redis(&self) -> Option<&RedisLink> {
        self.0.services.redis.as_ref()
    }

    /// True once shutdown has started.
    pub fn shutting_down(&self) -> bool {
        *self.0.shutdown.borrow()
    }

    /// Rate limits (per visitor, per admin client).
    pub fn limits(&self) -> &Limits {
        &self.0.limits
    }
}
