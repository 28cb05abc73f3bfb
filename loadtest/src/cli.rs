//! The command line: every knob of a run, documented for `--help`.
//!
//! [`Args`] is the run's whole configuration; tests build it with
//! [`Args::try_parse_from`](clap::Parser::try_parse_from), so the flags are
//! exercised the same way a person uses them.

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;

use crate::arrivals::{Process, Profile, Rate, Spike};

/// Simulate a sale through the waiting room and audit the invariants afterwards.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(
    name = "loadtest",
    version,
    about = "Open-model sale simulator for the waiting room: visitors arrive at a fixed rate, queue, wait on a \
             WebSocket (or poll), get admitted, book a seat and claim a coupon; latencies are corrected for \
             coordinated omission and every invariant is audited after the run (exit code 1 if one fails).",
    after_help = "Example:\n  loadtest --proxy http://127.0.0.1:8080 --queue sale --arrivals 500/s --duration 30s \\\n    \
                  --proxy-admin http://127.0.0.1:9092 --booking http://127.0.0.1:8081 --admin-token \"$TOKEN\" \\\n    \
                  --create-sale 20x50,2000 --database-url postgres://postgres@127.0.0.1/booking --out run.json\n\n\
                  Exit codes: 0 every audit check passed, 1 an audit check failed, 2 bad flags or setup failure."
)]
pub struct Args {
    /// Base URL of the waiting room; every visitor request goes through it (http only).
    #[arg(long, env = "LOADTEST_PROXY", default_value = "http://127.0.0.1:8080", help_heading = "Target")]
    pub proxy: String,
    /// Queue id visitors join (`/wr/{queue}/…`).
    #[arg(long, default_value = "main", help_heading = "Target")]
    pub queue: String,
    /// Event whose seats visitors hold and book (or let --create-sale create one).
    #[arg(long, help_heading = "Target")]
    pub event: Option<i64>,
    /// Coupon campaign visitors claim from (or let --create-sale create one).
    #[arg(long, help_heading = "Target")]
    pub campaign: Option<i64>,
    /// Protected path each visitor opens first without a token, expecting 401
    /// [default: /api/events/{event}/seats].
    #[arg(long, help_heading = "Target")]
    pub protected_path: Option<String>,
    /// Create the event and coupon campaign first through the booking core's admin API
    /// (needs --booking and --admin-token): ROWSxSEATS_PER_ROW,STOCK, e.g. 20x50,2000.
    #[arg(long, value_name = "ROWSxSEATS,STOCK", help_heading = "Target")]
    pub create_sale: Option<SaleSpec>,

    /// Arrival rate: 2000/s, 500/m, 36000/h (a bare number is per second).
    #[arg(long, default_value = "100/s", help_heading = "Load (open model)")]
    pub arrivals: Rate,
    /// How long visitors keep arriving, e.g. 60s, 5m.
    #[arg(long, default_value = "10s", value_parser = parse_duration, help_heading = "Load (open model)")]
    #[serde(with = "human")]
    pub duration: Duration,
    /// Grow the rate linearly from zero to --arrivals over this long at the start.
    #[arg(long, default_value = "0s", value_parser = parse_duration, help_heading = "Load (open model)")]
    #[serde(with = "human")]
    pub ramp: Duration,
    /// A burst on top of the profile: RATE@START+LENGTH, e.g. 10000/s@20s+5s (the rate during the burst).
    #[arg(long, help_heading = "Load (open model)")]
    pub spike: Option<Spike>,
    /// Gaps between arrivals: evenly spaced, or exponential (independent visitors).
    #[arg(long, value_enum, default_value_t = Process::Uniform, help_heading = "Load (open model)")]
    pub process: Process,
    /// Seed of every random choice (arrival gaps, who polls or abandons, seats picked).
    #[arg(long, default_value_t = 1, help_heading = "Load (open model)")]
    pub seed: u64,

    /// Share of visitors who poll /status (honouring retry_after_seconds) instead of holding a WebSocket, 0..1.
    #[arg(long, default_value_t = 0.1, value_parser = parse_share, help_heading = "Visitor behaviour")]
    pub poll_share: f64,
    /// Share of visitors who leave while waiting (close the socket, stop polling), 0..1.
    #[arg(long, default_value_t = 0.05, value_parser = parse_share, help_heading = "Visitor behaviour")]
    pub abandon_share: f64,
    /// Leaving visitors leave after a random time in line up to this long (if not admitted before).
    #[arg(long, default_value = "5s", value_parser = parse_duration, help_heading = "Visitor behaviour")]
    #[serde(with = "human")]
    pub abandon_within: Duration,
    /// Probability that an admitted visitor confirms the seat it held, 0..1.
    #[arg(long, default_value_t = 0.8, value_parser = parse_share, help_heading = "Visitor behaviour")]
    pub confirm: f64,
    /// Probability that an admitted visitor claims the coupon a second time (must be refused), 0..1.
    #[arg(long, default_value_t = 0.1, value_parser = parse_share, help_heading = "Visitor behaviour")]
    pub claim_twice: f64,
    /// Seats tried per visitor: after a 409 the visitor picks another available seat.
    #[arg(long, default_value_t = 3, help_heading = "Visitor behaviour")]
    pub hold_attempts: u32,
    /// Share of visitors who wait in line normally but, once admitted, make no request to the
    /// booking core at all (they walk away with their token), 0..1. Chosen per visitor from
    /// --seed and the arrival number alone, so the same visitors are no-shows whatever the
    /// other shares are.
    #[arg(long, default_value_t = 0.0, value_parser = parse_share, help_heading = "Visitor behaviour")]
    pub no_show: f64,
    /// Random pause up to this long before each booking step (0s: none).
    #[arg(long, default_value = "0s", value_parser = parse_duration, help_heading = "Visitor behaviour")]
    #[serde(with = "human")]
    pub think: Duration,

    /// Give up on a visitor still not admitted this long after joining (counted as an error).
    #[arg(long, default_value = "5m", value_parser = parse_duration, help_heading = "Limits")]
    #[serde(with = "human")]
    pub max_wait: Duration,
    /// Timeout of each HTTP request and WebSocket handshake.
    #[arg(long, default_value = "30s", value_parser = parse_duration, help_heading = "Limits")]
    #[serde(with = "human")]
    pub request_timeout: Duration,
    /// After the last arrival, wait at most this long for visitors to finish, then stop the rest.
    #[arg(long, default_value = "5m", value_parser = parse_duration, help_heading = "Limits")]
    #[serde(with = "human")]
    pub drain: Duration,
    /// Most sockets open at once (WebSockets plus HTTP connections); also kept 1,000 below the
    /// process's open-files limit. Waiting visitors beyond the WebSocket share poll instead.
    #[arg(long, default_value_t = 15_000, help_heading = "Limits")]
    pub max_sockets: usize,
    /// Local addresses to spread connections over when ephemeral ports run short (loopback targets):
    /// a range 127.0.0.1-127.0.0.8 or a list 127.0.0.1,127.0.0.2.
    #[arg(long, help_heading = "Limits")]
    pub source_addrs: Option<Sources>,
    /// Runtime worker threads [default: number of cores].
    #[arg(long, help_heading = "Limits")]
    pub threads: Option<usize>,

    /// Waiting room admin API (e.g. http://127.0.0.1:9092): N and T for the audit, tick counters.
    #[arg(long, env = "LOADTEST_PROXY_ADMIN", help_heading = "Audit sources")]
    pub proxy_admin: Option<String>,
    /// Booking core base URL (direct, e.g. http://127.0.0.1:8081): each visitor's
    /// /api/me/coupons when there is no --database-url.
    #[arg(long, env = "LOADTEST_BOOKING", help_heading = "Audit sources")]
    pub booking: Option<String>,
    /// Booking core operator listener (its `admin.listen`, e.g. http://127.0.0.1:9093):
    /// /admin/stats for the audit, and --create-sale.
    #[arg(long, env = "LOADTEST_BOOKING_ADMIN", help_heading = "Audit sources")]
    pub booking_admin: Option<String>,
    /// Bearer token of both admin APIs.
    #[arg(long, env = "LOADTEST_ADMIN_TOKEN", hide_env_values = true, help_heading = "Audit sources")]
    #[serde(skip)]
    pub admin_token: Option<String>,
    /// The booking core's database (postgres://… or sqlite://…), read after the run for the audit.
    #[arg(long, env = "LOADTEST_DATABASE_URL", hide_env_values = true, help_heading = "Audit sources")]
    #[serde(skip)]
    pub database_url: Option<String>,
    /// N (visitors per tick) for the audit when there is no --proxy-admin.
    #[arg(long, help_heading = "Audit sources")]
    pub release_per_tick: Option<u64>,
    /// T (time between releases) for the audit when there is no --proxy-admin.
    #[arg(long, value_parser = parse_duration, help_heading = "Audit sources")]
    #[serde(with = "human::option")]
    pub tick: Option<Duration>,
    /// The booking core's hold length: two visitors' holds on one seat less than this apart overlap.
    #[arg(long, default_value = "5m", value_parser = parse_duration, help_heading = "Audit sources")]
    #[serde(with = "human")]
    pub hold_length: Duration,
    /// Coupon stock for the audit when neither --database-url nor --booking can tell it.
    #[arg(long, help_heading = "Audit sources")]
    pub stock: Option<i64>,
    /// Share of visitors whose flow may fail (transport errors, timeouts, unexpected answers)
    /// before the audit fails, 0..1.
    #[arg(long, default_value_t = 0.0, value_parser = parse_share, help_heading = "Audit sources")]
    pub allowed_errors: f64,

    /// A drop: the queue has a pre-queue and a lottery (`prequeue_from`, `opens_at`). The run
    /// waits for the pre-queue to open, the --arrivals visitors join it, the lottery orders them
    /// at the opening, --late-arrivals more join after it; the stock (--booking-admin) is read
    /// during the run, and the audit also checks the published draw, the admission order
    /// against it, no admission after sell-out beyond freed stock, and that every waiting
    /// socket heard SOLD_OUT in time. Visitors told SOLD_OUT stop (an outcome, not an error).
    #[arg(long, help_heading = "Drop (pre-queue, lottery, sell-out)")]
    pub drop: bool,
    /// With --drop: visitors who arrive after the opening, spread evenly over 2 s from
    /// --late-after past `opens_at` (they queue behind the draw, or are told SOLD_OUT).
    #[arg(long, default_value_t = 0, help_heading = "Drop (pre-queue, lottery, sell-out)")]
    pub late_arrivals: usize,
    /// With --drop: when the later arrivals start, after `opens_at`.
    #[arg(long, default_value = "2s", value_parser = parse_duration, help_heading = "Drop (pre-queue, lottery, sell-out)")]
    #[serde(with = "human")]
    pub late_after: Duration,
    /// With --drop: how often the booking core's stock (`GET /admin/stock` on --booking-admin)
    /// is read during the run.
    #[arg(long, default_value = "100ms", value_parser = parse_duration, help_heading = "Drop (pre-queue, lottery, sell-out)")]
    #[serde(with = "human")]
    pub stock_poll: Duration,
    /// With --drop: how old the waiting room's own stock reading may be (its `[stock]
    /// poll_interval` plus the read): admissions this soon after the stock reached zero are
    /// not counted as after sell-out.
    #[arg(long, default_value = "1s", value_parser = parse_duration, help_heading = "Drop (pre-queue, lottery, sell-out)")]
    #[serde(with = "human")]
    pub sold_out_grace: Duration,
    /// With --drop: every socket still waiting must hear SOLD_OUT within this long of the last
    /// booking the harness saw confirmed.
    #[arg(long, default_value = "1s", value_parser = parse_duration, help_heading = "Drop (pre-queue, lottery, sell-out)")]
    #[serde(with = "human")]
    pub sold_out_within: Duration,

    /// Write the whole report (config, per-step latencies, ticks, audit) as JSON to this file.
    #[arg(long, help_heading = "Output")]
    pub out: Option<PathBuf>,
    /// No live progress output.
    #[arg(long, help_heading = "Output")]
    pub quiet: bool,
    /// Interval of the progress line (a plain line per interval when stderr is not a terminal).
    #[arg(long, default_value = "1s", value_parser = parse_duration, help_heading = "Output")]
    #[serde(with = "human")]
    pub progress_interval: Duration,
}

impl Args {
    /// The arrival profile these flags describe.
    pub fn profile(&self) -> Profile {
        Profile { rate: self.arrivals, duration: self.duration, ramp: self.ramp, spike: self.spike }
    }

    /// The proxy URL without a trailing slash.
    pub fn proxy_base(&self) -> &str {
        self.proxy.trim_end_matches('/')
    }
}

/// `--create-sale ROWSxSEATS,STOCK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SaleSpec {
    /// Seat rows.
    pub rows: i64,
    /// Seats per row.
    pub seats_per_row: i64,
    /// Coupon stock.
    pub stock: i64,
}

impl FromStr for SaleSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<SaleSpec, String> {
        let bad = || format!("expected ROWSxSEATS_PER_ROW,STOCK like 20x50,2000, got {text:?}");
        let (layout, stock) = text.split_once(',').ok_or_else(bad)?;
        let (rows, seats) = layout.split_once('x').ok_or_else(bad)?;
        let num = |s: &str| s.trim().parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(bad);
        Ok(SaleSpec { rows: num(rows)?, seats_per_row: num(seats)?, stock: num(stock)? })
    }
}

/// `--source-addrs`: local IPs to bind client sockets to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sources(pub Vec<IpAddr>);

impl FromStr for Sources {
    type Err = String;

    fn from_str(text: &str) -> Result<Sources, String> {
        let ip = |s: &str| s.trim().parse::<IpAddr>().map_err(|_| format!("{s:?} is not an IP address"));
        if let Some((from, to)) = text.split_once('-') {
            let (IpAddr::V4(from), IpAddr::V4(to)) = (ip(from)?, ip(to)?) else {
                return Err("ranges are IPv4 only; list IPv6 addresses with commas".into());
            };
            let (a, b) = (u32::from(from), u32::from(to));
            if b < a || b - a >= 256 {
                return Err(format!("range {text:?} must go upwards and hold at most 256 addresses"));
            }
            return Ok(Sources((a..=b).map(|n| IpAddr::V4(n.into())).collect()));
        }
        let list = text.split(',').map(ip).collect::<Result<Vec<_>, _>>()?;
        Ok(Sources(list))
    }
}

/// A human duration (`250ms`, `10s`, `5m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|_| format!("expected a duration like 10s or 250ms, got {text:?}"))
}

/// A share in 0..=1.
fn parse_share(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a number from 0 to 1, got {text:?}")),
    }
}

/// `#[serde(with = "crate::cli::human")]`: durations as `"10s"` in the JSON report.
pub mod human {
    use std::time::Duration;

    /// Serialize as a human duration.
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// `Option<Duration>` as a human duration or null.
    pub mod option {
        use std::time::Duration;

        /// Serialize as a human duration or null.
        pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sale_specs_and_source_ranges_parse() {
        assert_eq!("20x50,2000".parse(), Ok(SaleSpec { rows: 20, seats_per_row: 50, stock: 2000 }));
        assert!("20x50".parse::<SaleSpec>().is_err());
        assert!("0x50,1".parse::<SaleSpec>().is_err());
        let s: Sources = "127.0.0.1-127.0.0.4".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.0.len(), 4);
        assert_eq!(s.0[3], "127.0.0.4".parse::<IpAddr>().unwrap_or_else(|e| panic!("{e}")));
        assert!("127.0.0.4-127.0.0.1".parse::<Sources>().is_err());
        assert_eq!("127.0.0.1,127.0.0.9".parse::<Sources>().map(|s| s.0.len()), Ok(2));
    }

    #[test]
    fn every_flag_has_help_and_shares_are_checked() {
        use clap::CommandFactory;
        let cmd = Args::command();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id != "help" && id != "version" {
                assert!(arg.get_help().is_some(), "--{id} has no help");
            }
        }
        assert!(Args::try_parse_from(["loadtest", "--poll-share", "1.5"]).is_err());
        let a = Args::try_parse_from(["loadtest", "--arrivals", "2000/s", "--duration", "1m"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.arrivals, Rate(2000.0));
        assert_eq!(a.duration, Duration::from_secs(60));
    }
}
