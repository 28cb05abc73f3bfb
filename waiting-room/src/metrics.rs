//! Prometheus metrics of the waiting room, served as text at `metrics_listen`
//! `/metrics` (Pingora's Prometheus service reads the default registry).
//!
//! Registered once per process on first use; label values are queue ids from
//! config and fixed words, never client input, so cardinality stays bounded.

use std::sync::LazyLock;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, exponential_buckets, register_histogram_vec,
    register_int_counter_vec, register_int_gauge_vec,
};

/// `waiting_room_token_cache_total{result="hit"}`, resolved once: it is
/// counted on every gated request.
pub static TOKEN_CACHE_HITS: LazyLock<prometheus::IntCounter> =
    LazyLock::new(|| METRICS.token_cache.with_label_values(&["hit"]));

/// All metrics of the waiting room.
pub struct Metrics {
    /// `waiting_room_waiting_visitors{queue}`
    pub waiting: IntGaugeVec,
    /// `waiting_room_active_sessions{queue}`
    pub active: IntGaugeVec,
    /// `waiting_room_joins_total{queue,outcome}`: outcome = waiting | free_entry | existing | rejoined
    pub joins: IntCounterVec,
    /// `waiting_room_admissions_total{queue,via}`: via = tick | free_entry
    pub admissions: IntCounterVec,
    /// `waiting_room_abandoned_total{queue}`
    pub abandoned: IntCounterVec,
    /// `waiting_room_ticks_total{queue}` (ticks this instance performed)
    pub ticks: IntCounterVec,
    /// `waiting_room_tick_duration_seconds{queue}`
    pub tick_duration: HistogramVec,
    /// `waiting_room_release_rate{queue}`: measured admissions per second
    pub release_rate: prometheus::GaugeVec,
    /// `waiting_room_configured_release_rate{queue}`: N / T
    pub configured_rate: prometheus::GaugeVec,
    /// `waiting_room_gate_decisions_total{queue,decision}`: allowed | redirected | rejected
    pub gate: IntCounterVec,
    /// `waiting_room_token_cache_total{result}`: hit | miss
    pub token_cache: IntCounterVec,
    /// `waiting_room_upstream_latency_seconds{status}` status class 2xx..5xx or error
    pub upstream_latency: HistogramVec,
    /// `waiting_room_requests_total{route,status}` requests the proxy answered itself
    pub requests: IntCounterVec,
    /// `waiting_room_proxied_requests_total{lane}`: requests sent upstream by
    /// the fast lane or by Pingora
    pub proxied: IntCounterVec,
    /// `waiting_room_store_errors_total{op}`
    pub store_errors: IntCounterVec,
    /// `waiting_room_ws_connections`
    pub ws_connections: prometheus::IntGauge,
    /// `waiting_room_ws_messages_total`
    pub ws_messages: prometheus::IntCounter,
    /// `waiting_room_push_delay_seconds`: from a tick to its update written to a socket
    pub push_delay: prometheus::Histogram,
    /// `waiting_room_admin_changes_total{queue,action}`
    pub admin_changes: IntCounterVec,
    /// `waiting_room_config_reloads_total{result}`: applied | rejected
    pub reloads: IntCounterVec,
    /// `waiting_room_queues`: queues running on this instance (the catalog's).
    pub queues: prometheus::IntGauge,
    /// `waiting_room_catalog_version`: the catalog version applied here.
    pub catalog_version: prometheus::IntGauge,
    /// `waiting_room_queue_paused{queue}`: 1 while releases are paused
    pub paused: IntGaugeVec,
    /// `waiting_room_release_per_tick{queue}`: configured N
    pub release_per_tick: IntGaugeVec,
    /// `waiting_room_eta_seconds{queue}`: wait estimate for the back of the line
    pub eta: IntGaugeVec,
    /// `waiting_room_sessions_ended_total{queue,reason}`: sessions the upstream
    /// ended with a purchase (`wr-session: end`)
    pub sessions_ended: IntCounterVec,
    /// `waiting_room_refused_total{reason}`: clients refused by a limit or a
    /// rule of the edge (see [`Refused`])
    pub refused: IntCounterVec,
    /// `waiting_room_store_epochs_total{queue}`: new epochs of a line seen by
    /// this instance (the store lost the line)
    pub store_epochs: IntCounterVec,
    /// `waiting_room_queue_mode{queue,mode}`: 1 for the mode each queue is in
    /// (`normal`; with the store down, `closed` or `open`, see `degraded.rs`)
    pub queue_mode: IntGaugeVec,
    /// `waiting_room_adaptive_n{queue}`: the N the controller decided for the
    /// next tick (fixed mode: the operator's N)
    pub adaptive_n: IntGaugeVec,
    /// `waiting_room_adaptive_decisions_total{queue,reason}`: decisions this
    /// instance made (one per tick across all instances), by reason
    pub adaptive_decisions: IntCounterVec,
    /// `waiting_room_upstream_window_p50_seconds{queue}`,
    /// `…_p99_seconds{queue}`: admitted requests' latency in the window the
    /// last decision judged (all instances merged)
    pub window_p50: prometheus::GaugeVec,
    /// See [`Metrics::window_p50`].
    pub window_p99: prometheus::GaugeVec,
    /// `waiting_room_upstream_window_error_ratio{queue}`: failed share of them
    pub window_errors: prometheus::GaugeVec,
    /// `waiting_room_upstream_in_flight{queue}`: admitted requests in flight
    /// at the last decision, all instances
    pub in_flight: IntGaugeVec,
    /// `waiting_room_arrivals_total{queue}`: admitted visitors whose first
    /// request came (counted by the instance that decided)
    pub arrivals: IntCounterVec,
    /// `waiting_room_no_shows_total{queue}`: admitted visitors with no request
    /// within `arrival_grace`
    pub no_shows: IntCounterVec,
    /// `waiting_room_lottery_entrants{queue}`: entrants of the queue's
    /// lottery, set by the instance that drew it
    pub lottery_entrants: IntGaugeVec,
    /// `waiting_room_stock_left{queue}`: what the booking core has left of
    /// what the queue sells (`stop_when_sold_out`), at the last reading
    pub stock_left: IntGaugeVec,
    /// `waiting_room_stock_read_failures_total`: stock readings that failed
    /// (the last one stays in force)
    pub stock_read_failures: prometheus::IntCounter,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register_int_counter_vec!(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register_int_gauge_vec!(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

fn fgauge(name: &str, help: &str, labels: &[&str]) -> prometheus::GaugeVec {
    prometheus::register_gauge_vec!(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

fn histogram(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    register_histogram_vec!(HistogramOpts::new(name, help).buckets(buckets), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

fn latency_buckets() -> Vec<f64> {
    // 0.25 ms .. ~8 s
    exponential_buckets(0.00025, 2.0, 16).unwrap_or_default()
}

/// A counter whose label values are all known up front, each series created
/// (at zero) at once: a counter first scraped at 1 hides that increment from
/// `rate()`, and a dashboard panel over a series that does not exist yet shows
/// "no data" instead of zero.
fn known_counter(name: &str, help: &str, label: &str, values: &[&str]) -> IntCounterVec {
    let c = counter(name, help, &[label]);
    for v in values {
        c.with_label_values(&[v]);
    }
    c
}

/// The process-wide metrics. Names are fixed strings, so registration can only
/// fail on a programming error (a duplicate name), which the tests would catch.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    waiting: gauge("waiting_room_waiting_visitors", "Visitors waiting in line, per queue.", &["queue"]),
    active: gauge(
        "waiting_room_active_sessions",
        "Admitted visitors whose session has not ended, per queue.",
        &["queue"],
    ),
    joins: counter("waiting_room_joins_total", "Join requests by outcome.", &["queue", "outcome"]),
    admissions: counter(
        "waiting_room_admissions_total",
        "Visitors admitted: by a tick's release, free entry, or with the store down (on_store_down = open).",
        &["queue", "via"],
    ),
    abandoned: counter(
        "waiting_room_abandoned_total",
        "Waiting visitors dropped because they left (no socket, no poll).",
        &["queue"],
    ),
    ticks: counter("waiting_room_ticks_total", "Release ticks performed by this instance.", &["queue"]),
    tick_duration: histogram(
        "waiting_room_tick_duration_seconds",
        "Time to run one release tick against the store.",
        &["queue"],
        latency_buckets(),
    ),
    release_rate: fgauge(
        "waiting_room_release_rate",
        "Measured admissions per second over recent ticks (all instances).",
        &["queue"],
    ),
    configured_rate: fgauge(
        "waiting_room_configured_release_rate",
        "Configured admissions per second (release_per_tick / tick).",
        &["queue"],
    ),
    gate: counter("waiting_room_gate_decisions_total", "Gate decisions on protected paths.", &["queue", "decision"]),
    token_cache: known_counter(
        "waiting_room_token_cache_total",
        "Entry-token cache lookups on the gate.",
        "result",
        &["hit", "miss"],
    ),
    upstream_latency: histogram(
        "waiting_room_upstream_latency_seconds",
        "Time from sending a request upstream to the end of the proxied response.",
        &["status"],
        latency_buckets(),
    ),
    requests: counter(
        "waiting_room_requests_total",
        "Requests answered by the waiting room itself.",
        &["route", "status"],
    ),
    proxied: known_counter(
        "waiting_room_proxied_requests_total",
        "Requests sent to the upstream, by the lane that forwarded them.",
        "lane",
        &["fast", "pingora"],
    ),
    store_errors: known_counter(
        "waiting_room_store_errors_total",
        "Queue store calls that failed.",
        "op",
        &["join", "status", "release", "standings", "touch"],
    ),
    ws_connections: prometheus::register_int_gauge!(
        "waiting_room_ws_connections",
        "Open queue WebSockets on this instance."
    )
    .unwrap_or_else(|e| panic!("metric waiting_room_ws_connections: {e}")),
    ws_messages: prometheus::register_int_counter!(
        "waiting_room_ws_messages_total",
        "Messages pushed over queue WebSockets."
    )
    .unwrap_or_else(|e| panic!("metric waiting_room_ws_messages_total: {e}")),
    push_delay: prometheus::register_histogram!(
        HistogramOpts::new(
            "waiting_room_push_delay_seconds",
            "Delay from a release tick to its update written to a WebSocket."
        )
        .buckets(latency_buckets())
    )
    .unwrap_or_else(|e| panic!("metric waiting_room_push_delay_seconds: {e}")),
    admin_changes: counter(
        "waiting_room_admin_changes_total",
        "Operator changes to queue settings, by action.",
        &["queue", "action"],
    ),
    queues: prometheus::register_int_gauge!("waiting_room_queues", "Queues running on this instance.")
        .unwrap_or_else(|e| panic!("metric waiting_room_queues: {e}")),
    catalog_version: prometheus::register_int_gauge!(
        "waiting_room_catalog_version",
        "Version of the catalog of queues applied on this instance (every instance should agree)."
    )
    .unwrap_or_else(|e| panic!("metric waiting_room_catalog_version: {e}")),
    reloads: known_counter(
        "waiting_room_config_reloads_total",
        "Config reloads on SIGHUP, by result.",
        "result",
        &["applied", "rejected"],
    ),
    paused: gauge("waiting_room_queue_paused", "1 while an operator has paused releases of the queue.", &["queue"]),
    release_per_tick: gauge(
        "waiting_room_release_per_tick",
        "Visitors released per tick (N), as currently set.",
        &["queue"],
    ),
    eta: gauge(
        "waiting_room_eta_seconds",
        "Wait estimate for a visitor joining the back of the line now (0 when nobody waits).",
        &["queue"],
    ),
    queue_mode: gauge(
        "waiting_room_queue_mode",
        "1 for the mode each queue is in: normal, or with the queue store down closed or open (on_store_down).",
        &["queue", "mode"],
    ),
    adaptive_n: gauge(
        "waiting_room_adaptive_n",
        "The N the admission controller set for the next tick (fixed mode: the operator's N).",
        &["queue"],
    ),
    adaptive_decisions: counter(
        "waiting_room_adaptive_decisions_total",
        "Admission decisions made by this instance (one per tick across instances), by reason.",
        &["queue", "reason"],
    ),
    window_p50: fgauge(
        "waiting_room_upstream_window_p50_seconds",
        "Median latency of admitted requests to the upstream in the last decision's window, all instances.",
        &["queue"],
    ),
    window_p99: fgauge(
        "waiting_room_upstream_window_p99_seconds",
        "99th-percentile latency of admitted requests to the upstream in the last decision's window.",
        &["queue"],
    ),
    window_errors: fgauge(
        "waiting_room_upstream_window_error_ratio",
        "Share of admitted requests that failed (5xx, timeout, refused) in the last decision's window.",
        &["queue"],
    ),
    in_flight: gauge(
        "waiting_room_upstream_in_flight",
        "Admitted requests in flight to the upstream at the last decision, all instances.",
        &["queue"],
    ),
    arrivals: counter(
        "waiting_room_arrivals_total",
        "Admitted visitors whose first request to a protected path arrived.",
        &["queue"],
    ),
    no_shows: counter(
        "waiting_room_no_shows_total",
        "Admitted visitors who made no request within arrival_grace of their admission.",
        &["queue"],
    ),
    stock_read_failures: prometheus::register_int_counter!(
        "waiting_room_stock_read_failures_total",
        "Readings of the booking core's stock that failed (the last reading stays in force)."
    )
    .unwrap_or_else(|e| panic!("metric waiting_room_stock_read_failures_total: {e}")),
    stock_left: gauge(
        "waiting_room_stock_left",
        "What the booking core has left of what the queue sells (stop_when_sold_out), at the last reading.",
        &["queue"],
    ),
    lottery_entrants: gauge(
        "waiting_room_lottery_entrants",
        "Entrants of the queue's pre-queue lottery (set on the instance that drew it).",
        &["queue"],
    ),
    store_epochs: counter(
        "waiting_room_store_epochs_total",
        "Times this instance saw a queue's line in the store start a new epoch (the store lost the line).",
        &["queue"],
    ),
    sessions_ended: counter(
        "waiting_room_sessions_ended_total",
        "Sessions the upstream ended with a purchase, by reason.",
        &["queue", "reason"],
    ),
    refused: known_counter(
        "waiting_room_refused_total",
        "Clients refused at the edge, by reason (a limit, a malformed or forbidden request).",
        "reason",
        &Refused::ALL.map(Refused::label),
    ),
});

/// Why the proxy refused a client (the `reason` label of
/// `waiting_room_refused_total`). A fixed set, so every series exists from
/// the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Over the process-wide connection cap.
    Connections,
    /// Over the per-client connection cap.
    ClientConnections,
    /// The request head did not arrive in time.
    HeadTimeout,
    /// The request head is larger than allowed.
    HeadTooLarge,
    /// More header fields than allowed.
    TooManyHeaders,
    /// Not a valid HTTP/1.x request head.
    Malformed,
    /// A request body did not arrive in time.
    BodyTimeout,
    /// A method outside `server.allowed_methods`.
    Method,
    /// A path that is not in canonical form.
    Path,
    /// An internal endpoint of the upstream (`server.deny_paths`).
    InternalPath,
    /// Over the per-client cap on queue WebSockets.
    ClientWebsockets,
    /// A WebSocket from an origin not allowed.
    Origin,
    /// New visitor ids minted too fast by one client.
    NewVisitorRate,
    /// Joins too fast by one client.
    JoinRate,
    /// Too many waiting places held by one client.
    ClientPlaces,
    /// A join without a valid proof-of-work answer.
    Challenge,
    /// A failed or throttled operator bearer token.
    AdminAuth,
}

impl Refused {
    /// Every reason, in label order.
    pub const ALL: [Refused; 17] = [
        Refused::Connections,
        Refused::ClientConnections,
        Refused::HeadTimeout,
        Refused::HeadTooLarge,
        Refused::TooManyHeaders,
        Refused::Malformed,
        Refused::BodyTimeout,
        Refused::Method,
        Refused::Path,
        Refused::InternalPath,
        Refused::ClientWebsockets,
        Refused::Origin,
        Refused::NewVisitorRate,
        Refused::JoinRate,
        Refused::ClientPlaces,
        Refused::Challenge,
        Refused::AdminAuth,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Refused::Connections => "connections",
            Refused::ClientConnections => "client_connections",
            Refused::HeadTimeout => "head_timeout",
            Refused::HeadTooLarge => "head_too_large",
            Refused::TooManyHeaders => "too_many_headers",
            Refused::Malformed => "malformed",
            Refused::BodyTimeout => "body_timeout",
            Refused::Method => "method",
            Refused::Path => "path",
            Refused::InternalPath => "internal_path",
            Refused::ClientWebsockets => "client_websockets",
            Refused::Origin => "origin",
            Refused::NewVisitorRate => "new_visitor_rate",
            Refused::JoinRate => "join_rate",
            Refused::ClientPlaces => "client_places",
            Refused::Challenge => "challenge",
            Refused::AdminAuth => "admin_auth",
        }
    }

    /// Count one refusal.
    pub fn count(self) {
        METRICS.refused.with_label_values(&[self.label()]).inc();
    }
}
