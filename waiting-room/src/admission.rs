//! The admission service: connects the queue store, then runs one ticker per
//! queue that asks the store to release the next batch whenever a tick is due.
//!
//! Every instance runs tickers for every queue; the store decides (atomically,
//! on its own clock) whether a tick is due, so instances need no coordination
//! and a dead instance costs nothing. Each call returns how long until the next
//! tick, so tickers sleep exactly that long (capped at a second, so settings
//! changed by an operator apply promptly and gauges stay fresh).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::{Backend, StoreConfig};
use crate::control;
use crate::metrics::METRICS;
use crate::push;
use crate::queues::Queue;
use crate::state::State;
use crate::store::redis::{Event, RedisStore, events_channel};
use crate::store::{QueueStore, Release};
use shared::backoff::Backoff;

/// Background service running the tickers.
pub struct AdmissionService {
    state: Arc<State>,
    store: StoreConfig,
    release_ticks: bool,
    config_path: Option<PathBuf>,
    stock: crate::config::StockConfig,
}

impl AdmissionService {
    /// The service for `state`, using the store described by `store`.
    pub fn new(state: Arc<State>, store: StoreConfig, release_ticks: bool, config_path: Option<PathBuf>) -> Self {
        AdmissionService { state, store, release_ticks, config_path, stock: Default::default() }
    }

    /// Also follow the booking core's stock (queues with `stop_when_sold_out`).
    pub fn with_stock(mut self, stock: crate::config::StockConfig) -> Self {
        self.stock = stock;
        self
    }

    /// The store, once it answers (Redis may come up after the proxy).
    async fn connect(&self, shutdown: &mut ShutdownWatch) -> Option<Arc<dyn QueueStore>> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match crate::store::open(&self.store).await {
                Ok(store) => return Some(store),
                Err(e) => tracing::warn!(error = %e, "cannot connect to Redis yet; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_pause()) => {}
                _ = shutdown.changed() => return None,
            }
        }
    }
}

#[async_trait]
impl BackgroundService for AdmissionService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(store) = self.connect(&mut shutdown).await else { return };
        self.state.set_store(store.clone());
        // Live settings saved by an operator win over this instance's file.
        for q in self.state.queues.all() {
            control::sync(&self.state, &q).await;
        }
        // The catalog in the store wins over the file's queue list too; from
        // here on queues come and go with it, each with its own tasks.
        let runner = Runner {
            state: self.state.clone(),
            store,
            release_ticks: self.release_ticks,
            runtime: tokio::runtime::Handle::current(),
        };
        crate::catalog::start(&self.state, Arc::new(move |q: &Arc<Queue>| runner.start(q))).await;
        let mut tasks = vec![
            tokio::spawn(crate::reload::watch_sighup(self.state.clone(), self.config_path.clone())),
            tokio::spawn(crate::stock::poll(self.state.clone(), self.stock.clone())),
            tokio::spawn(crate::catalog::watch(self.state.clone())),
        ];
        if self.store.backend == Backend::Redis {
            tasks.push(tokio::spawn(listen_for_ticks(self.state.clone(), self.store.clone())));
        }
        let _ = shutdown.changed().await;
        for t in tasks {
            t.abort();
        }
        for q in self.state.queues.all() {
            q.stop_tasks();
        }
    }
}

/// Starts a queue's tasks on this instance: when the store is connected,
/// and when the catalog adds or redefines a queue (`catalog.rs`). The tasks
/// run on the admission service's runtime whichever service asked.
struct Runner {
    state: Arc<State>,
    store: Arc<dyn QueueStore>,
    release_ticks: bool,
    runtime: tokio::runtime::Handle,
}

impl Runner {
    fn start(&self, q: &Arc<Queue>) {
        let (state, store, rt) = (&self.state, &self.store, &self.runtime);
        q.hold_task(rt.spawn(sync_settings(state.clone(), q.clone())).abort_handle());
        if self.release_ticks {
            q.hold_task(rt.spawn(ticker(state.clone(), q.clone(), store.clone())).abort_handle());
        }
        q.hold_task(rt.spawn(push::mark_seen(state.clone(), q.clone())).abort_handle());
        if q.def().schedule.has_lottery() {
            q.hold_task(rt.spawn(lottery(state.clone(), q.clone(), store.clone())).abort_handle());
        }
    }
}

/// What to do with a tick's result on this instance.
pub fn observe(queue: &Queue, r: &Release) {
    let id = queue.id();
    METRICS.waiting.with_label_values(&[id]).set(i64::try_from(r.waiting).unwrap_or(i64::MAX));
    METRICS.active.with_label_values(&[id]).set(i64::try_from(r.active).unwrap_or(i64::MAX));
    METRICS.configured_rate.with_label_values(&[id]).set(queue.configured_rate());
    METRICS.paused.with_label_values(&[id]).set(i64::from(queue.paused()));
    METRICS.release_per_tick.with_label_values(&[id]).set(i64::try_from(queue.current_n()).unwrap_or(i64::MAX));
    // Every call reports the last tick's pressure, also when another
    // instance performed it.
    queue.note_pressure(r.joined);
    if r.ticked {
        queue.estimate.record(r.tick, r.now_ms, r.released.len() as u64, r.waiting);
        METRICS.ticks.with_label_values(&[id]).inc();
        METRICS.admissions.with_label_values(&[id, "tick"]).inc_by(r.released.len() as u64);
        METRICS.abandoned.with_label_values(&[id]).inc_by(r.abandoned);
    }
    if let Some(rate) = queue.estimate.rate() {
        METRICS.release_rate.with_label_values(&[id]).set(rate);
    }
    // The same estimate a visitor joining now would be shown.
    let eta = if r.waiting == 0 { 0 } else { queue.eta_seconds(r.waiting, r.now_ms) };
    METRICS.eta.with_label_values(&[id]).set(i64::try_from(eta).unwrap_or(i64::MAX));
}

/// The line's epoch as the store reports it: on a new one (the store lost
/// the line) tick tracking starts again and every socket hears its standing.
fn epoch_seen(state: &Arc<State>, queue: &Arc<Queue>, epoch: u64) {
    if push::on_epoch(state, queue, epoch) {
        queue.estimate.restart();
        let (state, queue2) = (state.clone(), queue.clone());
        tokio::spawn(async move { control::restore(&state, &queue2).await });
        METRICS.store_epochs.with_label_values(&[queue.id()]).inc();
        tracing::warn!(
            queue = queue.id(),
            epoch = %crate::store::redis::epoch_id(epoch),
            "the queue store lost the line (new epoch): visitors rejoin with their queue tickets"
        );
    }
}

/// Hand this instance's measurements since the last report to the store,
/// into the window the next tick closes. A report the store did not take is
/// kept for the next call.
async fn report(queue: &Queue, store: &Arc<dyn QueueStore>) {
    // A store known to be down would only make the tick wait.
    if store.known_down() {
        return;
    }
    let r = queue.signals.take(crate::signals::instance());
    if !queue.signals.worth_reporting(&r) {
        return;
    }
    if let Err(e) = store.report(queue.id(), &r).await {
        METRICS.store_errors.with_label_values(&["report"]).inc();
        tracing::debug!(queue = queue.id(), error = %e, "report failed; kept for the next");
        queue.signals.put_back(r);
        return;
    }
    queue.signals.reported(&r);
}

/// This call ticked and got the tick's merged window: decide the next N
/// (once per tick across instances) and save it for every instance.
async fn decide(queue: &Queue, store: &Arc<dyn QueueStore>, r: &Release, window: &crate::store::Window) {
    let id = queue.id();
    let tick_ms = u64::try_from(queue.admission().tick.as_millis()).unwrap_or(u64::MAX);
    let signals = crate::adaptive::Signals::from_window(window, r.waiting, r.released.len() as u64, tick_ms);
    let record = crate::adaptive::next(r.decision.as_ref(), &queue.admission(), r.tick, signals);
    METRICS.adaptive_decisions.with_label_values(&[id, &record.reason]).inc();
    METRICS.arrivals.with_label_values(&[id]).inc_by(window.arrived);
    METRICS.no_shows.with_label_values(&[id]).inc_by(r.no_shows);
    tracing::debug!(
        queue = id,
        tick = r.tick,
        n = record.n,
        reason = %record.reason,
        p50_ms = signals.p50_ms,
        p99_ms = signals.p99_ms,
        queue_ms = signals.queue_ms(),
        in_flight = signals.in_flight,
        samples = signals.samples,
        errors = signals.error_rate,
        "admission decision"
    );
    match store.save_decision(id, &record).await {
        Ok(_) => show_decision(queue, &record),
        Err(e) => {
            // The next tick then runs on the previous decision: a hold.
            METRICS.store_errors.with_label_values(&["save_decision"]).inc();
            tracing::warn!(queue = id, error = %e, "cannot save the admission decision");
        }
    }
}

/// The last decision saved, on this instance's gauges (every instance shows
/// the same one, whichever made it).
fn show_decision(queue: &Queue, d: &crate::adaptive::Record) {
    let id = queue.id();
    queue.note_decision(d);
    METRICS.adaptive_n.with_label_values(&[id]).set(i64::try_from(d.n).unwrap_or(i64::MAX));
    METRICS.window_p50.with_label_values(&[id]).set(d.signals.p50_ms / 1000.0);
    METRICS.window_p99.with_label_values(&[id]).set(d.signals.p99_ms / 1000.0);
    METRICS.window_errors.with_label_values(&[id]).set(d.signals.error_rate);
    METRICS.in_flight.with_label_values(&[id]).set(i64::try_from(d.signals.in_flight).unwrap_or(i64::MAX));
}

async fn ticker(state: Arc<State>, queue: Arc<Queue>, store: Arc<dyn QueueStore>) {
    loop {
        let params = queue.params();
        let started = Instant::now();
        report(&queue, &store).await;
        let released = store.release(queue.id(), &params).await;
        crate::degraded::observe(&state, &queue);
        let pause = match released {
            Ok(r) => {
                if r.ticked {
                    METRICS.tick_duration.with_label_values(&[queue.id()]).observe(started.elapsed().as_secs_f64());
                    tracing::debug!(
                        queue = queue.id(),
                        tick = r.tick,
                        released = r.released.len(),
                        abandoned = r.abandoned,
                        waiting = r.waiting,
                        "tick"
                    );
                }
                epoch_seen(&state, &queue, r.epoch);
                match &r.window {
                    Some(w) if r.ticked => decide(&queue, &store, &r, w).await,
                    _ => {
                        if let Some(d) = &r.decision {
                            show_decision(&queue, d);
                        }
                    }
                }
                observe(&queue, &r);
                // Also when another instance ticked and this call only saw the
                // tick number move: the fan-out happens once per tick anyway.
                if r.tick > 0 {
                    push::on_tick(&state, &queue, r.tick, r.now_ms);
                }
                Duration::from_millis(r.next_due_in_ms.clamp(1, 1000))
            }
            Err(e) => {
                METRICS.store_errors.with_label_values(&["release"]).inc();
                tracing::warn!(queue = queue.id(), error = %e, "release failed");
                Duration::from_millis(500)
            }
        };
        tokio::time::sleep(pause).await;
    }
}

/// The lottery of a queue with a pre-queue (see `lottery.rs`), on every
/// instance: make sure it has a commitment (the first instance's seed is
/// kept), draw it once the opening has come (whichever instance gets there
/// first; the store draws once), and learn of the draw, which opens the line
/// here and moves every socket from the pre-queue to its place.
async fn lottery(state: Arc<State>, queue: Arc<Queue>, store: Arc<dyn QueueStore>) {
    let Some(opens_at) = queue.def().schedule.opens_at else { return };
    let seed = crate::lottery::new_seed();
    loop {
        let pause = match draw_step(&queue, &store, &seed, opens_at.0).await {
            Ok(None) => {
                lottery_known(&state, &queue);
                return;
            }
            Ok(Some(pause)) => pause,
            Err(e) => {
                METRICS.store_errors.with_label_values(&["lottery"]).inc();
                tracing::warn!(queue = queue.id(), error = %e, "lottery step failed; retrying");
                Duration::from_millis(500)
            }
        };
        tokio::time::sleep(pause).await;
    }
}

/// One step of [`lottery`]: `None` once the draw is known, else how long to
/// wait before the next step.
async fn draw_step(
    queue: &Queue,
    store: &Arc<dyn QueueStore>,
    seed: &str,
    opens_at_ms: i64,
) -> Result<Option<Duration>, crate::store::StoreError> {
    let id = queue.id();
    let record = store.lottery(id, Some(seed)).await?;
    let drawn = record.as_ref().is_some_and(|r| r.drawn.is_some());
    let Some(record) = record else { return Ok(Some(Duration::from_millis(100))) };
    queue.note_lottery(Some(record.clone()));
    if drawn {
        return Ok(None);
    }
    let now = crate::clock::now_ms();
    if now < opens_at_ms {
        // Wake at the opening (and now and then before, to see a draw made
        // by an instance whose clock runs ahead).
        return Ok(Some(Duration::from_millis(u64::try_from(opens_at_ms - now).unwrap_or(0).clamp(10, 5000))));
    }
    let entrants = store.entrants(id).await?;
    let order = crate::lottery::draw(id, &record.seed, &entrants);
    let published = serde_json::to_string(&order.iter().map(|(p, _)| p).collect::<Vec<_>>()).unwrap_or_default();
    let visitors: Vec<_> = order.iter().map(|(_, v)| *v).collect();
    Ok(match store.draw(id, opens_at_ms, &visitors, &published).await? {
        crate::store::Draw::Drawn => {
            METRICS.lottery_entrants.with_label_values(&[id]).set(i64::try_from(visitors.len()).unwrap_or(i64::MAX));
            tracing::info!(queue = id, entrants = visitors.len(), "lottery drawn");
            Some(Duration::ZERO)
        }
        crate::store::Draw::AlreadyDrawn => Some(Duration::ZERO),
        // The store's clock is a little behind this one's.
        crate::store::Draw::TooEarly => Some(Duration::from_millis(50)),
        // A join landed between reading the entrants and the draw (the
        // store's clock behind), or the store lost the lottery: again.
        crate::store::Draw::Changed => Some(Duration::from_millis(100)),
    })
}

/// The draw is known here: every socket of the queue hears its place.
fn lottery_known(state: &Arc<State>, queue: &Arc<Queue>) {
    let (state, queue) = (state.clone(), queue.clone());
    tokio::spawn(async move { push::refresh_all(&state, &queue).await });
}

/// Hear about ticks performed by other instances (Redis pub/sub), so their
/// releases reach the sockets held here within the same push budget. On a
/// cluster any node hears every message; with sentinels, the primary is
/// asked for again after the subscription ends. The catalog's channel
/// says when queues change; the subscription then starts again with the new
/// queues' channels (a tick message missed meanwhile reaches this instance's
/// sockets at its own ticker's next call, within a second).
async fn listen_for_ticks(state: Arc<State>, store: StoreConfig) {
    use futures_util::StreamExt;
    let mut ids = state.catalog.watch_ids();
    let catalog_channel = RedisStore::catalog_keys(&store.key_prefix).1;
    // At most a second: ticks of other instances are what this
    // subscription is for, and a restarted Redis should be heard soon.
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let mut attempt = 0;
    loop {
        ids.borrow_and_update();
        // (channel, queue id) of every queue running here now.
        let channels: Vec<(String, String)> =
            state.queues.all().iter().map(|q| (events_channel(&store.key_prefix, q.id()), q.id().to_owned())).collect();
        let subscribed = async {
            let client = crate::store::connection::subscriber(&store, attempt).await?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&catalog_channel).await?;
            for (channel, _) in &channels {
                pubsub.subscribe(channel).await?;
            }
            Ok::<_, redis::RedisError>(pubsub)
        };
        match subscribed.await {
            Ok(mut pubsub) => {
                // Messages published before the subscription: the catalog
                // may have changed meanwhile.
                let (state2, mut messages) = (state.clone(), pubsub.on_message());
                tokio::spawn(async move { crate::catalog::sync(&state2).await });
                let mut queues_changed = false;
                loop {
                    let msg = tokio::select! {
                        msg = messages.next() => msg,
                        _ = ids.changed() => {
                            queues_changed = true;
                            break;
                        }
                    };
                    let Some(msg) = msg else {
                        tracing::warn!("tick subscription ended; resubscribing");
                        break;
                    };
                    let channel = msg.get_channel_name().to_owned();
                    let Ok(payload) = msg.get_payload::<String>() else { continue };
                    if channel == catalog_channel {
                        let state = state.clone();
                        tokio::spawn(async move { crate::catalog::sync(&state).await });
                        continue;
                    }
                    let Some((_, id)) = channels.iter().find(|(c, _)| *c == channel) else { continue };
                    let Some(queue) = state.queues.by_id(id) else { continue };
                    let Some(event) = Event::parse(&payload) else { continue };
                    on_event(&state, &queue, event);
                }
                if queues_changed {
                    // Subscribe again at once, to the new queues' channels.
                    continue;
                }
                backoff.reset();
            }
            Err(e) => tracing::warn!(error = %e, "cannot subscribe to tick messages; retrying"),
        }
        attempt += 1;
        tokio::time::sleep(backoff.next_pause()).await;
    }
}

/// What another instance (or a script) told every instance about `queue`.
fn on_event(state: &Arc<State>, queue: &Arc<Queue>, event: Event) {
    match event {
        Event::Settings => {
            let (state, queue) = (state.clone(), queue.clone());
            tokio::spawn(async move { control::sync(&state, &queue).await });
        }
        // Another instance drew the lottery (this instance's own lottery
        // task sees it within its next step).
        Event::Drawn => {}
        Event::Revoke { visitor, iat, until_ms } => {
            crate::session::revoked_elsewhere(state, queue.id(), &visitor, iat, until_ms);
        }
        Event::Epoch(epoch) => epoch_seen(state, queue, epoch),
        // Edge-only instances learn the challenge difficulty here.
        Event::Pressure { joined } => queue.note_pressure(joined),
        Event::Tick { tick, now_ms, released, waiting } => {
            queue.estimate.record(tick, now_ms, released, waiting);
            push::on_tick(state, queue, tick, now_ms);
        }
    }
}

/// Settings changes normally arrive by pub/sub; this catches any missed
/// message (and is how a memory store would learn of none: it has one instance).
async fn sync_settings(state: Arc<State>, queue: Arc<Queue>) {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        control::sync(&state, &queue).await;
    }
}
