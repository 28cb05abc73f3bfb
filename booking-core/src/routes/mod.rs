//! The HTTP layer's handlers, one module per area: each reads its request
//! (entry token, path, JSON body), calls the services ([`crate::holds`],
//! [`crate::coupons`], [`crate::catalogue`], …) and shapes the answer; the
//! `#[utoipa::path]` annotations and the error sets they name sit on the
//! handlers, so the services know nothing of HTTP contexts or the documents.
//! `dispatch` maps a matched [`Route`] to its handler.

pub mod admin;
pub mod catalogue;
pub mod coupons;
pub mod health;
pub mod holds;
pub mod idempotency;
pub mod openapi;
pub mod session;
pub mod web;

use crate::http::router::Route;
use crate::http::{Input, Success};
use crate::problem::Failure;

/// Run the handler of `route`.
pub(crate) async fn dispatch(cx: &Input, route: Route) -> Result<Success, Failure> {
    match route {
        Route::Livez => health::livez(cx).await,
        Route::Readyz => health::readyz(cx).await,
        Route::Healthz => health::healthz(cx).await,
        Route::Metrics => Ok(admin::metrics(cx).await),
        Route::OpenApi => openapi::serve(cx).await,
        Route::Events => catalogue::list_events(cx).await,
        Route::Popular => catalogue::popular_events(cx).await,
        Route::Event(id) => catalogue::get_event(cx, id).await,
        Route::Seats(id) => catalogue::get_seats(cx, id).await,
        Route::Hold(event_id) => holds::post_hold(cx, event_id).await,
        Route::Confirm(hold_id) => holds::post_confirm(cx, &hold_id).await,
        Route::Release(hold_id) => holds::delete_hold(cx, &hold_id).await,
        Route::Claim(campaign_id) => coupons::post_claim(cx, campaign_id).await,
        Route::MyBookings => holds::my_bookings(cx).await,
        Route::MyCoupons => coupons::my_coupons(cx).await,
        Route::AdminEvents => admin::create_event(cx).await,
        Route::AdminCampaigns => admin::create_campaign(cx).await,
        Route::AdminStats => admin::stats(cx).await,
        Route::AdminStock => admin::stock(cx).await,
        Route::AdminOpenApi => openapi::serve_admin(cx).await,
        Route::EventPage(id) => web::event_page(cx, id).await,
    }
}
