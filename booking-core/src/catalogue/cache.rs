//! The per-event seat-map cache.
//!
//! A loader notes the event's generation before reading the database and
//! stores its result only if the generation is unchanged; every invalidation
//! bumps it. So a map read just before a hold committed can never be stored
//! after that hold's invalidation and shadow it. Check-and-store happens under
//! the DashMap shard lock, which is never held across an `.await`.

use std::sync::Arc;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use crate::store::SeatRow;

/// A cached seat map.
#[derive(Debug)]
pub struct CachedMap {
    /// Seats as loaded.
    pub seats: Vec<SeatRow>,
    /// Serve until this epoch ms: the TTL, or the first hold expiry in the
    /// map, whichever comes first (a hold expiring changes what we show).
    pub valid_until: i64,
}

#[derive(Debug, Default)]
struct Slot {
    generation: u64,
    map: Option<Arc<CachedMap>>,
}

/// Seat maps by event id.
#[derive(Debug)]
pub struct SeatMapCache {
    slots: DashMap<i64, Slot>,
    ttl_ms: i64,
}

impl SeatMapCache {
    /// A cache whose entries live at most `ttl_ms`.
    pub fn new(ttl_ms: i64) -> SeatMapCache {
        SeatMapCache { slots: DashMap::new(), ttl_ms }
    }

    /// The cached map, if present and still valid at `now`.
    pub fn get(&self, event_id: i64, now: i64) -> Option<Arc<CachedMap>> {
        self.slots.get(&event_id).and_then(|s| s.map.clone()).filter(|m| now < m.valid_until)
    }

    /// The current generation, to pass to [`SeatMapCache::store`].
    pub fn generation(&self, event_id: i64) -> u64 {
        self.slots.get(&event_id).map_or(0, |s| s.generation)
    }

    /// Store `seats` loaded at `now`, unless the event was invalidated since
    /// `generation` was read. Returns the map either way, for this request.
    pub fn store(&self, event_id: i64, generation: u64, seats: Vec<SeatRow>, now: i64) -> Arc<CachedMap> {
        let first_expiry = seats
            .iter()
            .filter(|s| s.status == "HELD")
            .filter_map(|s| s.hold_expires_at)
            .filter(|t| *t > now)
            .min()
            .unwrap_or(i64::MAX);
        let map = Arc::new(CachedMap { seats, valid_until: first_expiry.min(now.saturating_add(self.ttl_ms)) });
        match self.slots.entry(event_id) {
            Entry::Occupied(mut slot) if slot.get().generation == generation => {
                slot.get_mut().map = Some(map.clone());
            }
            Entry::Occupied(_) => {}
            Entry::Vacant(slot) if generation == 0 => {
                slot.insert(Slot { generation, map: Some(map.clone()) });
            }
            Entry::Vacant(_) => {}
        }
        map
    }

    /// Drop the event's map and bump its generation.
    pub fn invalidate(&self, event_id: i64) {
        let mut slot = self.slots.entry(event_id).or_default();
        slot.generation += 1;
        slot.map = None;
    }

    /// Drop every map.
    pub fn clear(&self) {
        for mut slot in self.slots.iter_mut() {
            slot.generation += 1;
            slot.map = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(status: &str, expires: Option<i64>) -> SeatRow {
        SeatRow {
            id: 1,
            label: "A1".into(),
            row_label: "A".into(),
            number: 1,
            price_cents: 100,
            status: status.into(),
            held_by: None,
            hold_expires_at: expires,
        }
    }

    #[test]
    fn a_load_that_raced_an_invalidation_is_not_stored() {
        let cache = SeatMapCache::new(10_000);
        let generation = cache.generation(1);
        cache.invalidate(1);
        cache.store(1, generation, vec![seat("AVAILABLE", None)], 0);
        assert!(cache.get(1, 0).is_none());
        let generation = cache.generation(1);
        cache.store(1, generation, vec![seat("AVAILABLE", None)], 0);
        assert!(cache.get(1, 0).is_some());
    }

    #[test]
    fn an_entry_expires_with_its_first_hold_or_its_ttl() {
        let cache = SeatMapCache::new(10_000);
        cache.store(1, 0, vec![seat("HELD", Some(500))], 0);
        assert!(cache.get(1, 499).is_some());
        assert!(cache.get(1, 500).is_none());
        cache.store(2, 0, vec![seat("AVAILABLE", None)], 0);
        assert!(cache.get(2, 9_999).is_some());
        assert!(cache.get(2, 10_000).is_none());
    }
}
