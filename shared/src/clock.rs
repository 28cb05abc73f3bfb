//! The wall clock both services read, and how its times are written: epoch
//! milliseconds in memory and in storage, RFC 3339 text on the wire.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since the Unix epoch, now (0 if the system clock is set
/// before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// RFC 3339 text of a millisecond timestamp (`2026-05-01T19:30:00.25Z`), or
/// `None` outside the years RFC 3339 can write (0000–9999); each caller
/// says what stands in for it then.
pub fn rfc3339_ms(ms: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok().and_then(|t| t.format(&Rfc3339).ok())
}

/// Parse an RFC 3339 timestamp into epoch milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_milliseconds() {
        let ms = 1_777_665_000_250;
        assert_eq!(rfc3339_ms(ms).and_then(|t| parse_rfc3339(&t)), Some(ms));
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(rfc3339_ms(i64::MAX), None);
    }

    #[test]
    fn now_is_after_2020() {
        assert!(now_ms() > 1_577_836_800_000);
    }
}
