//! Path → route matching. Routes are matched on path segments, literal
//! segments first, so `/api/events/popular` is never read as an event id. The
//! route template (not the raw path) labels metrics and logs.
//!
//! Each route belongs to one listener: the operator routes (`/livez`,
//! `/readyz`, `/healthz`, `/metrics`, `/admin/…`) to the operator listener (`admin.listen`), every
//! other route to the public one. On the wrong listener a route does not
//! exist: 404 whatever the method, so the public listener does not even
//! reveal that operator paths are there.

use http::Method;

use super::Listener;
use crate::problem::RequestError;

/// A matched route with its parsed path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /livez`
    Livez,
    /// `GET /readyz`
    Readyz,
    /// `GET /healthz` (the readiness check)
    Healthz,
    /// `GET /metrics`
    Metrics,
    /// `GET /api/openapi.json` (no token: it is documentation)
    OpenApi,
    /// `GET /api/events`
    Events,
    /// `GET /api/events/popular`
    Popular,
    /// `GET /api/events/{id}`
    Event(i64),
    /// `GET /api/events/{id}/seats`
    Seats(i64),
    /// `POST /api/events/{id}/holds`
    Hold(i64),
    /// `POST /api/holds/{hold_id}/confirm`
    Confirm(String),
    /// `DELETE /api/holds/{hold_id}`
    Release(String),
    /// `POST /api/coupons/{campaign_id}/claims`
    Claim(i64),
    /// `GET /api/me/bookings`
    MyBookings,
    /// `GET /api/me/coupons`
    MyCoupons,
    /// `POST /admin/events`
    AdminEvents,
    /// `POST /admin/campaigns`
    AdminCampaigns,
    /// `GET /admin/stats`
    AdminStats,
    /// `GET /admin/stock`
    AdminStock,
    /// `GET /admin/openapi.json` (no token: it is documentation)
    AdminOpenApi,
    /// `GET /events/{id}`: the event page (HTML)
    EventPage(i64),
}

/// Match `method` and `path` on `listener`; also returns the route template.
/// The path is read in [`shared::path`]'s canonical form, as the proxy's
/// gate reads it: anything else (`//events/1`, `/events/./1`, `%2F`…) is
/// refused, and ids are canonical decimals, so no second spelling of a
/// protected path exists.
pub fn route(listener: Listener, method: &Method, path: &str) -> Result<(Route, &'static str), RequestError> {
    let path = shared::path::canonical(path).map_err(RequestError::BadPath)?;
    let inner = path.strip_prefix('/').unwrap_or(&path);
    let segments: Vec<&str> = inner.strip_suffix('/').unwrap_or(inner).split('/').collect();
    let operator_path = matches!(segments.first(), Some(&("livez" | "readyz" | "healthz" | "metrics" | "admin")));
    if operator_path != (listener == Listener::Operator) {
        return Err(RequestError::NoRoute(truncate(&path)));
    }
    let get = method == Method::GET;
    let post = method == Method::POST;
    let delete = method == Method::DELETE;
    let not_allowed = |allow: &'static str| RequestError::MethodNotAllowed { method: method.to_string(), allow };
    let matched = match segments.as_slice() {
        ["livez"] if get => (Route::Livez, "/livez"),
        ["livez"] => return Err(not_allowed("GET")),
        ["readyz"] if get => (Route::Readyz, "/readyz"),
        ["readyz"] => return Err(not_allowed("GET")),
        ["healthz"] if get => (Route::Healthz, "/healthz"),
        ["healthz"] => return Err(not_allowed("GET")),
        ["metrics"] if get => (Route::Metrics, "/metrics"),
        ["metrics"] => return Err(not_allowed("GET")),
        ["api", "openapi.json"] if get => (Route::OpenApi, "/api/openapi.json"),
        ["api", "openapi.json"] => return Err(not_allowed("GET")),
        ["api", "events"] if get => (Route::Events, "/api/events"),
        ["api", "events"] => return Err(not_allowed("GET")),
        ["api", "events", "popular"] if get => (Route::Popular, "/api/events/popular"),
        ["api", "events", "popular"] => return Err(not_allowed("GET")),
        ["api", "events", id] if get => (Route::Event(id_param("event id", id)?), "/api/events/{id}"),
        ["api", "events", _] => return Err(not_allowed("GET")),
        ["api", "events", id, "seats"] if get => (Route::Seats(id_param("event id", id)?), "/api/events/{id}/seats"),
        ["api", "events", _, "seats"] => return Err(not_allowed("GET")),
        ["api", "events", id, "holds"] if post => (Route::Hold(id_param("event id", id)?), "/api/events/{id}/holds"),
        ["api", "events", _, "holds"] => return Err(not_allowed("POST")),
        ["api", "holds", hold, "confirm"] if post => {
            (Route::Confirm((*hold).to_owned()), "/api/holds/{hold_id}/confirm")
        }
        ["api", "holds", _, "confirm"] => return Err(not_allowed("POST")),
        ["api", "holds", hold] if delete => (Route::Release((*hold).to_owned()), "/api/holds/{hold_id}"),
        ["api", "holds", _] => return Err(not_allowed("DELETE")),
        ["api", "coupons", id, "claims"] if post => {
            (Route::Claim(id_param("campaign id", id)?), "/api/coupons/{campaign_id}/claims")
        }
        ["api", "coupons", _, "claims"] => return Err(not_allowed("POST")),
        ["api", "me", "bookings"] if get => (Route::MyBookings, "/api/me/bookings"),
        ["api", "me", "bookings"] => return Err(not_allowed("GET")),
        ["api", "me", "coupons"] if get => (Route::MyCoupons, "/api/me/coupons"),
        ["api", "me", "coupons"] => return Err(not_allowed("GET")),
        ["admin", "events"] if post => (Route::AdminEvents, "/admin/events"),
        ["admin", "events"] => return Err(not_allowed("POST")),
        ["admin", "campaigns"] if post => (Route::AdminCampaigns, "/admin/campaigns"),
        ["admin", "campaigns"] => return Err(not_allowed("POST")),
        ["admin", "stats"] if get => (Route::AdminStats, "/admin/stats"),
        ["admin", "stock"] if get => (Route::AdminStock, "/admin/stock"),
        ["admin", "stats" | "stock"] => return Err(not_allowed("GET")),
        ["admin", "openapi.json"] if get => (Route::AdminOpenApi, "/admin/openapi.json"),
        ["admin", "openapi.json"] => return Err(not_allowed("GET")),
        ["events", id] if get => (Route::EventPage(id_param("event id", id)?), "/events/{id}"),
        ["events", _] => return Err(not_allowed("GET")),
        _ => return Err(RequestError::NoRoute(truncate(&path))),
    };
    Ok(matched)
}

fn id_param(what: &'static str, text: &str) -> Result<i64, RequestError> {
    shared::path::decimal_id(text).ok_or_else(|| RequestError::BadId { what, value: truncate(text) })
}

/// Echo at most 100 characters of client input in error details.
fn truncate(text: &str) -> String {
    text.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(method: &Method, path: &str) -> Result<(Route, &'static str), RequestError> {
        route(Listener::Public, method, path)
    }

    #[test]
    fn popular_is_not_an_event_id_and_ids_must_be_positive_integers() {
        assert_eq!(public(&Method::GET, "/api/events/popular").unwrap().0, Route::Popular);
        assert_eq!(public(&Method::GET, "/api/events/7/").unwrap().0, Route::Event(7));
        assert!(matches!(public(&Method::GET, "/api/events/abc"), Err(RequestError::BadId { .. })));
        assert!(matches!(public(&Method::GET, "/api/events/-1/seats"), Err(RequestError::BadId { .. })));
        assert!(matches!(public(&Method::GET, "/api/events/99999999999999999999"), Err(RequestError::BadId { .. })));
        for other_spelling in ["/api/events/01", "/api/events/+1", "/events/007", "/api/coupons/01/claims"] {
            let method = if other_spelling.ends_with("claims") { Method::POST } else { Method::GET };
            assert!(matches!(public(&method, other_spelling), Err(RequestError::BadId { .. })), "{other_spelling}");
        }
    }

    #[test]
    fn only_the_canonical_path_is_routed() {
        assert_eq!(public(&Method::GET, "/api/events/%31").unwrap().0, Route::Event(1));
        for path in
            ["//events/1", "//api/me/bookings", "/api//events/1", "/events/./1", "/events/1/..", "/api%2Fme/coupons"]
        {
            assert!(matches!(public(&Method::GET, path), Err(RequestError::BadPath(_))), "{path}");
        }
    }

    #[test]
    fn known_paths_with_other_methods_are_405_and_unknown_paths_404() {
        assert!(matches!(public(&Method::PUT, "/api/events/1/holds"), Err(RequestError::MethodNotAllowed { .. })));
        assert!(matches!(public(&Method::GET, "/api/holds/x"), Err(RequestError::MethodNotAllowed { .. })));
        assert!(matches!(public(&Method::GET, "/nope"), Err(RequestError::NoRoute(_))));
        assert_eq!(public(&Method::DELETE, "/api/holds/1-ab").unwrap().1, "/api/holds/{hold_id}");
    }

    #[test]
    fn operator_routes_exist_on_the_operator_listener_only() {
        for (method, path) in [
            (Method::GET, "/healthz"),
            (Method::GET, "/livez"),
            (Method::GET, "/readyz"),
            (Method::GET, "/metrics"),
            (Method::GET, "/admin/stats"),
            (Method::POST, "/admin/events"),
            (Method::PUT, "/admin/events"),
            (Method::GET, "/admin/nope"),
            (Method::GET, "/metrics/"),
        ] {
            assert!(matches!(public(&method, path), Err(RequestError::NoRoute(_))), "{method} {path}");
        }
        let operator = |m: &Method, p: &str| route(Listener::Operator, m, p);
        assert_eq!(operator(&Method::GET, "/metrics").unwrap().0, Route::Metrics);
        assert_eq!(operator(&Method::GET, "/livez").unwrap().0, Route::Livez);
        assert_eq!(operator(&Method::GET, "/readyz").unwrap().0, Route::Readyz);
        assert_eq!(operator(&Method::GET, "/healthz").unwrap().0, Route::Healthz);
        assert_eq!(operator(&Method::GET, "/admin/stats").unwrap().0, Route::AdminStats);
        assert!(matches!(operator(&Method::PUT, "/admin/events"), Err(RequestError::MethodNotAllowed { .. })));
        for path in ["/api/events", "/events/1", "/api/openapi.json", "/"] {
            assert!(matches!(operator(&Method::GET, path), Err(RequestError::NoRoute(_))), "{path}");
        }
    }
}
