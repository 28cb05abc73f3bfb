//! The wall clock every part of the waiting room reads, and how its times
//! are written (RFC 3339): [`shared::clock`], with the waiting room's text
//! for a time RFC 3339 cannot write.

pub use shared::clock::now_ms;

/// RFC 3339 text of a millisecond timestamp (empty outside years 0000–9999).
pub fn rfc3339_ms(ms: i64) -> String {
    shared::clock::rfc3339_ms(ms).unwrap_or_default()
}
