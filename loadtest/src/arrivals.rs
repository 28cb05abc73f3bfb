//! The open model: when visitors arrive, fixed before the run starts.
//!
//! Arrivals follow a rate profile (a base rate, an optional linear ramp at the
//! start, an optional spike) and never wait for earlier visitors to finish:
//! a slow system gets more concurrent visitors, not fewer arrivals. Each
//! arrival's intended time is what latencies are measured from, so delays in
//! the harness itself (a late timer, a busy runtime) show up in the numbers
//! instead of hiding them (coordinated omission).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::Rng;
use serde::Serialize;

/// Visitors per second.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rate(pub f64);

impl FromStr for Rate {
    type Err = String;

    /// `2000/s`, `500/m`, `36000/h`, or a bare number (per second).
    fn from_str(text: &str) -> Result<Rate, String> {
        let (count, unit) = text.trim().split_once('/').unwrap_or((text.trim(), "s"));
        let count: f64 = count
            .trim()
            .parse()
            .map_err(|_| format!("expected a rate like 2000/s, got {text:?} (count is not a number)"))?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => 1.0,
            "m" | "min" | "minute" => 60.0,
            "h" | "hour" => 3600.0,
            other => return Err(format!("expected a rate like 2000/s, got {text:?} (unit {other:?}: use s, m or h)")),
        };
        if !count.is_finite() || count < 0.0 {
            return Err(format!("a rate must be zero or more, got {text:?}"));
        }
        Ok(Rate(count / per))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s", self.0)
    }
}

/// A burst: the rate is `rate` during `[start, start + length)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spike {
    /// Rate during the spike (replaces the base rate).
    pub rate: Rate,
    /// When it starts, from the beginning of the run.
    #[serde(with = "crate::cli::human")]
    pub start: Duration,
    /// How long it lasts.
    #[serde(with = "crate::cli::human")]
    pub length: Duration,
}

impl FromStr for Spike {
    type Err = String;

    /// `RATE@START+LENGTH`, e.g. `10000/s@20s+5s`.
    fn from_str(text: &str) -> Result<Spike, String> {
        let bad = || format!("expected a spike like 10000/s@20s+5s (RATE@START+LENGTH), got {text:?}");
        let (rate, rest) = text.split_once('@').ok_or_else(bad)?;
        let (start, length) = rest.split_once('+').ok_or_else(bad)?;
        Ok(Spike {
            rate: rate.parse()?,
            start: humantime::parse_duration(start.trim()).map_err(|_| bad())?,
            length: humantime::parse_duration(length.trim()).map_err(|_| bad())?,
        })
    }
}

/// How gaps between arrivals are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Process {
    /// Evenly spaced at the current rate (reproducible, no bursts).
    Uniform,
    /// Exponential gaps with the current rate as mean (independent visitors).
    Poisson,
}

/// The rate over time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Profile {
    /// Base rate.
    pub rate: Rate,
    /// Arrivals stop after this long.
    #[serde(with = "crate::cli::human")]
    pub duration: Duration,
    /// The rate grows linearly from zero to the base rate over this long.
    #[serde(with = "crate::cli::human")]
    pub ramp: Duration,
    /// Optional burst.
    pub spike: Option<Spike>,
}

impl Profile {
    /// Arrivals per second at `t` seconds into the run.
    pub fn rate_at(&self, t: f64) -> f64 {
        if t < 0.0 || t >= self.duration.as_secs_f64() {
            return 0.0;
        }
        if let Some(s) = self.spike {
            let start = s.start.as_secs_f64();
            if t >= start && t < start + s.length.as_secs_f64() {
                return s.rate.0;
            }
        }
        let ramp = self.ramp.as_secs_f64();
        if ramp > 0.0 && t < ramp { self.rate.0 * t / ramp } else { self.rate.0 }
    }

    /// Expected number of arrivals (the integral of the rate).
    pub fn expected(&self) -> f64 {
        let step = 0.001;
        let steps = (self.duration.as_secs_f64() / step).ceil() as u64;
        (0..steps).map(|i| self.rate_at((i as f64 + 0.5) * step) * step).sum()
    }
}

/// Intended arrival times, from the start of the run, in order.
///
/// The cumulative rate Λ(t) is integrated in 1 ms steps (midpoint rule) and
/// an arrival happens where Λ crosses the next threshold: thresholds 0, 1, 2,
/// … for [`Process::Uniform`], sums of unit exponentials for
/// [`Process::Poisson`] (time-rescaling of a Poisson process). Arrivals inside
/// a step are interpolated linearly.
pub fn schedule(profile: &Profile, process: Process, rng: &mut impl Rng) -> Vec<Duration> {
    let step: f64 = 0.001;
    let end = profile.duration.as_secs_f64();
    let mut next_gap = || match process {
        Process::Uniform => 1.0,
        // Inverse CDF of Exp(1); 1 - u is in (0, 1], so ln is finite.
        Process::Poisson => -(1.0 - rng.r#gen::<f64>()).ln(),
    };
    let mut out = Vec::with_capacity(profile.expected().ceil() as usize + 1);
    let mut threshold = match process {
        Process::Uniform => 0.0,
        Process::Poisson => next_gap(),
    };
    let steps = (end / step).ceil() as u64;
    let mut lambda = 0.0;
    for i in 0..steps {
        let t = i as f64 * step;
        let dt = step.min(end - t);
        let r = profile.rate_at(t + dt / 2.0);
        let after = lambda + r * dt;
        while r > 0.0 && threshold <= after {
            // The first threshold (uniform: 0) is crossed at t = 0 exactly.
            let at = t + ((threshold - lambda) / r).max(0.0);
            // Arrivals happen in [0, duration): one at the very end (up to rounding) belongs to nobody.
            if at < end - 1e-7 {
                out.push(Duration::from_secs_f64(at));
            }
            threshold += next_gap();
        }
        lambda = after;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn profile(rate: f64, secs: u64) -> Profile {
        Profile { rate: Rate(rate), duration: Duration::from_secs(secs), ramp: Duration::ZERO, spike: None }
    }

    #[test]
    fn rates_parse_with_units_and_refuse_nonsense() {
        assert_eq!("2000/s".parse::<Rate>(), Ok(Rate(2000.0)));
        assert_eq!("120/m".parse::<Rate>(), Ok(Rate(2.0)));
        assert_eq!("50".parse::<Rate>(), Ok(Rate(50.0)));
        assert!("fast/s".parse::<Rate>().is_err());
        assert!("10/d".parse::<Rate>().is_err());
        assert!("-1/s".parse::<Rate>().is_err());
    }

    #[test]
    fn spikes_parse_rate_start_and_length() {
        let s: Spike = "10000/s@20s+5s".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s, Spike { rate: Rate(10000.0), start: Duration::from_secs(20), length: Duration::from_secs(5) });
        assert!("10000/s@20s".parse::<Spike>().is_err());
    }

    #[test]
    fn a_uniform_schedule_has_rate_times_duration_arrivals_evenly_spaced() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let s = schedule(&profile(200.0, 3), Process::Uniform, &mut rng);
        assert_eq!(s.len(), 600);
        assert_eq!(s[0], Duration::ZERO);
        let gap = s[101] - s[100];
        assert!((gap.as_secs_f64() - 0.005).abs() < 1e-6, "{gap:?}");
        assert!(s.windows(2).all(|w| w[0] <= w[1]));
        assert!(s.iter().all(|t| *t <= Duration::from_secs(3)));
    }

    #[test]
    fn a_poisson_schedule_matches_the_rate_on_average() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let s = schedule(&profile(1000.0, 10), Process::Poisson, &mut rng);
        // 10,000 expected; the standard deviation is 100.
        assert!((9_500..=10_500).contains(&s.len()), "{}", s.len());
        assert!(s.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn a_ramp_halves_the_arrivals_during_it_and_a_spike_adds_its_own() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let ramped = Profile { ramp: Duration::from_secs(2), ..profile(100.0, 4) };
        let s = schedule(&ramped, Process::Uniform, &mut rng);
        // 2 s ramp gives 100 arrivals, then 2 s at full rate gives 200.
        assert!((299..=301).contains(&s.len()), "{}", s.len());
        assert!(s.iter().filter(|t| **t < Duration::from_secs(1)).count() <= 26);
        let spiked = Profile {
            spike: Some(Spike { rate: Rate(1000.0), start: Duration::from_secs(1), length: Duration::from_secs(1) }),
            ..profile(100.0, 3)
        };
        let s = schedule(&spiked, Process::Uniform, &mut rng);
        assert!((1199..=1201).contains(&s.len()), "{}", s.len());
        assert!((spiked.expected() - 1200.0).abs() < 1.0);
    }
}
