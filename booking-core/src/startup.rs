//! [`Application`]: everything the binary (and each test) starts.
//!
//! ```no_run
//! # async fn demo(config: booking_core::Config) -> Result<(), Box<dyn std::error::Error>> {
//! let app = booking_core::Application::build(config).await?; // config.server.listen = "127.0.0.1:0"
//! let running = app.spawn();
//! println!("listening on http://{}, operators on {:?}", running.addr, running.admin_addr);
//! running.stop().await?;
//! # Ok(()) }
//! ```
//!
//! Two listeners: the public one (`server.listen`: `/api`, the event page)
//! and the operator one (`admin.listen`: `/admin`, `/metrics`, `/healthz`),
//! so operator routes can stay on a private interface.
//!
//! Background tasks: the hold sweeper, the claim gate's reconciler (its first
//! pass runs at once), the idempotency sweeper and the seat-map fan-out.
//! Shutdown is explicit: [`ShutdownHandle::shutdown`] flips a watch channel
//! that the accept loops and every task select on; the servers then drain
//! their connections and the pools are closed.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::Auth;
use crate::catalogue::Catalogue;
use crate::catalogue::popular::Popular;
use crate::config::Config;
use crate::coupons::Coupons;
use crate::coupons::gate::ClaimGate;
use crate::fanout::{self, Fanout};
use crate::holds::Holds;
use crate::http::Listener;
use crate::metrics::Metrics;
use crate::redis_breaker::RedisLink;
use crate::state::{AppState, Services};
use crate::store::{self, Store};

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The public keys could not be read.
    #[error("keys.public_dir: {0}")]
    Keys(#[from] shared::keys::KeyError),
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] store::StartError),
    /// Redis could not be reached (`redis.url`, `redis.cluster_nodes` or `redis.sentinel`).
    #[error("redis: cannot connect: {0}")]
    Redis(#[from] redis::RedisError),
    /// A listen address could not be bound.
    #[error("{key}: cannot bind {addr}: {source}")]
    Bind {
        /// The config key.
        key: &'static str,
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// A metric could not be registered (a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] shared::config::ConfigError),
}

/// Stops a running application.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<watch::Sender<bool>>);

impl ShutdownHandle {
    /// Ask everything to stop.
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }
}

/// A built application, bound to its ports, not yet serving.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    admin: Option<(TcpListener, SocketAddr)>,
    state: AppState,
    shutdown: ShutdownHandle,
    tasks: Vec<JoinHandle<()>>,
}

impl Application {
    /// Connect, migrate, bind and start the background tasks.
    pub async fn build(config: Config) -> Result<Application, StartError> {
        let addr = config.listen_addr()?;
        let admin_addr = config.admin_addr()?;
        let metrics = Metrics::new()?;
        let auth = Auth::new(&config, metrics.clone())?;
        let store = Store::connect(&config.database, metrics.clone()).await?;
        crate::demo::seed_if_enabled(&config, &store).await?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let origin = uuid::Uuid::new_v4().simple().to_string();
        let prefix = config.redis.prefix.clone();
        let ttl_ms = i64::try_from(config.catalogue.seat_map_ttl.as_millis()).unwrap_or(i64::MAX);
        let lease_ms = i64::try_from(config.coupons.lease.as_millis()).unwrap_or(i64::MAX);

        let redis = RedisLink::connect(&config.redis).await?;
        let (fanout, popular, gate) = match &redis {
            None => (
                Fanout::disabled(),
                Popular::Local(Default::default()),
                ClaimGate::local(store.clone(), metrics.clone(), lease_ms),
            ),
            Some(link) => (
                Fanout::redis(link.clone(), format!("{prefix}:seatmap"), origin.clone(), shutdown_rx.clone()),
                Popular::redis(link.clone(), format!("{prefix}:views")),
                ClaimGate::redis(link.clone(), &prefix, store.clone(), metrics.clone(), lease_ms),
            ),
        };
        let catalogue = Catalogue::new(store.clone(), fanout, popular, ttl_ms, metrics.clone());
        let holds = Holds::new(store.clone(), catalogue.clone(), metrics.clone(), &config.holds);
        let coupons = Coupons::new(store.clone(), gate, metrics.clone(), lease_ms);

        let (listener, addr) = bind("server.listen", addr).await?;
        let admin = match admin_addr {
            Some(a) => Some(bind("admin.listen", a).await?),
            None => None,
        };
        let mut tasks = vec![
            holds.clone().spawn_sweeper(config.holds.sweep_interval, shutdown_rx.clone()),
            coupons.clone().spawn_reconciler(config.coupons.reconcile_interval, shutdown_rx.clone()),
        ];
        if let Some(link) = &redis {
            let channel = format!("{prefix}:seatmap");
            let listening = fanout::listen(link.clone(), channel, origin, catalogue.clone(), shutdown_rx.clone());
            tasks.push(listening.await?);
        }
        let services = Services { store, auth, catalogue, holds, coupons, metrics, redis };
        let state = AppState::new(config, services, shutdown_rx.clone());
        tasks.push(crate::routes::idempotency::spawn_sweeper(state.clone(), shutdown_rx));
        let admin_at = admin.as_ref().map(|(_, a)| a.to_string()).unwrap_or_else(|| "off".into());
        tracing::info!(%addr, admin = %admin_at, "booking core listening");
        Ok(Application { listener, addr, admin, state, shutdown: ShutdownHandle(Arc::new(shutdown_tx)), tasks })
    }

    /// The bound address (the real port when the config said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The operator listener's bound address, if there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(_, a)| *a)
    }

    /// The services, for in-process use (tests, the benchmark).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// A handle that stops the application.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Serve until shut down, then drain connections, stop the background
    /// tasks and close the database.
    pub async fn run_until_stopped(self) {
        let Application { listener, admin, state, shutdown, tasks, .. } = self;
        let operator = admin.map(|(listener, _)| {
            tokio::spawn(crate::server::serve(listener, Listener::Operator, state.clone(), shutdown.0.subscribe()))
        });
        crate::server::serve(listener, Listener::Public, state.clone(), shutdown.0.subscribe()).await;
        shutdown.shutdown();
        if let Some(operator) = operator {
            let _ = operator.await;
        }
        for task in tasks {
            let _ = task.await;
        }
        state.store().close().await;
        tracing::info!("booking core stopped");
    }

    /// Serve on a background task.
    pub fn spawn(self) -> RunningApp {
        let addr = self.addr;
        let admin_addr = self.admin_addr();
        let state = self.state.clone();
        let handle = self.shutdown.clone();
        let join = tokio::spawn(self.run_until_stopped());
        RunningApp { addr, admin_addr, state, handle, join }
    }
}

async fn bind(key: &'static str, addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let listener =
        TcpListener::bind(addr).await.map_err(|source| StartError::Bind { key, addr: addr.to_string(), source })?;
    let bound = listener.local_addr().map_err(|source| StartError::Bind { key, addr: addr.to_string(), source })?;
    Ok((listener, bound))
}

/// An application serving on a background task.
pub struct RunningApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where the operator listener listens (`admin.listen`), if it does.
    pub admin_addr: Option<SocketAddr>,
    /// Its services.
    pub state: AppState,
    handle: ShutdownHandle,
    join: JoinHandle<()>,
}

impl RunningApp {
    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://<admin addr><path>` (the operator listener; the public address
    /// when there is none, which then answers 404).
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr.unwrap_or(self.addr))
    }

    /// A handle that stops it.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// Stop and wait until everything has shut down.
    pub async fn stop(self) -> Result<(), tokio::task::JoinError> {
        self.handle.shutdown();
        self.join.await
    }
}
