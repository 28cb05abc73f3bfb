//! The booking once admitted: seat map, hold, claims and confirm, through the proxy.

use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::json;

use super::{Failed, Plan, Shared, call, epoch_ms};
use crate::metrics::Step;
use crate::record::{ClaimObs, HoldObs, VisitorRecord};

/// Seat map, hold, claim (and maybe a second claim), confirm: the booking
/// last, because a confirmed booking ends the visitor's session.
pub(super) async fn book(
    ctx: &Shared,
    plan: &Plan,
    rec: &mut VisitorRecord,
    rng: &mut StdRng,
    client: &reqwest::Client,
    token: &str,
    admitted: Instant,
) -> Result<(), Failed> {
    let think = |rng: &mut StdRng| {
        let max = ctx.args.think;
        let d = if max.is_zero() { Duration::ZERO } else { max.mul_f64(rng.r#gen::<f64>()) };
        async move {
            if !d.is_zero() {
                tokio::time::sleep(d).await;
            }
            Instant::now()
        }
    };
    let bearer = format!("Bearer {token}");

    let at = if ctx.args.think.is_zero() { admitted } else { think(rng).await };
    let map = call(
        ctx,
        Step::SeatMap,
        client.get(ctx.url(&format!("/api/events/{}/seats", ctx.event))).header("authorization", &bearer),
        at,
        &[200],
    )
    .await?;
    // Only the free seat ids outlive this line: a parsed map of a large hall
    // is megabytes, and hundreds of visitors think before they hold.
    let mut free: Vec<i64> = map.json()["seats"]
        .as_array()
        .map(|s| s.iter().filter(|s| s["status"] == "AVAILABLE").filter_map(|s| s["id"].as_i64()).collect())
        .unwrap_or_default();
    drop(map);
    free.shuffle(rng);

    let mut held = None;
    let mut at = think(rng).await;
    for seat in free.iter().take(ctx.args.hold_attempts.max(1) as usize) {
        let a = call(
            ctx,
            Step::Hold,
            client
                .post(ctx.url(&format!("/api/events/{}/holds", ctx.event)))
                .header("authorization", &bearer)
                .json(&json!({ "seat_id": seat })),
            at,
            &[201, 409],
        )
        .await?;
        if a.status == 201 {
            let h = a.json();
            let hold = HoldObs {
                hold_id: h["hold_id"].as_str().unwrap_or_default().to_owned(),
                seat_id: h["seat_id"].as_i64().unwrap_or(*seat),
                expires_at_ms: h["expires_at"]
                    .as_i64()
                    .or_else(|| h["expires_at"].as_str().and_then(epoch_ms))
                    .unwrap_or(0),
                confirmed: false,
                confirmed_ns: None,
            };
            held = Some(rec.holds.len());
            rec.holds.push(hold);
            break;
        }
        at = Instant::now();
    }
    if free.is_empty() {
        ctx.metrics.count(Step::Hold, "no_seat_available");
    }

    let claims = if plan.claim_twice { 2 } else { 1 };
    for _ in 0..claims {
        let at = think(rng).await;
        let a = call(
            ctx,
            Step::Claim,
            client
                .post(ctx.url(&format!("/api/coupons/{}/claims", ctx.campaign)))
                .header("authorization", &bearer)
                .header("idempotency-key", uuid::Uuid::new_v4().simple().to_string()),
            at,
            &[201, 409, 410],
        )
        .await?;
        if a.status == 201 {
            let c = a.json();
            rec.claims.push(ClaimObs {
                claim_id: c["claim_id"].as_i64().unwrap_or(-1),
                campaign_id: c["campaign_id"].as_i64().unwrap_or(ctx.campaign),
                code: c["code"].as_str().unwrap_or_default().to_owned(),
            });
        }
    }

    // Confirming last: a confirmed booking ends the visitor's session.
    if let Some(i) = held
        && plan.confirm
    {
        let at = think(rng).await;
        let url = ctx.url(&format!("/api/holds/{}/confirm", rec.holds[i].hold_id));
        let a = call(ctx, Step::Confirm, client.post(url).header("authorization", &bearer), at, &[200, 410]).await?;
        rec.holds[i].confirmed = a.status == 200;
        if a.status == 200 {
            rec.holds[i].confirmed_ns = Some(ctx.ns(Instant::now()));
        }
    }
    Ok(())
}
