//! [`AppState`]: the cheap `Clone` handle every request and background task
//! gets — an `Arc` around the services, each of which is itself cheap to clone.

use std::sync::Arc;

use crate::auth::Auth;
use crate::catalogue::Catalogue;
use crate::config::Config;
use crate::coupons::Coupons;
use crate::holds::Holds;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::store::Store;

/// Shared application state.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    config: Config,
    store: Store,
    auth: Auth,
    catalogue: Catalogue,
    holds: Holds,
    coupons: Coupons,
    metrics: Metrics,
    limits: Limits,
}

impl AppState {
    /// Bundle the services.
    pub fn new(
        config: Config,
        store: Store,
        auth: Auth,
        catalogue: Catalogue,
        holds: Holds,
        coupons: Coupons,
        metrics: Metrics,
    ) -> AppState {
        let limits = Limits::new(&config);
        AppState(Arc::new(Inner { config, store, auth, catalogue, holds, coupons, metrics, limits }))
    }

    /// The validated config.
    pub fn config(&self) -> &Config {
        &self.0.config
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// Entry-token verification.
    pub fn auth(&self) -> &Auth {
        &self.0.auth
    }

    /// Events, seat maps, popularity.
    pub fn catalogue(&self) -> &Catalogue {
        &self.0.catalogue
    }

    /// Seat holds and bookings.
    pub fn holds(&self) -> &Holds {
        &self.0.holds
    }

    /// Coupon claims.
    pub fn coupons(&self) -> &Coupons {
        &self.0.coupons
    }

    /// The application's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// Rate limits (per visitor, per admin client).
    pub fn limits(&self) -> &Limits {
        &self.0.limits
    }
}
