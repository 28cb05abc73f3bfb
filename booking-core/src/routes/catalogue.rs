//! The catalogue routes: events, the popular list and live seat maps.

use http::StatusCode;

use crate::catalogue::{CatalogueError, EventView, PopularView, SeatMapView};
use crate::http::{Input, Success};
use crate::problem::Failure;
use crate::routes::openapi::errors::{BodyRead, Errors, NoEvent, PathId, Popularity, Scope, Server, Token};

/// Every event.
#[utoipa::path(get, path = "/api/events", tag = "events",
    responses(
        (status = 200, description = "Every event", body = [EventView]),
        Errors<(BodyRead, Token, Server)>,
    ),
    security(("entry_token" = []), ("entry_cookie" = [])),
)]
pub async fn list_events(cx: &Input) -> Result<Success, Failure> {
    cx.visitor()?;
    let events = cx.state.store().list_events().await.map_err(CatalogueError::from)?;
    let views: Vec<EventView> = events.iter().map(EventView::from).collect();
    Ok(Success::json(StatusCode::OK, &views))
}

/// The five events whose seat maps were viewed most.
#[utoipa::path(get, path = "/api/events/popular", tag = "events",
    responses(
        (status = 200, description = "Most viewed first", body = [PopularView]),
        Errors<(BodyRead, Token, Popularity, Server)>,
    ),
    security(("entry_token" = []), ("entry_cookie" = [])),
)]
pub async fn popular_events(cx: &Input) -> Result<Success, Failure> {
    cx.visitor()?;
    Ok(Success::json(StatusCode::OK, &cx.state.catalogue().popular().await?))
}

/// One event (403 outside the token's queue).
#[utoipa::path(get, path = "/api/events/{id}", tag = "events",
    params(("id" = i64, Path, description = "Event id", minimum = 1)),
    responses(
        (status = 200, description = "The event", body = EventView),
        Errors<(BodyRead, PathId, Token, Scope, NoEvent, Server)>,
    ),
    security(("entry_token" = []), ("entry_cookie" = [])),
)]
pub async fn get_event(cx: &Input, id: i64) -> Result<Success, Failure> {
    let visitor = cx.visitor()?;
    cx.state.auth().authorize(&visitor, id)?;
    let event = cx.state.catalogue().event(id).await?;
    Ok(Success::json(StatusCode::OK, &EventView::from(&event)))
}

/// The live seat map as the caller sees it (their own holds and bookings are `mine`).
#[utoipa::path(get, path = "/api/events/{id}/seats", tag = "events",
    params(("id" = i64, Path, description = "Event id", minimum = 1)),
    responses(
        (status = 200, description = "Every seat in layout order", body = SeatMapView),
        Errors<(BodyRead, PathId, Token, Scope, NoEvent, Server)>,
    ),
    security(("entry_token" = []), ("entry_cookie" = [])),
)]
pub async fn get_seats(cx: &Input, id: i64) -> Result<Success, Failure> {
    let visitor = cx.visitor()?;
    cx.state.auth().authorize(&visitor, id)?;
    Ok(Success::json(StatusCode::OK, &cx.state.catalogue().seat_map(id, &visitor.id).await?))
}
