//! Epoch ids and the messages on a queue's channel (`Event`): the store's
//! pub/sub wire format, apart from the calls that publish it.

use super::Keys;

/// A fresh random epoch id, offered with every call that may find a line
/// without one (the store keeps the first).
pub(super) fn new_epoch() -> u64 {
    rand::random::<u64>() | 1
}

/// An epoch as the store keeps it: 16 hex digits.
pub fn epoch_id(epoch: u64) -> String {
    format!("{epoch:016x}")
}

/// A message on a queue's channel (`{p:q}:events`), as the scripts and
/// instances publish them (the key table in ARCHITECTURE.md lists them).
/// The wire format is the store's; everyone else reads these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A tick happened: `<tick> <now_ms> <released> <abandoned> <waiting>`.
    Tick {
        /// The tick's number.
        tick: u64,
        /// The store's time of the tick (ms).
        now_ms: i64,
        /// Visitors it released.
        released: u64,
        /// Visitors still waiting after it.
        waiting: u64,
    },
    /// The line's epoch, just before each tick message: `epoch <id> <tick>`.
    Epoch(u64),
    /// Places added in the interval before a tick: `pressure <tick> <joined>`.
    Pressure {
        /// How many.
        joined: u64,
    },
    /// Live settings were saved: `settings <version>`.
    Settings,
    /// The lottery was drawn: `drawn`.
    Drawn,
    /// A purchase ended a session: `revoke <visitor> <iat> <until_ms>`.
    Revoke {
        /// The visitor id (as text).
        visitor: String,
        /// The `iat` (s) of the admission whose tokens are revoked.
        iat: i64,
        /// Until when the revocation is kept (ms).
        until_ms: i64,
    },
}

impl Event {
    /// Read a message; `None` for anything else (a newer instance's
    /// message this one does not know, garbage).
    pub fn parse(payload: &str) -> Option<Event> {
        let mut words = payload.split(' ');
        let first = words.next()?;
        let rest: Vec<&str> = words.collect();
        match (first, rest.as_slice()) {
            ("settings", _) => Some(Event::Settings),
            ("drawn", []) => Some(Event::Drawn),
            ("epoch", [id, ..]) => u64::from_str_radix(id, 16).ok().map(Event::Epoch),
            ("pressure", [_, joined]) => joined.parse().ok().map(|joined| Event::Pressure { joined }),
            ("revoke", [visitor, iat, until]) => Some(Event::Revoke {
                visitor: (*visitor).to_owned(),
                iat: iat.parse().ok()?,
                until_ms: until.parse().ok()?,
            }),
            (tick, [now, released, _abandoned, waiting]) => Some(Event::Tick {
                tick: tick.parse().ok()?,
                now_ms: now.parse().ok()?,
                released: released.parse().ok()?,
                waiting: waiting.parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// The channel carrying `queue`'s [`Event`]s under `prefix`.
pub fn events_channel(prefix: &str, queue: &str) -> String {
    Keys::new(prefix, queue).key("events")
}

/// An epoch read back from the store.
pub(super) fn parse_epoch(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok().filter(|e| *e != 0)
}

#[cfg(test)]
mod event_tests {
    use super::Event;
    use proptest::prelude::*;

    #[test]
    fn every_message_the_scripts_publish_reads_back() {
        assert_eq!(
            Event::parse("12 1700000000123 5 1 40"),
            Some(Event::Tick { tick: 12, now_ms: 1_700_000_000_123, released: 5, waiting: 40 })
        );
        assert_eq!(Event::parse("epoch 00ff00ff00ff00ff 12"), Some(Event::Epoch(0x00ff_00ff_00ff_00ff)));
        assert_eq!(Event::parse("pressure 12 300"), Some(Event::Pressure { joined: 300 }));
        assert_eq!(Event::parse("settings 7"), Some(Event::Settings));
        assert_eq!(Event::parse("drawn"), Some(Event::Drawn));
        assert_eq!(
            Event::parse("revoke abc 1700000000 1700000600000"),
            Some(Event::Revoke { visitor: "abc".into(), iat: 1_700_000_000, until_ms: 1_700_000_600_000 })
        );
        for garbage in ["", "epoch", "epoch xyz 1", "pressure 1", "1 2 3", "revoke a b c", "-1 2 3 4 5", "hello"] {
            assert_eq!(Event::parse(garbage), None, "{garbage:?}");
        }
    }

    proptest! {
        /// A channel carries whatever anyone publishes: never a panic.
        #[test]
        fn any_payload_parses_or_is_ignored(payload in ".{0,64}") {
            let _ = Event::parse(&payload);
        }
    }
}
