//! The `[log]` section both services read, and setting up `tracing` from it.
//!
//! Logs go to stderr (stdout stays free for anything a wrapper prints), as
//! text or one JSON object per line. In JSON, each line carries the fields of
//! the span it was logged in (`span.request_id` for the booking core's
//! `request` span), so one request can be followed across both services.

use serde::Deserialize;

use crate::config::ConfigError;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the current span's fields.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` (one object per line) for log collectors.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `booking_core=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: "info".into() }
    }
}

impl LogConfig {
    /// The filter in effect: `level`, plus `<target>=warn` for each of
    /// `quiet` (crates that log every operation at info, like sqlx) the
    /// operator's `level` does not name itself.
    pub fn filter(&self, quiet: &[&str]) -> String {
        let mut filter = self.level.clone();
        for target in quiet {
            if !self.level.contains(target) {
                filter.push_str(&format!(",{target}=warn"));
            }
        }
        filter
    }

    /// Checks `level` parses as a filter; the error names `log.level`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.level)
            .map(drop)
            .map_err(|e| ConfigError::new("log.level", format!("not a log filter: {e}")))
    }

    /// Installs the global subscriber (a no-op if one is installed already).
    pub fn init(&self, quiet: &[&str]) {
        // The level was validated with the config; the fallback only guards
        // a filter that parsed then but not now.
        let filter = tracing_subscriber::EnvFilter::try_new(self.filter(quiet))
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
        let _ = match self.format {
            LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
            LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_targets_are_capped_unless_the_level_names_them() {
        let c = LogConfig::default();
        assert_eq!(c.filter(&["sqlx"]), "info,sqlx=warn");
        let c = LogConfig { level: "debug,sqlx=debug".into(), ..LogConfig::default() };
        assert_eq!(c.filter(&["sqlx"]), "debug,sqlx=debug");
    }

    #[test]
    fn a_bad_level_is_an_error_naming_the_key() {
        let c = LogConfig { level: "info,=[".into(), ..LogConfig::default() };
        assert_eq!(c.validate().unwrap_err().key, "log.level");
        assert!(LogConfig::default().validate().is_ok());
    }
}
