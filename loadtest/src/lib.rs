//! Open-model sale simulator for the waiting room and the booking core:
//! floods the proxy like a real sale, measures every step with latencies
//! corrected for coordinated omission, and audits every invariant after the
//! run.
//!
//! # Layout
//!
//! - [`cli`]: the flags ([`cli::Args`] is the whole configuration of a run).
//! - [`arrivals`]: the open-model schedule (rate, ramp, spike; uniform or Poisson gaps).
//! - [`visitor`]: one virtual visitor's flow, from the gate to the coupon.
//! - [`challenge`]: answering the waiting room's proof-of-work challenge (428).
//! - [`net`]: HTTP clients, WebSockets, source addresses and the socket budget.
//! - [`metrics`]: per-step HdrHistograms and live counters.
//! - [`record`]: what each visitor observed, the raw material of the audit.
//! - [`services`]: the admin APIs (queue state, stats, creating the sale).
//! - [`audit`]: the checks (ticks, FIFO order, seats, coupons, 5xx; a drop's lottery and sell-out) and their evidence.
//! - [`report`]: the text and JSON report.
//! - [`progress`]: the live progress line.
//! - [`run`](mod@run): one run from setup to report.
//!
//! The binary (`src/main.rs`) parses the flags, runs, prints the report,
//! writes `--out` and exits 1 when the audit fails. Tests call [`run()`]
//! directly with parsed [`cli::Args`].

mod arrivals;
pub mod audit;
mod challenge;
mod cli;
mod metrics;
mod net;
mod progress;
pub mod record;
mod report;
pub mod run;
mod services;
mod visitor;

pub use cli::Args;
pub use report::Report;
pub use run::run;
