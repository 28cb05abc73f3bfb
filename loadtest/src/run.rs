//! One run from start to report: set up the sale, release visitors on the
//! schedule, drain, gather the evidence, audit.
//!
//! The spawner never waits for a visitor: each arrival becomes its own task
//! at its intended time (late ones at once), so a slow system sees more
//! concurrent visitors, exactly as in a real sale. Records come back over a
//! channel. After the last arrival the run waits up to `--drain` for
//! visitors to finish, then flips a stop signal every visitor listens to.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use rand::SeedableRng;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{mpsc, watch};

use crate::arrivals;
use crate::audit::drop::{DropEvidence, StockReading};
use crate::audit::{self, Evidence};
use crate::cli::Args;
use crate::metrics::Metrics;
use crate::net::Net;
use crate::progress::Progress;
use crate::record::VisitorRecord;
use crate::report::{AdmittedPhase, Arrivals, Report, Visitors};
use crate::services;
use crate::visitor::{self, Plan, Shared};

/// The event and campaign to use: given, or created with `--create-sale`.
async fn sale(args: &Args) -> Result<(i64, i64)> {
    if let Some(spec) = args.create_sale {
        let booking = args
            .booking_admin
            .as_deref()
            .context("--create-sale needs --booking-admin (the booking core's operator listener)")?;
        let token = args.admin_token.as_deref().context("--create-sale needs --admin-token")?;
        return services::create_sale(booking, token, spec.rows, spec.seats_per_row, spec.stock)
            .await
            .context("creating the sale through the booking core's admin API");
    }
    match (args.event, args.campaign) {
        (Some(e), Some(c)) => Ok((e, c)),
        _ => bail!("say which sale to load: --event and --campaign, or --create-sale ROWSxSEATS,STOCK"),
    }
}

/// A drop's schedule, from the published lottery before the run: wait for
/// the pre-queue to open; returns `opens_at` (epoch ms).
async fn drop_schedule(args: &Args) -> Result<i64> {
    // A waiting room that just started may not have made its commitment yet.
    let read = lottery_when(args, |p| p.is_ok()).await;
    let p = read.context("--drop: reading the queue's lottery (GET /wr/{q}/lottery); does it have a pre-queue?")?;
    let at = |what: &str, t: &str| crate::visitor::epoch_ms(t).with_context(|| format!("lottery: {what} {t:?}"));
    let (from, opens) = (at("prequeue_from", &p.prequeue_from)?, at("opens_at", &p.opens_at)?);
    let now = audit::evidence::now_ms();
    if now >= opens {
        bail!("--drop: the queue opened at {} already: no pre-queue to join", p.opens_at);
    }
    if now < from {
        if !args.quiet {
            eprintln!("drop: waiting {} ms for the pre-queue to open at {}", from - now, p.prequeue_from);
        }
        // A little past it: the waiting room's clock and this one may differ by a hair.
        tokio::time::sleep(Duration::from_millis(u64::try_from(from - now).unwrap_or(0) + 200)).await;
    }
    Ok(opens)
}

/// Read the event's free seats every `--stock-poll` until `stop` turns true.
async fn poll_stock(args: Args, event: i64, mut stop: watch::Receiver<bool>) -> Vec<StockReading> {
    let (Some(admin), Some(token)) = (args.booking_admin.clone(), args.admin_token.clone()) else {
        return Vec::new();
    };
    let mut readings = Vec::new();
    let mut every = tokio::time::interval(args.stock_poll);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        if let Ok(free_seats) = services::free_seats(&admin, &token, event).await {
            readings.push(StockReading { at_ms: audit::evidence::now_ms(), free_seats });
        }
    }
    readings
}

/// The published lottery once `ready` says so, or after 5 s of retries.
async fn lottery_when(
    args: &Args,
    ready: impl Fn(&Result<waiting_room::lottery::Published>) -> bool,
) -> Result<waiting_room::lottery::Published> {
    let mut last = services::lottery(&args.proxy, &args.queue).await;
    for _ in 0..20 {
        if ready(&last) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        last = services::lottery(&args.proxy, &args.queue).await;
    }
    last
}

/// Run the whole simulation and audit it. Errors are setup failures (bad
/// flags, unreachable admin API); audit failures are in the report.
pub async fn run(args: Args) -> Result<Report> {
    if !args.proxy.starts_with("http://") {
        bail!("--proxy must be an http:// URL, got {:?}", args.proxy);
    }
    let started_at = OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default();
    // Ticks from this moment on belong to the run (the tick log's audit).
    let started_ms = audit::evidence::now_ms();
    let (event, campaign) = sale(&args).await?;
    let queue_before = match &args.proxy_admin {
        Some(admin) => Some(
            services::queue_state(admin, args.admin_token.as_deref().unwrap_or_default(), &args.queue)
                .await
                .context("reading the queue from the waiting room's admin API (--proxy-admin)")?,
        ),
        None => None,
    };
    let opens_ms = if args.drop { Some(drop_schedule(&args).await?) } else { None };
    let net = Net::new(&args)?;
    let mut schedule =
        arrivals::schedule(&args.profile(), args.process, &mut rand::rngs::StdRng::seed_from_u64(args.seed));
    let start_ms = audit::evidence::now_ms();
    // The profile's arrivals (a drop's later arrivals come on top).
    let profiled = schedule.len();
    if let Some(opens) = opens_ms {
        // Later arrivals: evenly over 2 s from --late-after past the opening.
        let first = Duration::from_millis(u64::try_from(opens - start_ms).unwrap_or(0)) + args.late_after;
        let n = args.late_arrivals;
        schedule.extend((0..n).map(|i| first + Duration::from_secs(2).mul_f64(i as f64 / n as f64)));
        if let Some(last) = schedule.get(schedule.len().saturating_sub(n + 1))
            && !args.quiet
            && start_ms + i64::try_from(last.as_millis()).unwrap_or(0) >= opens
        {
            eprintln!("drop: warning: the last pre-queue arrival is due after opens_at; shorten --duration");
        }
    }
    let planned = schedule.len();
    let protected = args.protected_path.clone().unwrap_or_else(|| format!("/api/events/{event}/seats"));
    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(Shared {
        net,
        metrics: metrics.clone(),
        start: Instant::now(),
        event,
        campaign,
        protected,
        args: args.clone(),
    });
    let progress = Progress::start(metrics.clone(), planned, args.progress_interval, args.quiet);

    let (stop_tx, stop_rx) = watch::channel(false);
    let (stock_stop, stock_rx) = watch::channel(false);
    let stock = args.drop.then(|| tokio::spawn(poll_stock(args.clone(), event, stock_rx)));
    let (tx, mut rx) = mpsc::unbounded_channel::<VisitorRecord>();
    let mut lag = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).context("lag histogram")?;
    let mut arrival_seconds = 0.0;
    for (index, at) in schedule.iter().enumerate() {
        let intended = ctx.start + *at;
        let now = Instant::now();
        if intended > now {
            tokio::time::sleep_until(intended.into()).await;
        }
        lag.saturating_record(u64::try_from(intended.elapsed().as_micros()).unwrap_or(u64::MAX).max(1));
        let (ctx, stop, tx) = (ctx.clone(), stop_rx.clone(), tx.clone());
        let plan = Plan::new(&args, index);
        if index + 1 == profiled {
            arrival_seconds = ctx.start.elapsed().as_secs_f64();
        }
        tokio::spawn(async move {
            let record = visitor::visit(ctx, plan, intended, stop).await;
            let _ = tx.send(record);
        });
    }
    drop(tx);

    let mut records: Vec<VisitorRecord> = Vec::with_capacity(planned);
    let drain_until = Instant::now() + args.drain;
    let drained = tokio::time::timeout_at(drain_until.into(), async {
        while records.len() < planned {
            match rx.recv().await {
                Some(r) => records.push(r),
                None => break,
            }
        }
    })
    .await;
    if drained.is_err() {
        let _ = stop_tx.send(true);
        // Every visitor answers the stop at its next await point.
        let _ = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(r) = rx.recv().await {
                records.push(r);
            }
        })
        .await;
    }
    progress.finish().await;
    records.sort_by_key(|r| r.index);
    let _ = stock_stop.send(true);
    let stock = match stock {
        Some(task) => task.await.unwrap_or_default(),
        None => Vec::new(),
    };

    let mut evidence = Evidence::gather(&args, &records, campaign, event, queue_before, started_ms).await;
    if args.drop {
        // Drawn about a second past `opens_at`.
        let lottery = match lottery_when(&args, |p| matches!(p, Ok(p) if p.entrants.is_some())).await {
            Ok(p) => Some(p),
            Err(err) => {
                evidence.source_errors.push(format!("the published lottery: {err:#}"));
                None
            }
        };
        evidence.drop = Some(DropEvidence {
            lottery,
            stock,
            grace: args.sold_out_grace,
            heard_within: args.sold_out_within,
            start_ms,
        });
    }
    evidence.server_errors = metrics
        .snapshot()
        .iter()
        .flat_map(|s| {
            s.error_kinds
                .iter()
                .filter(|(k, _)| k.starts_with("5xx"))
                .map(move |(k, n)| (format!("{}:{k}", s.step), *n))
        })
        .collect();
    evidence.retried_503 = metrics.snapshot().iter().filter_map(|s| s.outcomes.get("retried_503")).sum();
    let audit = audit::audit(&records, &evidence);
    let ms = |q: f64| lag.value_at_quantile(q) as f64 / 1000.0;
    let duration = args.duration.as_secs_f64().max(1e-9);
    Ok(Report {
        harness: env!("CARGO_PKG_VERSION"),
        started_at,
        elapsed_seconds: ctx.start.elapsed().as_secs_f64(),
        event,
        campaign,
        socket_budget: ctx.net.budget,
        arrivals: Arrivals {
            planned,
            // The profile's rate (a drop's later arrivals are not part of it).
            planned_per_second: profiled as f64 / duration,
            achieved_per_second: if arrival_seconds > 0.0 {
                profiled as f64 / arrival_seconds.max(duration)
            } else {
                0.0
            },
            arrival_seconds,
            start_lag_p99_ms: if lag.is_empty() { 0.0 } else { ms(0.99) },
            start_lag_max_ms: if lag.is_empty() { 0.0 } else { lag.max() as f64 / 1000.0 },
        },
        visitors: Visitors::of(&records),
        admitted: AdmittedPhase::of(&records, metrics.booking_requests()),
        steps: metrics.snapshot(),
        audit,
        config: args,
    })
}
