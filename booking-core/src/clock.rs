//! Time as epoch milliseconds: the only unit stored in the database, so
//! PostgreSQL and SQLite compare timestamps the same way.

pub use shared::clock::{now_ms, parse_rfc3339};

/// Format epoch milliseconds as RFC 3339 (`2026-05-01T19:30:00.250Z`); outside
/// years 0000–9999, the milliseconds as digits.
pub fn rfc3339(ms: i64) -> String {
    shared::clock::rfc3339_ms(ms).unwrap_or_else(|| ms.to_string())
}

/// Serde helpers for timestamps in API bodies: RFC 3339 strings on the wire,
/// epoch milliseconds in memory.
pub mod serde_ms {
    use serde::{Deserialize, Deserializer, Serializer, de};

    /// Serialize epoch milliseconds as RFC 3339.
    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*ms))
    }

    /// Deserialize an RFC 3339 string into epoch milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_rfc3339(&text).ok_or_else(|| {
            de::Error::custom(format!("expected an RFC 3339 timestamp like \"2026-05-01T19:30:00Z\", got \"{text}\""))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_milliseconds() {
        let ms = 1_777_665_000_250;
        assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
