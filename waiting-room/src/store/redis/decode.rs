//! Reading Redis replies into the store's types (integers, text, windows,
//! tick log entries, visitor ids): small helpers shared by every call.

use redis::Value;
use shared::visitor::VisitorId;

use crate::store::{TickLog, Window};

pub(super) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(super) fn int(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::Int(i)) => *i,
        Some(Value::BulkString(b)) => std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).unwrap_or(0),
        _ => 0,
    }
}

pub(super) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// The window of release.lua: {samples, errors, in_flight, arrived,
/// no_shows, bucket, count, ...}.
pub(super) fn window(v: &Value) -> Window {
    let Value::Array(items) = v else { return Window::default() };
    let at = |i: usize| to_u64(int(items.get(i)));
    let mut buckets = vec![0; crate::adaptive::BUCKETS];
    for pair in items.get(5..).unwrap_or_default().chunks_exact(2) {
        let (b, c) = (to_u64(int(Some(&pair[0]))), to_u64(int(Some(&pair[1]))));
        if let Some(slot) = usize::try_from(b).ok().and_then(|b| buckets.get_mut(b)) {
            *slot += c;
        }
    }
    Window { buckets, samples: at(0), errors: at(1), in_flight: at(2), arrived: at(3), no_shows: at(4) }
}

/// One entry of the tick log: "<tick> <ms> <n> <released> <waiting> <mode> <reason>".
pub(super) fn tick_log(line: &str) -> Option<TickLog> {
    let f: Vec<&str> = line.split(' ').collect();
    let [tick, at_ms, n, released, waiting, mode, reason] = f[..] else { return None };
    Some(TickLog {
        tick: tick.parse().ok()?,
        at_ms: at_ms.parse().ok()?,
        n: n.parse().ok()?,
        released: released.parse().ok()?,
        waiting: waiting.parse().ok()?,
        mode: mode.to_owned(),
        reason: reason.to_owned(),
    })
}

pub(super) fn visitor(v: &Value) -> Option<VisitorId> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}
