//! Events, seat maps and popularity.
//!
//! Events never change once created, so they are cached for good. Seat maps
//! change with every hold, so they are cached per event ([`cache`]) and
//! invalidated after each committed hold, confirm, release or expiry — here
//! and, through [`crate::fanout`], on every other instance. What a seat map
//! shows is computed per request from the cached rows: a hold past its expiry
//! shows as available even before the sweeper has run, and the visitor's own
//! holds are marked `mine`.

pub mod cache;
pub mod popular;

use std::sync::Arc;

use dashmap::DashMap;
use http::StatusCode;
use serde::Serialize;

use self::cache::SeatMapCache;
use self::popular::Popular;
use crate::clock::{self, now_ms};
use crate::fanout::Fanout;
use crate::metrics::Metrics;
use crate::problem::ApiError;
use crate::store::{EventRow, Store, StoreError};

/// How many events `GET /api/events/popular` lists.
pub const POPULAR_COUNT: usize = 5;

/// Catalogue errors.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// → 404: no such event.
    #[error("there is no event {0}; GET /api/events lists them")]
    NoEvent(i64),
    /// → 503: Redis did not answer the popularity query.
    #[error("popularity is unavailable: {0}")]
    Redis(#[from] redis::RedisError),
    /// → 500/503.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError for CatalogueError {
    fn status(&self) -> StatusCode {
        match self {
            CatalogueError::NoEvent(_) => StatusCode::NOT_FOUND,
            CatalogueError::Redis(_) => StatusCode::SERVICE_UNAVAILABLE,
            CatalogueError::Store(e) => e.status(),
        }
    }
}

/// An event as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventView {
    /// Event id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Venue.
    pub venue: String,
    /// Start (RFC 3339).
    #[serde(with = "clock::serde_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub starts_at: i64,
    /// Number of seats.
    pub seat_count: i64,
}

impl From<&EventRow> for EventView {
    fn from(e: &EventRow) -> Self {
        EventView {
            id: e.id,
            name: e.name.clone(),
            venue: e.venue.clone(),
            starts_at: e.starts_at,
            seat_count: e.seat_count,
        }
    }
}

/// One seat in a seat map.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SeatView {
    /// Seat id (what `POST /holds` takes).
    pub id: i64,
    /// `A12`.
    pub label: String,
    /// `A`.
    pub row: String,
    /// `12`.
    pub number: i64,
    /// Price in cents.
    pub price_cents: i64,
    /// `AVAILABLE`, `HELD` or `BOOKED`.
    #[schema(value_type = SeatStatus)]
    pub status: &'static str,
    /// True when the caller holds or booked this seat.
    pub mine: bool,
}

/// `status` of a seat in a seat map.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SeatStatus {
    /// Free to hold.
    Available,
    /// Held by a live hold.
    Held,
    /// Booked.
    Booked,
}

/// A seat map.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SeatMapView {
    /// The event.
    pub event_id: i64,
    /// Seats available right now.
    pub available: usize,
    /// Every seat, in layout order.
    pub seats: Vec<SeatView>,
}

/// An entry of the popular list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PopularView {
    /// The event.
    #[serde(flatten)]
    pub event: EventView,
    /// Seat-map views counted.
    pub views: u64,
}

/// Events, seat maps and popularity; cheap to clone.
#[derive(Clone)]
pub struct Catalogue(Arc<Inner>);

struct Inner {
    store: Store,
    events: DashMap<i64, EventRow>,
    seat_maps: SeatMapCache,
    fanout: Fanout,
    popular: Popular,
    metrics: Metrics,
}

impl Catalogue {
    /// A catalogue over `store`, publishing invalidations through `fanout`.
    pub fn new(store: Store, fanout: Fanout, popular: Popular, seat_map_ttl_ms: i64, metrics: Metrics) -> Catalogue {
        Catalogue(Arc::new(Inner {
            store,
            events: DashMap::new(),
            seat_maps: SeatMapCache::new(seat_map_ttl_ms),
            fanout,
            popular,
            metrics,
        }))
    }

    /// One event (cached: events do not change).
    pub async fn event(&self, id: i64) -> Result<EventRow, CatalogueError> {
        if let Some(e) = self.0.events.get(&id) {
            return Ok(e.clone());
        }
        let event = self.0.store.event(id).await?.ok_or(CatalogueError::NoEvent(id))?;
        self.0.events.insert(id, event.clone());
        Ok(event)
    }

    /// The seat map of `event_id` as `visitor_id` sees it; counts a view.
    pub async fn seat_map(&self, event_id: i64, visitor_id: &str) -> Result<SeatMapView, CatalogueError> {
        self.event(event_id).await?;
        let now = now_ms();
        let map = match self.0.seat_maps.get(event_id, now) {
            Some(map) => {
                self.0.metrics.cache_hits.inc();
                map
            }
            None => {
                self.0.metrics.cache_misses.inc();
                let generation = self.0.seat_maps.generation(event_id);
                let seats = self.0.store.seat_map(event_id).await?;
                self.0.seat_maps.store(event_id, generation, seats, now)
            }
        };
        self.0.popular.record(event_id);
        let seats: Vec<SeatView> = map
            .seats
            .iter()
            .map(|s| {
                let live_hold = s.status == "HELD" && s.hold_expires_at.is_some_and(|t| t > now);
                let status = match s.status.as_str() {
                    "BOOKED" => "BOOKED",
                    _ if live_hold => "HELD",
                    _ => "AVAILABLE",
                };
                SeatView {
                    id: s.id,
                    label: s.label.clone(),
                    row: s.row_label.clone(),
                    number: s.number,
                    price_cents: s.price_cents,
                    status,
                    mine: status != "AVAILABLE" && s.held_by.as_deref() == Some(visitor_id),
                }
            })
            .collect();
        let available = seats.iter().filter(|s| s.status == "AVAILABLE").count();
        Ok(SeatMapView { event_id, available, seats })
    }

    /// A change to `event_id`'s seats was committed: drop the local map and
    /// tell the other instances.
    pub async fn seats_changed(&self, event_id: i64) {
        self.0.seat_maps.invalidate(event_id);
        self.0.fanout.publish(event_id);
    }

    /// Drop one event's map here only (an invalidation from another instance).
    pub fn invalidate_local(&self, event_id: i64) {
        self.0.seat_maps.invalidate(event_id);
    }

    /// Drop every map here (invalidations may have been missed).
    pub fn invalidate_all_local(&self) {
        self.0.seat_maps.clear();
    }

    /// The most viewed events.
    pub async fn popular(&self) -> Result<Vec<PopularView>, CatalogueError> {
        let mut out = Vec::new();
        for (id, views) in self.0.popular.top(POPULAR_COUNT).await? {
            match self.event(id).await {
                Ok(e) => out.push(PopularView { event: EventView::from(&e), views }),
                // A view counted for an event of another deployment sharing Redis.
                Err(CatalogueError::NoEvent(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// Row labels: A..Z, then AA..ZZ.
pub fn row_label(index: i64) -> String {
    let letter = |i: i64| char::from(b'A' + u8::try_from(i.rem_euclid(26)).unwrap_or(0));
    if index < 26 { letter(index).to_string() } else { format!("{}{}", letter(index / 26 - 1), letter(index % 26)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_labelled_a_to_zz() {
        assert_eq!(row_label(0), "A");
        assert_eq!(row_label(25), "Z");
        assert_eq!(row_label(26), "AA");
        assert_eq!(row_label(27), "AB");
        assert_eq!(row_label(701), "ZZ");
    }
}
