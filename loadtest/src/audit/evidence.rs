//! Evidence for the audit beyond the visitors' own records: admission
//! settings and tick counters, the waiting room's tick log, the campaign's
//! stock, the database rows, and each claimer's `/api/me/coupons`. Gathered
//! once, after the run.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;

use crate::audit::db::{self, DbView};
use crate::cli::Args;
use crate::record::VisitorRecord;
use crate::services::{self, CampaignStock, QueueState, TickEntry};

/// The waiting room's tick log (`GET /admin/queues/{q}/ticks`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TickLog {
    /// Not asked for (no `--proxy-admin`).
    #[default]
    NotAsked,
    /// The endpoint answered 404: a build without adaptive admission.
    Missing,
    /// The endpoint failed (the failure is in the `sources` check).
    Unreadable,
    /// The entries, in the order served.
    Read(Vec<TickEntry>),
}

/// Claims checked against each visitor's `/api/me/coupons`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeClaims {
    /// Claims found.
    pub checked: usize,
    /// Claim ids acknowledged but not listed.
    pub missing: Vec<i64>,
    /// Visitors whose token was no longer accepted.
    pub unverifiable: usize,
}

/// Everything the audit uses besides the records.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// `--release-per-tick`.
    pub release_per_tick_flag: Option<u64>,
    /// `--tick`.
    pub tick_flag: Option<Duration>,
    /// The queue before the run (admin API).
    pub queue_before: Option<QueueState>,
    /// The queue after the run.
    pub queue_after: Option<QueueState>,
    /// The tick log after the run.
    pub tick_log: TickLog,
    /// The run's span on the wall clock (epoch ms: start, and when the tick
    /// log was read), to pick the ticks that belong to it.
    pub run_window_ms: Option<(i64, i64)>,
    /// 5xx answers by `step:status`.
    pub server_errors: BTreeMap<String, u64>,
    /// Queue-API calls (join, status) answered 503 with `Retry-After` and
    /// retried after it, as the queue page does (not errors: counted).
    pub retried_503: u64,
    /// `--hold-length`.
    pub hold_length: Duration,
    /// `--stock`.
    pub stock: Option<i64>,
    /// `/admin/stats` of the campaign.
    pub stats: Option<CampaignStock>,
    /// The database rows.
    pub db: Option<DbView>,
    /// Per-visitor claim checks.
    pub me_claims: Option<MeClaims>,
    /// `--allowed-errors`.
    pub allowed_errors: f64,
    /// Sources given but unreadable.
    pub source_errors: Vec<String>,
    /// A drop's lottery and stock (`--drop`).
    pub drop: Option<super::drop::DropEvidence>,
}

impl Evidence {
    /// The queue's state from the admin API: after the run, or else before it.
    pub fn queue(&self) -> Option<&QueueState> {
        self.queue_after.as_ref().or(self.queue_before.as_ref())
    }

    /// Whether the queue ran with adaptive admission.
    pub fn adaptive(&self) -> bool {
        self.queue().is_some_and(QueueState::adaptive)
    }

    /// The logged ticks that ran during the run, oldest first (empty
    /// without a log or a window).
    pub fn run_ticks(&self) -> Vec<&TickEntry> {
        let (TickLog::Read(log), Some((from, to))) = (&self.tick_log, self.run_window_ms) else {
            return Vec::new();
        };
        let mut ticks: Vec<&TickEntry> = log.iter().filter(|t| (from..=to).contains(&t.at_ms)).collect();
        ticks.sort_by_key(|t| (t.at_ms, t.tick));
        ticks
    }

    /// N: the admin API's (after the run) or the flag's.
    pub fn release_per_tick(&self) -> Option<u64> {
        self.queue_after
            .as_ref()
            .or(self.queue_before.as_ref())
            .map(|q| q.release_per_tick)
            .or(self.release_per_tick_flag)
    }

    /// T.
    pub fn tick(&self) -> Option<Duration> {
        self.queue_after.as_ref().or(self.queue_before.as_ref()).map(|q| q.tick).or(self.tick_flag)
    }

    /// From the admin counters: more released during the run than N per tick allows.
    pub fn counter_violation(&self, n: u64) -> Option<String> {
        let (b, a) = (self.queue_before.as_ref()?, self.queue_after.as_ref()?);
        let ticks = a.ticks.saturating_sub(b.ticks);
        let released = a.released_total.saturating_sub(b.released_total);
        (released > n * ticks).then(|| format!("admin counters: {released} released in {ticks} ticks (N = {n})"))
    }

    /// Gather what the flags point at; `started_ms` is the run's start on the
    /// wall clock (epoch ms). `server_errors` is filled by the caller.
    pub async fn gather(
        args: &Args,
        records: &[VisitorRecord],
        campaign: i64,
        event: i64,
        queue_before: Option<QueueState>,
        started_ms: i64,
    ) -> Evidence {
        let mut e = Evidence {
            release_per_tick_flag: args.release_per_tick,
            tick_flag: args.tick,
            queue_before,
            hold_length: args.hold_length,
            stock: args.stock,
            allowed_errors: args.allowed_errors,
            ..Evidence::default()
        };
        let token = args.admin_token.clone().unwrap_or_default();
        if let Some(admin) = &args.proxy_admin {
            match services::queue_state(admin, &token, &args.queue).await {
                Ok(q) => e.queue_after = Some(q),
                Err(err) => e.source_errors.push(format!("waiting room admin API: {err:#}")),
            }
            e.tick_log = match services::tick_log(admin, &token, &args.queue).await {
                Ok(Some(log)) => TickLog::Read(log),
                Ok(None) => TickLog::Missing,
                Err(err) => {
                    e.source_errors.push(format!("waiting room tick log: {err:#}"));
                    TickLog::Unreadable
                }
            };
            // Read after the log: every tick it holds ran before this.
            e.run_window_ms = Some((started_ms, now_ms()));
        }
        if let Some(booking_admin) = &args.booking_admin
            && args.admin_token.is_some()
        {
            match services::campaign_stock(booking_admin, &token, campaign).await {
                Ok(s) => e.stats = Some(s),
                Err(err) => e.source_errors.push(format!("booking core /admin/stats: {err:#}")),
            }
        }
        if let Some(url) = &args.database_url {
            match db::read(url, event, campaign).await {
                Ok(view) => e.db = Some(view),
                Err(err) => e.source_errors.push(format!("database: {err:#}")),
            }
        } else if let Some(booking) = &args.booking {
            e.me_claims = Some(me_claims(booking, records, campaign, &mut e.source_errors).await);
        }
        e
    }
}

/// The wall clock in epoch ms (the services' clock, on one machine or synced).
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Look up every acknowledged claim in its visitor's `/api/me/coupons`.
async fn me_claims(booking: &str, records: &[VisitorRecord], campaign: i64, errors: &mut Vec<String>) -> MeClaims {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap_or_default();
    let results: Vec<_> = futures_util::stream::iter(records.iter().filter(|r| !r.claims.is_empty()))
        .map(|r| {
            let client = client.clone();
            async move {
                let token = r.token.clone().unwrap_or_default();
                (r, services::my_claims(&client, booking, &token, campaign).await)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut out = MeClaims::default();
    for (r, result) in results {
        match result {
            Ok(Some(ids)) => {
                for c in &r.claims {
                    if ids.contains(&c.claim_id) {
                        out.checked += 1;
                    } else {
                        out.missing.push(c.claim_id);
                    }
                }
            }
            Ok(None) => out.unverifiable += 1,
            Err(err) => {
                if errors.len() < 5 {
                    errors.push(format!("booking core /api/me/coupons: {err:#}"));
                }
            }
        }
    }
    out
}
