//! Bad input gets a 4xx problem+json with an actionable detail, never a 5xx,
//! and the service keeps serving.

use reqwest::{Method, StatusCode};

use crate::helpers::{ADMIN_TOKEN, Backend, Response, TestApp};
use crate::on_both_backends;

on_both_backends!(malformed_unknown_oversized_and_misrouted_requests_are_4xx_problems);

async fn raw(app: &TestApp, method: Method, path: &str, token: &str, body: Vec<u8>) -> Response {
    let url = if path.starts_with("/admin") { app.admin_url(path) } else { app.url(path) };
    let req = app.client.request(method, url).bearer_auth(token).header("content-type", "application/json");
    Response::from_raw(req.body(body).send().await.unwrap()).await
}

impl Response {
    async fn from_raw(r: reqwest::Response) -> Response {
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        Response { status, headers, text, json }
    }
}

async fn malformed_unknown_oversized_and_misrouted_requests_are_4xx_problems(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (event, seats) = app.create_event(1, 2).await;
    let (_, token) = app.visitor();
    let holds = format!("/api/events/{event}/holds");

    let r = raw(&app, Method::POST, &holds, &token, b"{\"seat_id\": ".to_vec()).await;
    r.assert_problem(StatusCode::BAD_REQUEST);
    assert!(r.json["detail"].as_str().unwrap().contains("not valid JSON"), "{}", r.text);
    raw(&app, Method::POST, &holds, &token, b"".to_vec()).await.assert_problem(StatusCode::BAD_REQUEST);
    raw(&app, Method::POST, &holds, &token, b"[1,2]".to_vec()).await.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);

    let body = format!("{{\"seat_id\": {}, \"seat\": 1}}", seats[0]);
    let r = raw(&app, Method::POST, &holds, &token, body.into_bytes()).await;
    r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.json["detail"].as_str().unwrap().contains("unknown field `seat`"), "{}", r.text);
    let r = raw(&app, Method::POST, &holds, &token, b"{\"seat_id\": \"A1\"}".to_vec()).await;
    r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json["field"], "seat_id");
    let text = app.client.post(app.url(&holds)).bearer_auth(&token).header("content-type", "text/plain").body("seat 1");
    Response::from_raw(text.send().await.unwrap()).await.assert_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let huge = format!("{{\"seat_id\": {}, \"pad\": \"{}\"}}", seats[0], "x".repeat(200 * 1024));
    raw(&app, Method::POST, &holds, &token, huge.into_bytes()).await.assert_problem(StatusCode::PAYLOAD_TOO_LARGE);
    let admin_huge = "y".repeat(64 * 1024).into_bytes();
    raw(&app, Method::POST, "/admin/events", ADMIN_TOKEN, admin_huge)
        .await
        .assert_problem(StatusCode::PAYLOAD_TOO_LARGE);

    for path in ["/api/events/abc", "/api/events/abc/seats", "/api/events/0", "/api/events/99999999999999999999999"] {
        app.get(path, &token).await.assert_problem(StatusCode::BAD_REQUEST);
    }
    let r = raw(&app, Method::POST, "/api/coupons/ten/claims", &token, vec![]).await;
    r.assert_problem(StatusCode::BAD_REQUEST);
    app.confirm("not-a-hold", &token).await.assert_problem(StatusCode::NOT_FOUND);
    app.release("12-xyz", &token).await.assert_problem(StatusCode::NOT_FOUND);

    let r = raw(&app, Method::PUT, &holds, &token, vec![]).await;
    r.assert_problem(StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers.get("allow").unwrap(), "POST");
    raw(&app, Method::GET, "/api/holds/1-2", &token, vec![]).await.assert_problem(StatusCode::METHOD_NOT_ALLOWED);
    raw(&app, Method::DELETE, "/api/events", &token, vec![]).await.assert_problem(StatusCode::METHOD_NOT_ALLOWED);
    app.get("/api/nothing/here", &token).await.assert_problem(StatusCode::NOT_FOUND);
    app.get("/api/events/popular", &token).await;

    // Still serving everyone else.
    assert_eq!(app.hold(event, seats[1], &token).await.status, StatusCode::CREATED);
    let metrics = app.metrics().await;
    assert!(!metrics.contains("status=\"5"), "no 5xx was answered:\n{metrics}");
}
