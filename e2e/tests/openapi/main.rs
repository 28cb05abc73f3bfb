//! The OpenAPI documents match the running services.
//!
//! Both documents are fetched from the real processes; then real requests go to
//! every documented route, and every answer is checked against the document:
//! the path and method are documented (else the answer must be the documented
//! 404 or 405 with a matching `Allow`), the status is documented for the
//! operation, the content type matches, and the body validates (JSON Schema
//! 2020-12, `$ref`s resolved into the document's components). Finally every
//! documented operation must have been called and every documented status seen,
//! except those whose every example is an outage or a race listed in
//! [`IMPRACTICAL`] (5xx are never provoked here).
#![allow(clippy::unwrap_used)]

mod api;
mod helpers;

use std::collections::BTreeMap;

use e2e::{ADMIN_TOKEN, Stack, StackOptions};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use shared::token::EntryClaims;

use api::{Answer, Api};
use helpers::{cookie, now_secs, scheduled_queue, websocket};

/// Examples of answers this test cannot provoke on a healthy stack: an unreadable
/// body, a request racing its own idempotency key, a double booking stopped by the
/// database constraint, a claim racing itself, a disabled admin API.
const IMPRACTICAL: &[&str] =
    &["body_unreadable", "idempotency_in_progress", "seat_booked", "already_claiming", "admin_disabled"];

#[tokio::test(flavor = "multi_thread")]
async fn both_documents_describe_every_real_answer_of_the_running_services() {
    // Two visitors are let in at once (free entry), everyone after them waits (no tick within the test);
    // one address holds one waiting place per queue; a second queue asks for a proof of work.
    let options = StackOptions {
        free_entry: 2,
        tick: "1h".into(),
        waiting_room_extra:
            "\n[[queues]]\nid = \"guarded\"\npaths = [\"/guarded\"]\nrelease_per_tick = 1\ntick = \"1h\"\n\
            session = \"10m\"\nchallenge = \"pow\"\n"
                .to_owned()
                + &scheduled_queue(),
        env: vec![("WR_LIMITS__MAX_WAITING_PER_CLIENT".into(), "1".into())],
        ..StackOptions::default()
    };
    let stack = Stack::start(options).await.unwrap();
    let (event, campaign) = stack.seed(2, 5, 1).await.unwrap();
    let mut wr = Api::fetch("waiting-room", &stack.proxy, "/wr/openapi.json").await;
    let mut bc = Api::fetch("booking-core", &stack.booking, "/api/openapi.json").await;
    let mut ops = Api::fetch("booking-core operator", &stack.booking_admin, "/admin/openapi.json").await;

    // The booking core's document is public, and reachable through the proxy too.
    let through_proxy = reqwest::get(format!("{}/api/openapi.json", stack.proxy)).await.unwrap();
    assert_eq!(through_proxy.status(), 200);
    assert!(through_proxy.json::<Value>().await.unwrap() == bc.doc, "the proxy serves another document");

    // ---- The queue API.
    let get = |api: &Api, path: &str| api.req(Method::GET, path);
    let post = |api: &Api, path: &str| api.req(Method::POST, path);
    for path in ["/wr/healthz", "/wr/livez", "/wr/readyz"] {
        assert_eq!(wr.call(get(&wr, path)).await.status, 200, "{path}");
    }
    wr.call(get(&wr, "/wr/openapi.json")).await;
    let mut tokens = Vec::new();
    let mut visitors = Vec::new();
    for expected in ["READY", "READY", "WAITING"] {
        let answer = wr.call(post(&wr, "/wr/sale/join")).await;
        assert_eq!(answer.json()["status"], expected, "{}", stack.logs());
        visitors.push(cookie(&answer, "wr_visitor").unwrap());
        if let Some(token) = answer.json()["token"].as_str() {
            tokens.push(token.to_owned());
            assert!(cookie(&answer, "wr_entry").is_some(), "READY sets wr_entry");
        }
    }
    let (token_a, token_b) = (tokens[0].clone(), tokens[1].clone());
    for (cookie, expected) in [(None, "NOT_IN_QUEUE"), (Some(&visitors[0]), "READY"), (Some(&visitors[2]), "WAITING")] {
        let mut request = get(&wr, "/wr/sale/status");
        if let Some(c) = cookie {
            request = request.header("cookie", c);
        }
        assert_eq!(wr.call(request).await.json()["status"], expected);
    }
    // A sale with a pre-queue: joining answers PREQUEUE, its lottery the
    // commitment (made by the first instance at start); a queue without one
    // has no lottery.
    assert_eq!(wr.call(post(&wr, "/wr/drop/join")).await.json()["status"], "PREQUEUE");
    for _ in 0..50 {
        if reqwest::get(format!("{}/wr/drop/lottery", stack.proxy)).await.unwrap().status() == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(wr.call(get(&wr, "/wr/drop/lottery")).await.json()["state"], "committed");
    assert_eq!(wr.call(get(&wr, "/wr/sale/lottery")).await.status, 404);
    let page = wr.call(get(&wr, "/wr/sale?return_to=/events/1").header("cookie", &visitors[2])).await;
    assert_eq!(page.status, 200);
    // Over the places cap (this address already waits once): join, page and socket say 429.
    assert_eq!(wr.call(post(&wr, "/wr/sale/join")).await.status, 429);
    let capped = wr.call(get(&wr, "/wr/sale")).await;
    assert_eq!(capped.status, 429);
    assert!(capped.headers.contains_key("retry-after"));
    // A new place in the guarded queue needs a solved challenge.
    let challenged = wr.call(post(&wr, "/wr/guarded/join")).await;
    assert_eq!(challenged.status, 428, "{}", String::from_utf8_lossy(&challenged.body));
    assert!(challenged.json()["challenge"].as_str().is_some_and(|c| c.starts_with("v1.guarded.")));
    assert_eq!(wr.call(post(&wr, "/wr/guarded/join").body("{}")).await.status, 400, "not an answer");
    let big = "x".repeat(5000);
    for (method, path) in [(Method::GET, "/wr/sale"), (Method::POST, "/wr/sale/join"), (Method::GET, "/wr/sale/status")]
    {
        assert_eq!(wr.call(wr.req(method.clone(), path).body(big.clone())).await.status, 400);
        let unknown = path.replace("/sale", "/nope");
        assert_eq!(wr.call(wr.req(method, &unknown)).await.status, 404);
    }
    // A head over 16 KiB is 431 on any path (the WebSocket's too).
    let huge = "y".repeat(17 * 1024);
    for (method, path) in [
        (Method::GET, "/wr/sale"),
        (Method::POST, "/wr/sale/join"),
        (Method::GET, "/wr/sale/status"),
        (Method::GET, "/wr/sale/ws"),
    ] {
        let answer = wr.call(wr.req(method, path).header("x-padding", huge.as_str())).await;
        assert_eq!(answer.status, 431, "{path}");
    }
    assert_eq!(wr.call(get(&wr, "/wr/sale/nothing-here")).await.status, 404);
    assert_eq!(wr.call(get(&wr, "/wr/sale/ws")).await.status, 426);
    // The WebSocket: refusals are plain HTTP answers, the upgrade a 101 whose first message is a StatusMessage.
    for (path, extra, expected) in [
        ("/wr/sale/ws", "".to_owned(), 400),
        ("/wr/nope/ws", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n".to_owned(), 404),
        ("/wr/sale/ws", format!("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nCookie: {}\r\n", visitors[0]), 101),
        ("/wr/sale/ws", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n".to_owned(), 429),
    ] {
        let (status, head, body) = websocket(&stack.proxy, path, &extra).await;
        assert_eq!(status, expected, "{head}");
        let content_type = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")))
            .map(|(_, v)| v.trim().to_owned());
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = content_type {
            headers.insert("content-type", t.parse().unwrap());
        }
        let body = body.unwrap_or_default();
        if status == 101 {
            let message: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(message["status"], "READY");
            let schema = json!({"$ref": "#/components/schemas/StatusMessage"});
            if let Err(e) = wr.validate(&schema, &message) {
                wr.failures.push(format!("WebSocket message {message} does not match StatusMessage: {e}"));
            }
            wr.check("GET", path, &Answer { status, headers, body: Vec::new() });
        } else {
            wr.check("GET", path, &Answer { status, headers, body: body.into_bytes() });
        }
    }
    let wr_paths: BTreeMap<String, String> =
        wr.doc["paths"].as_object().unwrap().keys().map(|t| (t.clone(), t.replace("{queue}", "sale"))).collect();
    wr.probe_other_methods(&wr_paths).await;

    // ---- The booking API. Tokens: two admitted visitors, and one for a queue this service does not know.
    let keys = shared::keys::KeyDir::open_or_create(&stack.dir.join("keys")).unwrap();
    let stranger = keys
        .signer
        .sign(&EntryClaims {
            sub: "0123456789abcdef0123456789abcdef".into(),
            aud: "another-queue".into(),
            iat: now_secs(),
            exp: now_secs() + 600,
            jti: "e2e-stranger".into(),
        })
        .unwrap();
    let bearer = |request: RequestBuilder, token: &str| request.bearer_auth(token);
    let admin = |request: RequestBuilder| request.bearer_auth(ADMIN_TOKEN);

    for path in ["/api/openapi.json", "/api/events", "/api/me/bookings", "/api/me/coupons"] {
        assert!((200..300).contains(&bc.call(bearer(get(&bc, path), &token_a)).await.status), "{path}");
    }
    for path in ["/healthz", "/livez", "/readyz", "/metrics", "/admin/openapi.json"] {
        assert_eq!(ops.call(get(&ops, path)).await.status, 200, "{path}");
    }
    // Operator routes do not exist on the public listener, whatever the credentials.
    for path in ["/healthz", "/livez", "/readyz", "/metrics", "/admin/stats", "/admin/stock", "/admin/openapi.json"] {
        assert_eq!(bc.call(admin(get(&bc, path))).await.status, 404, "{path}");
    }
    let e = format!("/api/events/{event}");
    assert_eq!(bc.call(bearer(get(&bc, &e), &token_a)).await.status, 200);
    let seats = bc.call(bearer(get(&bc, &format!("{e}/seats")), &token_a)).await.json();
    let seat_ids: Vec<i64> = seats["seats"].as_array().unwrap().iter().map(|s| s["id"].as_i64().unwrap()).collect();
    assert_eq!(bc.call(bearer(get(&bc, "/api/events/popular"), &token_a)).await.status, 200);
    for path in ["/api/events/999999", "/api/events/999999/seats"] {
        assert_eq!(bc.call(bearer(get(&bc, path), &token_a)).await.status, 404);
    }

    // Holds: take, conflict, already yours, no such seat, idempotent replay and misuse.
    let holds = format!("{e}/holds");
    let hold = |seat: i64| json!({ "seat_id": seat });
    let taken = bc.call(bearer(post(&bc, &holds), &token_a).json(&hold(seat_ids[0]))).await;
    assert_eq!(taken.status, 201, "{}", stack.logs());
    let h1 = taken.json()["hold_id"].as_str().unwrap().to_owned();
    assert_eq!(bc.call(bearer(post(&bc, &holds), &token_b).json(&hold(seat_ids[0]))).await.status, 409);
    assert_eq!(bc.call(bearer(post(&bc, &holds), &token_a).json(&hold(seat_ids[0]))).await.status, 409);
    assert_eq!(bc.call(bearer(post(&bc, &holds), &token_a).json(&hold(999_999))).await.status, 404);
    let keyed = |api: &Api, key: &str, seat: i64| {
        bearer(post(api, &holds), &token_a).header("idempotency-key", key).json(&hold(seat))
    };
    let first = bc.call(keyed(&bc, "k-1", seat_ids[1])).await;
    let replay = bc.call(keyed(&bc, "k-1", seat_ids[1])).await;
    assert_eq!((first.status, replay.status), (201, 201));
    assert_eq!(first.body, replay.body, "a replay is byte for byte");
    assert_eq!(replay.headers.get("idempotent-replayed").and_then(|v| v.to_str().ok()), Some("true"));
    assert_eq!(bc.call(keyed(&bc, "k-1", seat_ids[2])).await.status, 422, "same key, other request");
    assert_eq!(bc.call(keyed(&bc, "not visible ascii", seat_ids[2])).await.status, 400);

    // Confirm, confirm again, someone else's hold, release a booking; release then confirm.
    let confirm = |hold: &str| format!("/api/holds/{hold}/confirm");
    assert_eq!(bc.call(bearer(post(&bc, &confirm(&h1)), &token_a)).await.status, 200);
    assert_eq!(bc.call(bearer(post(&bc, &confirm(&h1)), &token_a)).await.status, 200);
    assert_eq!(bc.call(bearer(post(&bc, &confirm(&h1)), &token_b)).await.status, 404);
    assert_eq!(bc.call(bearer(bc.req(Method::DELETE, &format!("/api/holds/{h1}")), &token_a)).await.status, 409);
    let h3 = bc.call(bearer(post(&bc, &holds), &token_a).json(&hold(seat_ids[3]))).await.json()["hold_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(bc.call(bearer(bc.req(Method::DELETE, &format!("/api/holds/{h3}")), &token_a)).await.status, 204);
    assert_eq!(bc.call(bearer(post(&bc, &confirm(&h3)), &token_a)).await.status, 410);
    assert_eq!(bc.call(bearer(bc.req(Method::DELETE, &format!("/api/holds/{h3}")), &token_b)).await.status, 404);

    // Coupons: claim, duplicate (with the existing claim), sold out, not yet open, no such campaign.
    let claims = |id: i64| format!("/api/coupons/{id}/claims");
    assert_eq!(bc.call(bearer(post(&bc, &claims(campaign)), &token_a)).await.status, 201);
    let duplicate = bc.call(bearer(post(&bc, &claims(campaign)), &token_a)).await;
    assert_eq!(duplicate.status, 409);
    assert!(duplicate.json()["code"].is_string(), "409 carries the existing claim");
    assert_eq!(bc.call(bearer(post(&bc, &claims(campaign)), &token_b)).await.status, 410);
    let later =
        json!({"event_id": event, "stock": 5, "opens_at": "2099-01-01T00:00:00Z", "closes_at": "2099-01-02T00:00:00Z"});
    let later = ops.call(admin(post(&ops, "/admin/campaigns")).json(&later)).await;
    assert_eq!(later.status, 201);
    let later_id = later.json()["id"].as_i64().unwrap();
    assert_eq!(bc.call(bearer(post(&bc, &claims(later_id)), &token_a)).await.status, 403);
    assert_eq!(bc.call(bearer(post(&bc, &claims(999_999)), &token_a)).await.status, 404);

    // The operator API.
    let event_body = json!({"name": "Second", "venue": "Hall", "starts_at": "2030-01-01T20:00:00Z",
                            "rows": 1, "seats_per_row": 2, "price_cents": 100});
    assert_eq!(ops.call(admin(post(&ops, "/admin/events")).json(&event_body)).await.status, 201);
    let mut too_many = event_body.clone();
    too_many["rows"] = json!(703);
    assert_eq!(ops.call(admin(post(&ops, "/admin/events")).json(&too_many)).await.status, 422);
    let backwards =
        json!({"event_id": event, "stock": 1, "opens_at": "2030-01-02T00:00:00Z", "closes_at": "2030-01-01T00:00:00Z"});
    assert_eq!(ops.call(admin(post(&ops, "/admin/campaigns")).json(&backwards)).await.status, 422);
    let orphan = json!({
        "event_id": 999_999, "stock": 1, "opens_at": "2030-01-01T00:00:00Z", "closes_at": "2030-01-02T00:00:00Z"
    });
    assert_eq!(ops.call(admin(post(&ops, "/admin/campaigns")).json(&orphan)).await.status, 404);
    assert_eq!(ops.call(admin(get(&ops, "/admin/stats"))).await.status, 200);
    assert_eq!(ops.call(admin(get(&ops, "/admin/stock"))).await.status, 200);

    // Probes over every documented operation of both listeners: no credentials
    // (401), a token of an unknown queue (403 on /api), a body over the limit
    // (413), a non-integer id (400), and for JSON bodies: not JSON (415),
    // malformed (400), wrong shape (422).
    for api in [&mut bc, &mut ops] {
        let concrete: BTreeMap<String, String> = api.doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(|t| {
                let path = t
                    .replace("{id}", &event.to_string())
                    .replace("{campaign_id}", &campaign.to_string())
                    .replace("{hold_id}", &h3);
                (t.clone(), path)
            })
            .collect();
        let operations: Vec<(String, String, Value)> = api.doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(t, item)| {
                item.as_object().unwrap().iter().map(|(m, op)| (t.clone(), m.to_uppercase(), op.clone()))
            })
            .collect();
        for (template, method, op) in &operations {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let path = &concrete[template];
            let documents = |status: &str| op["responses"].get(status).is_some();
            let credentials = |request: RequestBuilder| {
                if template.starts_with("/admin") { admin(request) } else { bearer(request, &token_b) }
            };
            if documents("401") {
                assert_eq!(api.call(api.req(method.clone(), path)).await.status, 401, "{method} {template}");
            }
            if documents("403") && template.starts_with("/api") {
                let request = bearer(api.req(method.clone(), path), &stranger);
                assert_eq!(api.call(request).await.status, 403, "{method} {template}");
            }
            let large = credentials(api.req(method.clone(), path)).header("content-type", "application/json");
            assert_eq!(api.call(large.body(vec![b' '; 17 * 1024])).await.status, 413, "{method} {template}");
            if template.contains("{id}") || template.contains("{campaign_id}") {
                let bad = template.replace("{id}", "abc").replace("{campaign_id}", "abc");
                assert_eq!(
                    api.call(credentials(api.req(method.clone(), &bad))).await.status,
                    400,
                    "{method} {template}"
                );
            }
            if documents("415") {
                for (content_type, body, expected) in [
                    ("text/plain", "seat 1", 415),
                    ("application/json", "{", 400),
                    ("application/json", r#"{"surprise": 1}"#, 422),
                ] {
                    let request =
                        credentials(api.req(method.clone(), path)).header("content-type", content_type).body(body);
                    assert_eq!(api.call(request).await.status, expected, "{method} {template} {body}");
                }
            }
        }
        api.probe_other_methods(&concrete).await;
    }
    bc.call(get(&bc, "/api/nothing-here")).await;
    ops.call(get(&ops, "/api/events")).await;

    // Limits: a visitor past the rate limit of requests that change something
    // (429 on each such route), and an address past the admin failures (429 on
    // each admin route, even with the right token; last, as it locks the admin API).
    let eager = keys
        .signer
        .sign(&EntryClaims {
            sub: "fedcba9876543210fedcba9876543210".into(),
            aud: "sale".into(),
            iat: now_secs(),
            exp: now_secs() + 600,
            jti: "e2e-eager".into(),
        })
        .unwrap();
    let fake = format!("/api/holds/{event}-{}", "0".repeat(32));
    for _ in 0..70 {
        let r = bc.call(bearer(post(&bc, &format!("{fake}/confirm")), &eager)).await;
        assert!(r.status == 404 || r.status == 429, "{}", r.status);
    }
    let limited = [
        bearer(post(&bc, &holds), &eager).json(&hold(seat_ids[4])),
        bearer(bc.req(Method::DELETE, &fake), &eager),
        bearer(post(&bc, &claims(campaign)), &eager),
    ];
    for request in limited {
        assert_eq!(bc.call(request).await.status, 429);
    }
    for _ in 0..12 {
        ops.call(get(&ops, "/admin/stats").bearer_auth("not-the-admin-token")).await;
    }
    assert_eq!(ops.call(admin(get(&ops, "/admin/stats"))).await.status, 429);
    assert_eq!(ops.call(admin(get(&ops, "/admin/stock"))).await.status, 429);
    assert_eq!(ops.call(admin(post(&ops, "/admin/events")).json(&event_body)).await.status, 429);
    let campaign_body =
        json!({"event_id": event, "stock": 1, "opens_at": "2030-01-01T00:00:00Z", "closes_at": "2030-01-02T00:00:00Z"});
    assert_eq!(ops.call(admin(post(&ops, "/admin/campaigns")).json(&campaign_body)).await.status, 429);

    // ---- Everything documented was exercised; every answer conformed.
    let mut problems: Vec<String> = wr.failures.iter().chain(&bc.failures).chain(&ops.failures).cloned().collect();
    for api in [&wr, &bc, &ops] {
        problems.extend(api.unexercised().into_iter().map(|m| format!("never exercised: {m}")));
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}
