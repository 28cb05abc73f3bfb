//! Assembling the Pingora server: the proxy service, the admission service and
//! the metrics service, sharing one [`State`].

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use pingora::proxy::http_proxy;
use pingora::server::Server;
use pingora::server::configuration::ServerConf;
use pingora::services::background::{GenBackgroundService, background_service};
use pingora::services::listening::Service;
use shared::keys::KeyDir;

use crate::admin::AdminApp;
use crate::admission::AdmissionService;
use crate::config::Config;
use crate::lane::{FastLane, LaneService};
use crate::proxy::WaitingRoom;
use crate::queues::Queues;
use crate::state::State;
use crate::upstreams::Upstreams;

/// Build the server for a validated config read from `config_path` (kept for
/// reloads). Fails only on I/O (key directory, page templates) or an upstream
/// that does not resolve.
pub fn build(config: &Config, config_path: Option<&Path>) -> anyhow::Result<Server> {
    let keys = KeyDir::open_or_create(&config.keys.dir)
        .with_context(|| format!("keys.dir: cannot use {}", config.keys.dir.display()))?;
    let upstreams = Arc::new(
        Upstreams::new(&config.resolve_upstreams()?, config.server.upstream_check_interval)
            .context("server.upstreams")?,
    );
    let state = Arc::new(
        State::new(Queues::load(&config.queues)?, keys, config.server.cookie_secure)
            .with_ws_ping_interval(config.server.ws_ping_interval)
            .with_edge(config.trusted_proxies()?, config.limits.clone())
            .with_policy(crate::edge::Policy::new(
                &config.server.allowed_methods,
                &config.server.deny_paths,
                &config.server.allowed_origins,
            )),
    );

    state.catalog.set_stock_configured(!config.stock.url.is_empty());

    let conf = ServerConf {
        threads: config.server.threads,
        work_stealing: config.server.work_stealing,
        // Pooled upstream connections are partitioned per worker thread (see
        // `proxy::worker_index`); the default of 128 in all evicted under
        // load. Admitted traffic mostly takes the fast lane and its own
        // pool, so this pool stays small: it comes out of `fd_reserve`.
        upstream_keepalive_pool_size: 256 * config.server.threads,
        // On SIGTERM the workers stop accepting at once and drain for up to
        // `server.grace_period` (drain.rs); Pingora waits for them (they
        // are joined by a blocking task) a little longer than that, and no
        // longer than it takes.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(config.server.grace_period.as_secs() + 2),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    // Pingora's proxy behind the fast lane, which hands it every request it
    // does not serve itself (all of them when `fast_lane` is off).
    let pingora = http_proxy(&server.configuration, WaitingRoom::new(state.clone(), upstreams.clone()));
    let nofile = crate::limits::open_files_limit();
    let budget = config.limits.descriptor_budget(nofile);
    tracing::info!(open_files = nofile, budget, "connection budget");
    let descriptors = crate::limits::Descriptors::new(budget);
    let lane = FastLane::new(pingora, state.clone(), upstreams.clone(), config.server.fast_lane, descriptors);
    let proxy = LaneService::bind(lane, config.resolve_listen()?, config.server.threads, config.server.sched_batch)
        .map(|s| s.with_grace_period(config.server.grace_period))
        .with_context(|| format!("server.listen: cannot listen on {}", config.server.listen))?;

    let admission = background_service(
        "admission",
        AdmissionService::new(
            state.clone(),
            config.store.clone(),
            config.server.release_ticks,
            config_path.map(Path::to_path_buf),
        )
        .with_stock(config.stock.clone()),
    );

    let mut metrics = pingora_prometheus::prometheus_http_service();
    metrics.threads = Some(1);
    metrics.add_tcp(&config.server.metrics_listen);

    if !config.admin.listen.is_empty() {
        if config.admin.token.is_empty() {
            tracing::warn!("admin API disabled: set admin.token (or WR_ADMIN__TOKEN) to enable it");
        } else {
            let app = AdminApp::new(state.clone(), config.admin.token.clone(), config_path.map(Path::to_path_buf));
            let mut admin = Service::new("admin".to_owned(), app);
            admin.threads = Some(1);
            admin.add_tcp(&config.admin.listen);
            server.add_service(admin);
        }
    }
    server.add_service(admission);
    if upstreams.all().len() > 1 {
        server.add_service(GenBackgroundService::new("BG upstream health".into(), upstreams.balancer()));
    }
    server.add_service(proxy);
    server.add_service(metrics);
    Ok(server)
}
