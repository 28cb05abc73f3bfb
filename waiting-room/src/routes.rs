//! The routes under `/wr`: which path is which [`Route`], the dispatch of a
//! request to its function in [`api`] (or [`openapi`] for the document), and
//! the [`operation`] each route is documented as.

use pingora::prelude::Session;

use crate::api;
use crate::openapi;
use crate::problem::Failure;
use crate::reply::Reply;
use crate::state::State;

/// A route under `/wr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/wr/healthz` (the same as `/wr/readyz`)
    Health,
    /// `/wr/livez`
    Live,
    /// `/wr/readyz`
    Ready,
    /// `/wr/openapi.json`
    OpenApi,
    /// `/wr/{q}`
    Page(&'a str),
    /// `/wr/{q}/join`
    Join(&'a str),
    /// `/wr/{q}/status`
    Status(&'a str),
    /// `/wr/{q}/ws`
    Socket(&'a str),
    /// `/wr/{q}/lottery`
    Lottery(&'a str),
    /// Anything else under `/wr`.
    Unknown,
}

impl Route<'_> {
    /// Label for metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Route::Health => "healthz",
            Route::Live => "livez",
            Route::Ready => "readyz",
            Route::OpenApi => "openapi",
            Route::Page(_) => "page",
            Route::Join(_) => "join",
            Route::Status(_) => "status",
            Route::Socket(_) => "ws",
            Route::Lottery(_) => "lottery",
            Route::Unknown => "unknown",
        }
    }
}

/// Parse a path under `/wr`.
pub fn route(path: &str) -> Route<'_> {
    let rest = path.strip_prefix("/wr").unwrap_or("").trim_end_matches('/');
    let mut parts = rest.strip_prefix('/').unwrap_or(rest).split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("healthz"), None, None) => Route::Health,
        (Some("livez"), None, None) => Route::Live,
        (Some("readyz"), None, None) => Route::Ready,
        // Not a queue id: ids are letters, digits, `-` and `_`.
        (Some("openapi.json"), None, None) => Route::OpenApi,
        (Some(q), None, None) if !q.is_empty() => Route::Page(q),
        (Some(q), Some("join"), None) => Route::Join(q),
        (Some(q), Some("status"), None) => Route::Status(q),
        (Some(q), Some("ws"), None) => Route::Socket(q),
        (Some(q), Some("lottery"), None) => Route::Lottery(q),
        _ => Route::Unknown,
    }
}

/// Answer a request under `/wr` (all routes but the WebSocket, see [`api::socket`]).
pub async fn handle(state: &State, session: &mut Session, route: Route<'_>) -> Reply {
    match route {
        Route::Health => api::healthz(state, session).await,
        Route::Live => api::livez(session),
        Route::Ready => api::readyz(state, session).await,
        Route::OpenApi => openapi::document(session),
        Route::Page(q) => api::page(state, session, q).await,
        Route::Join(q) => api::join(state, session, q).await,
        Route::Status(q) => api::status(state, session, q).await,
        Route::Lottery(q) => api::lottery(state, session, q).await,
        // The proxy hands WebSocket requests to `socket`; anything else is not an upgrade.
        Route::Socket(_) => Failure::NotAnUpgrade.reply(),
        Route::Unknown => Failure::UnknownEndpoint.reply(),
    }
}

/// The documented (method, path template) of a route; `None` for
/// [`Route::Unknown`]. An exhaustive match, so a new route does not compile
/// (in the test build, which CI and clippy's `--all-targets` compile) until
/// it is documented.
#[cfg(test)]
fn operation(route: &Route<'_>) -> Option<(Vec<utoipa::openapi::path::HttpMethod>, String)> {
    fn of<P: utoipa::Path>() -> Option<(Vec<utoipa::openapi::path::HttpMethod>, String)> {
        Some((P::methods(), P::path()))
    }
    match route {
        Route::Health => of::<api::__path_healthz>(),
        Route::Live => of::<api::__path_livez>(),
        Route::Ready => of::<api::__path_readyz>(),
        Route::OpenApi => of::<openapi::__path_document>(),
        Route::Page(_) => of::<api::__path_page>(),
        Route::Join(_) => of::<api::__path_join>(),
        Route::Status(_) => of::<api::__path_status>(),
        Route::Socket(_) => of::<api::__path_socket>(),
        Route::Lottery(_) => of::<api::__path_lottery>(),
        Route::Unknown => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::Value;

    use super::*;

    #[test]
    fn routes_parse_and_unknown_paths_are_unknown() {
        assert_eq!(route("/wr/healthz"), Route::Health);
        assert_eq!(route("/wr/openapi.json"), Route::OpenApi);
        assert_eq!(route("/wr/q1"), Route::Page("q1"));
        assert_eq!(route("/wr/q1/"), Route::Page("q1"));
        assert_eq!(route("/wr/q1/join"), Route::Join("q1"));
        assert_eq!(route("/wr/q1/status"), Route::Status("q1"));
        assert_eq!(route("/wr/q1/ws"), Route::Socket("q1"));
        assert_eq!(route("/wr"), Route::Unknown);
        assert_eq!(route("/wr/q1/join/x"), Route::Unknown);
        assert_eq!(route("/wr/q1/nope"), Route::Unknown);
    }

    #[test]
    fn every_route_is_documented_at_the_path_it_is_routed_from() {
        let doc: Value = serde_json::from_slice(&openapi::json()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let paths = doc["paths"].as_object().unwrap();
        let mut seen = Vec::new();
        for (concrete, route) in [
            ("/wr/healthz", Route::Health),
            ("/wr/livez", Route::Live),
            ("/wr/readyz", Route::Ready),
            ("/wr/openapi.json", Route::OpenApi),
            ("/wr/sale", Route::Page("sale")),
            ("/wr/sale/join", Route::Join("sale")),
            ("/wr/sale/status", Route::Status("sale")),
            ("/wr/sale/ws", Route::Socket("sale")),
            ("/wr/sale/lottery", Route::Lottery("sale")),
        ] {
            assert_eq!(super::route(concrete), route);
            let (methods, template) = operation(&route).unwrap();
            assert_eq!(template.replace("{queue}", "sale"), concrete);
            let item = paths.get(&template).unwrap_or_else(|| panic!("{template} is not in the document"));
            assert_eq!(item.as_object().unwrap().len(), methods.len(), "{template}");
            seen.push(template);
        }
        assert_eq!(seen.len(), paths.len(), "documented but not routed: {:?}", paths.keys());
        assert!(operation(&Route::Unknown).is_none());
    }
}
