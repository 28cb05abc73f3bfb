//! Claim and hold throughput against PostgreSQL: our claim path (leased Redis
//! gate + one `UPDATE … FOR UPDATE SKIP LOCKED` statement with its deadline)
//! next to the naive baseline the reference projects started from (`SELECT …
//! FOR UPDATE` on the campaign row, check, insert, update the count, commit),
//! under the same workload and
//! concurrency, each followed by an over-issue audit (ours also by a check of
//! the gate's books); then holds/s on distinct seats through the same call as
//! the API (per-visitor limit and session bound included, group-committed),
//! next to the same holds one transaction each (`take_hold` alone, the path
//! every hold took before the group commit). Prints numbers;
//! asserts nothing about time.
//!
//! `bench/booking/run.sh` runs it; `--help` lists the knobs.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use booking_core::config::QueueConfig;
use booking_core::coupons::ClaimError;
use booking_core::store::catalogue::NewEvent;
use booking_core::store::coupons::NewCampaign;
use booking_core::store::holds::NewHold;
use booking_core::{Application, Config};
use clap::Parser;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool};

#[derive(Debug, Parser)]
#[command(about = "booking-core claim and hold benchmark (PostgreSQL, Redis)")]
struct Args {
    /// PostgreSQL server URL; a fresh database is created on it and dropped after.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    database_url: String,
    /// Redis URL for the claim gate (keys under a fresh prefix, deleted after).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Claim requests per run.
    #[arg(long, default_value_t = 50_000)]
    claims: usize,
    /// Distinct visitors making them.
    #[arg(long, default_value_t = 20_000)]
    visitors: usize,
    /// Campaign stock.
    #[arg(long, default_value_t = 5_000)]
    stock: i64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Database pool size (both runs).
    #[arg(long, default_value_t = 16)]
    pool: u32,
    /// Distinct seats to hold.
    #[arg(long, default_value_t = 5_000)]
    seats: i64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Default)]
struct Outcome {
    granted: AtomicUsize,
    duplicate: AtomicUsize,
    sold_out: AtomicUsize,
    other: AtomicUsize,
}

impl Outcome {
    fn line(&self) -> String {
        format!(
            "201 {} · 409 {} · 410 {} · other {}",
            self.granted.load(Ordering::Relaxed),
            self.duplicate.load(Ordering::Relaxed),
            self.sold_out.load(Ordering::Relaxed),
            self.other.load(Ordering::Relaxed)
        )
    }
}

/// Run `work(i)` for every i in `0..n` on `concurrency` workers; returns the elapsed time.
async fn drive<F, Fut>(n: usize, concurrency: usize, work: F) -> Duration
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let work = Arc::new(work);
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let next = next.clone();
            let work = work.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    work(i).await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    started.elapsed()
}

/// (claims, distinct visitors) in `table` for `campaign`.
async fn audit(pool: &PgPool, table: &str, campaign: i64) -> (i64, i64) {
    sqlx::query_as(&format!(
        "SELECT count(*), count(DISTINCT visitor_id) FROM {table} WHERE campaign_id = $1 AND visitor_id IS NOT NULL"
    ))
    .bind(campaign)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn with_database(url: &str, name: &str) -> String {
    let (head, query) = url.split_once('?').map_or((url, None), |(h, q)| (h, Some(q)));
    let scheme_end = head.find("://").map_or(0, |i| i + 3);
    let base = head[scheme_end..].find('/').map_or(head, |i| &head[..scheme_end + i]);
    query.map_or_else(|| format!("{base}/{name}"), |q| format!("{base}/{name}?{q}"))
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let db = format!("bc_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&args.database_url).await.expect("PostgreSQL reachable");
    sqlx::query(&format!(r#"CREATE DATABASE "{db}""#)).execute(&mut admin).await.unwrap();
    let url = with_database(&args.database_url, &db);
    let prefix = format!("bcbench{}", uuid::Uuid::new_v4().simple());
    let keys = tempfile::tempdir().unwrap();
    shared::keys::KeyDir::open_or_create(keys.path()).unwrap();

    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".into();
    config.admin.listen = String::new();
    config.database.url = url.clone();
    config.database.max_connections = args.pool;
    config.redis.url = args.redis_url.clone();
    config.redis.prefix = prefix.clone();
    config.keys.public_dir = keys.path().join("public");
    config.holds.sweep_interval = Duration::from_secs(3600);
    let config_max_per_visitor = config.holds.max_per_visitor;
    config.queues = vec![QueueConfig { id: "main".into(), events: vec![], all_events: true }];
    let app = Application::build(config).await.unwrap();
    let state = app.state().clone();
    let now = booking_core::clock::now_ms();

    let per_row = 100;
    let rows = (args.seats + per_row - 1) / per_row;
    let new_event = NewEvent {
        name: "Bench".into(),
        venue: "Hall".into(),
        starts_at: now + 86_400_000,
        rows: (0..rows).map(booking_core::catalogue::row_label).collect(),
        seats_per_row: per_row,
        price_cents: 100,
    };
    let event = state.store().create_event(&new_event, now).await.unwrap();
    let new_campaign = |name: &str| NewCampaign {
        event_id: event.id,
        name: name.into(),
        stock: args.stock,
        opens_at: now - 60_000,
        closes_at: now + 3_600_000,
    };
    let campaign = state.store().create_campaign(&new_campaign("gate"), now).await.unwrap();

    let visitors: Arc<Vec<String>> =
        Arc::new((0..args.visitors).map(|_| uuid::Uuid::new_v4().simple().to_string()).collect());
    let mut plan: Vec<usize> = (0..args.claims).map(|i| i % args.visitors).collect();
    plan.shuffle(&mut rand::rngs::StdRng::seed_from_u64(42));
    let plan = Arc::new(plan);

    println!("booking-core claim benchmark — PostgreSQL database {db}, Redis prefix {prefix}");
    println!(
        "workload: {} claims from {} visitors on stock {}, {} concurrent clients, pool {} connections",
        args.claims, args.visitors, args.stock, args.concurrency, args.pool
    );

    // Ours: the same call the HTTP handler makes, minus HTTP.
    let ours = Arc::new(Outcome::default());
    let elapsed_ours = {
        let (state, visitors, plan, ours) = (state.clone(), visitors.clone(), plan.clone(), ours.clone());
        let campaign_id = campaign.id;
        drive(args.claims, args.concurrency, move |i| {
            let (state, visitors, plan, ours) = (state.clone(), visitors.clone(), plan.clone(), ours.clone());
            async move {
                let coupons = state.coupons();
                let c = coupons.campaign(campaign_id).await.unwrap();
                let slot = match coupons.claim(&c, &visitors[plan[i]]).await {
                    Ok(_) => &ours.granted,
                    Err(ClaimError::Duplicate { .. } | ClaimError::InFlight { .. }) => &ours.duplicate,
                    Err(ClaimError::SoldOut(_)) => &ours.sold_out,
                    Err(_) => &ours.other,
                };
                slot.fetch_add(1, Ordering::Relaxed);
            }
        })
        .await
    };

    // Naive: its own tables on the same database, a pool of the same size.
    let pool = PgPoolOptions::new().max_connections(args.pool).connect(&url).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE naive_campaigns (id BIGINT PRIMARY KEY, stock BIGINT NOT NULL, issued BIGINT NOT NULL DEFAULT 0);
         CREATE TABLE naive_claims (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, campaign_id BIGINT NOT NULL,
             visitor_id TEXT NOT NULL, code TEXT NOT NULL, UNIQUE (campaign_id, visitor_id));",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO naive_campaigns (id, stock) VALUES (1, $1)")
        .bind(args.stock)
        .execute(&pool)
        .await
        .unwrap();
    let naive = Arc::new(Outcome::default());
    let elapsed_naive = {
        let (pool, visitors, plan, naive) = (pool.clone(), visitors.clone(), plan.clone(), naive.clone());
        drive(args.claims, args.concurrency, move |i| {
            let (pool, visitors, plan, naive) = (pool.clone(), visitors.clone(), plan.clone(), naive.clone());
            async move {
                let slot = match naive_claim(&pool, &visitors[plan[i]]).await {
                    Ok(true) => &naive.granted,
                    Ok(false) => &naive.sold_out,
                    Err(e) if e.as_database_error().is_some_and(|d| d.is_unique_violation()) => &naive.duplicate,
                    Err(_) => &naive.other,
                };
                slot.fetch_add(1, Ordering::Relaxed);
            }
        })
        .await
    };

    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
    let (ours_rate, naive_rate) = (rate(args.claims, elapsed_ours), rate(args.claims, elapsed_naive));
    let (ours_issued, ours_distinct) = audit(&pool, "coupon_codes", campaign.id).await;
    let (naive_issued, naive_distinct) = audit(&pool, "naive_claims", 1).await;
    let verdict = |issued: i64, distinct: i64, granted: usize| {
        if issued <= args.stock && issued == distinct && issued == granted as i64 { "OK" } else { "VIOLATION" }
    };
    println!();
    println!(
        "gate  (Redis Lua gate + SKIP LOCKED): {:>9.0} claims/s  in {:>6.2}s  [{}]",
        ours_rate,
        elapsed_ours.as_secs_f64(),
        ours.line()
    );
    println!(
        "      audit: {ours_issued} issued <= stock {}, {ours_distinct} distinct visitors, acknowledged {} → {}",
        args.stock,
        ours.granted.load(Ordering::Relaxed),
        verdict(ours_issued, ours_distinct, ours.granted.load(Ordering::Relaxed))
    );
    println!(
        "naive (SELECT … FOR UPDATE + count):  {:>9.0} claims/s  in {:>6.2}s  [{}]",
        naive_rate,
        elapsed_naive.as_secs_f64(),
        naive.line()
    );
    println!(
        "      audit: {naive_issued} issued <= stock {}, {naive_distinct} distinct visitors, acknowledged {} → {}",
        args.stock,
        naive.granted.load(Ordering::Relaxed),
        verdict(naive_issued, naive_distinct, naive.granted.load(Ordering::Relaxed))
    );
    // The gate's books once every lease has settled (the last claims record
    // their result in the gate just after answering): free + reserved + issued
    // == stock, nothing reserved, and issued == the database's claims.
    let gate_deadline = Instant::now() + Duration::from_secs(10);
    let counts = loop {
        let counts = state.coupons().gate().counts(campaign.id).await.ok().flatten();
        if counts.is_some_and(|c| c.reserved == 0) || Instant::now() > gate_deadline {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let conserved = counts.is_some_and(|c| c.conserved() && c.reserved == 0 && c.issued == ours_issued);
    println!(
        "      audit: gate {} → {}",
        counts.map_or("missing".to_owned(), |c| format!(
            "free {} + reserved {} + issued {} of stock {}",
            c.free, c.reserved, c.issued, c.total
        )),
        if conserved { "OK" } else { "VIOLATION" }
    );
    println!("ratio: {:.1}× the baseline's claims/s", ours_rate / naive_rate);

    // Holds: one per seat, every seat distinct; then the same on a second
    // event through the single path (`take_hold`, a transaction each: what
    // every hold did before the holds' group commit), as the baseline.
    let seats_of = |event_id: i64| {
        let pool = pool.clone();
        async move {
            let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM seats WHERE event_id = $1 ORDER BY id")
                .bind(event_id)
                .fetch_all(&pool)
                .await
                .unwrap();
            Arc::new(ids)
        }
    };
    let single_event = state.store().create_event(&new_event, now).await.unwrap();
    let (seats, single_seats) = (seats_of(event.id).await, seats_of(single_event.id).await);
    let held = Arc::new(Outcome::default());
    let elapsed_holds = {
        let (state, seats, held, visitors) = (state.clone(), seats.clone(), held.clone(), visitors.clone());
        let event_id = event.id;
        drive(seats.len(), args.concurrency, move |i| {
            let (state, seats, held, visitors) = (state.clone(), seats.clone(), held.clone(), visitors.clone());
            async move {
                let visitor = &visitors[i % visitors.len()];
                let slot = match state.holds().hold(event_id, seats[i], visitor, i64::MAX).await {
                    Ok(_) => &held.granted,
                    Err(_) => &held.other,
                };
                slot.fetch_add(1, Ordering::Relaxed);
            }
        })
        .await
    };
    let single = Arc::new(Outcome::default());
    let elapsed_single = {
        let (state, seats, single, visitors) = (state.clone(), single_seats.clone(), single.clone(), visitors.clone());
        let (event_id, max_per_visitor) = (single_event.id, config_max_per_visitor);
        drive(seats.len(), args.concurrency, move |i| {
            let (state, seats, single, visitors) = (state.clone(), seats.clone(), single.clone(), visitors.clone());
            async move {
                let now = booking_core::clock::now_ms();
                let hold_id = format!("{event_id}-{}", uuid::Uuid::new_v4().simple());
                let attempt = NewHold {
                    event_id,
                    seat_id: seats[i],
                    hold_id: &hold_id,
                    visitor_id: &visitors[i % visitors.len()],
                    now,
                    expires_at: now + 600_000,
                    max_per_visitor,
                };
                let slot = match state.store().try_hold(&attempt).await {
                    Ok(Some(_)) => &single.granted,
                    _ => &single.other,
                };
                slot.fetch_add(1, Ordering::Relaxed);
            }
        })
        .await
    };
    let (holds_rate, single_rate) = (rate(seats.len(), elapsed_holds), rate(single_seats.len(), elapsed_single));
    println!();
    for (what, n, elapsed, outcome) in [
        ("holds on distinct seats:", holds_rate, elapsed_holds, &held),
        ("  one transaction each:", single_rate, elapsed_single, &single),
    ] {
        println!(
            "{what} {n:>9.0} holds/s   in {:>6.2}s  [{} seats: granted {}, refused {}]",
            elapsed.as_secs_f64(),
            seats.len(),
            outcome.granted.load(Ordering::Relaxed),
            outcome.other.load(Ordering::Relaxed)
        );
    }
    println!("holds ratio: {:.1}× one transaction each", holds_rate / single_rate);

    pool.close().await;
    app.shutdown_handle().shutdown();
    drop(app);
    state.store().close().await;
    let _ = sqlx::query(&format!(r#"DROP DATABASE IF EXISTS "{db}" WITH (FORCE)"#)).execute(&mut admin).await;
    if let Ok(client) = redis::Client::open(args.redis_url.as_str())
        && let Ok(mut conn) = client.get_multiplexed_async_connection().await
    {
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{prefix}:*")).query_async(&mut conn).await.unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
        }
    }
}

/// The baseline: lock the campaign row, check, insert, count, commit.
/// `Ok(false)` = sold out; a unique violation = duplicate.
async fn naive_claim(pool: &PgPool, visitor: &str) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let (stock, issued): (i64, i64) =
        sqlx::query_as("SELECT stock, issued FROM naive_campaigns WHERE id = 1 FOR UPDATE").fetch_one(&mut *tx).await?;
    if issued >= stock {
        tx.rollback().await?;
        return Ok(false);
    }
    sqlx::query("INSERT INTO naive_claims (campaign_id, visitor_id, code) VALUES (1, $1, md5(random()::text))")
        .bind(visitor)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE naive_campaigns SET issued = issued + 1 WHERE id = 1").execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(true)
}
