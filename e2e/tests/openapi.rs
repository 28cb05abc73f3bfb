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

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use e2e::{ADMIN_TOKEN, Stack, StackOptions};
use reqwest::{Client, Method, RequestBuilder};
use serde_json::{Value, json};
use shared::token::EntryClaims;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Examples of answers this test cannot provoke on a healthy stack: an unreadable
/// body, a request racing its own idempotency key, a double booking stopped by the
/// database constraint, a claim racing itself, a disabled admin API.
const IMPRACTICAL: &[&str] =
    &["body_unreadable", "idempotency_in_progress", "seat_booked", "already_claiming", "admin_disabled"];

/// One service's document and what the test saw of it.
struct Api {
    name: &'static str,
    base: String,
    doc: Value,
    /// (METHOD, path template, status) answered.
    seen: BTreeSet<(String, String, u16)>,
    failures: Vec<String>,
}

/// A real answer.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl Api {
    async fn fetch(name: &'static str, base: &str, path: &str) -> Api {
        let doc: Value = reqwest::get(format!("{base}{path}")).await.unwrap().json().await.unwrap();
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{name}: {}", doc["openapi"]);
        assert!(!doc["paths"].as_object().unwrap().is_empty(), "{name}: no paths");
        let api = Api { name, base: base.to_owned(), doc, seen: BTreeSet::new(), failures: Vec::new() };
        // Every schema in the document must compile as JSON Schema.
        for (schema, _) in api.doc["components"]["schemas"].as_object().unwrap() {
            api.validator(&json!({"$ref": format!("#/components/schemas/{schema}")}));
        }
        api
    }

    fn validator(&self, schema: &Value) -> jsonschema::Validator {
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.doc["components"],
            "allOf": [schema],
        });
        jsonschema::options()
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|e| panic!("{}: schema {schema} does not compile: {e}", self.name))
    }

    fn validate(&self, schema: &Value, instance: &Value) -> Result<(), String> {
        let validator = self.validator(schema);
        let errors: Vec<String> =
            validator.iter_errors(instance).map(|e| format!("{e} (at `{}`)", e.instance_path())).collect();
        if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
    }

    /// Follow a `$ref` into the document.
    fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
            Some(pointer) => self.doc.pointer(pointer).unwrap_or(&Value::Null),
            None => value,
        }
    }

    /// The documented template matching `path`; literal segments beat parameters.
    fn template(&self, path: &str) -> Option<String> {
        let segments: Vec<&str> = path.split('/').collect();
        self.doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .filter_map(|template| {
                let parts: Vec<&str> = template.split('/').collect();
                if parts.len() != segments.len() {
                    return None;
                }
                let mut literal = 0;
                for (t, s) in parts.iter().zip(&segments) {
                    if t.starts_with('{') {
                        if s.is_empty() {
                            return None;
                        }
                    } else if t == s {
                        literal += 1;
                    } else {
                        return None;
                    }
                }
                Some((literal, template.clone()))
            })
            .max()
            .map(|(_, t)| t)
    }

    fn documented_methods(&self, template: &str) -> BTreeSet<String> {
        self.doc["paths"][template].as_object().unwrap().keys().map(|m| m.to_uppercase()).collect()
    }

    /// Check one answer against the document; failures are collected.
    fn check(&mut self, method: &str, path: &str, answer: &Answer) {
        if let Err(e) = self.conforms(method, path, answer) {
            let body = String::from_utf8_lossy(&answer.body);
            let body: String = body.chars().take(300).collect();
            self.failures.push(format!("{} {method} {path} -> {}: {e}\n    body: {body}", self.name, answer.status));
        }
    }

    fn conforms(&mut self, method: &str, path: &str, answer: &Answer) -> Result<(), String> {
        let content_type = answer.headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let Some(template) = self.template(path) else {
            self.seen.insert((method.to_owned(), "(no such path)".to_owned(), answer.status));
            if answer.status != 404 {
                return Err("undocumented path answered other than 404".into());
            }
            return self.problem_body(answer, content_type.as_deref());
        };
        let op = self.doc["paths"][&template][method.to_lowercase()].clone();
        if op.is_null() {
            self.seen.insert((method.to_owned(), format!("{template} (other method)"), answer.status));
            if answer.status != 405 {
                return Err(format!("{method} is not documented for {template}, so 405 was expected"));
            }
            let allow: BTreeSet<String> = answer
                .headers
                .get("allow")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .split(',')
                .map(|m| m.trim().to_uppercase())
                .filter(|m| !m.is_empty() && m != "HEAD")
                .collect();
            let documented = self.documented_methods(&template);
            if allow != documented {
                return Err(format!("Allow {allow:?} but the document has {documented:?}"));
            }
            return self.problem_body(answer, content_type.as_deref());
        }
        self.seen.insert((method.to_owned(), template.clone(), answer.status));
        let responses = &op["responses"];
        let documented = responses.get(answer.status.to_string()).or_else(|| responses.get("default"));
        let Some(response) = documented else {
            let listed: Vec<&String> = responses.as_object().unwrap().keys().collect();
            return Err(format!("status not documented (documented: {listed:?})"));
        };
        let response = self.resolve(response).clone();
        let Some(content) = response["content"].as_object() else {
            return if answer.body.is_empty() { Ok(()) } else { Err("documented without a body, got one".into()) };
        };
        let essence = |t: &str| t.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let got = essence(content_type.as_deref().ok_or("no content-type")?);
        let Some((_, media)) = content.iter().find(|(t, _)| essence(t) == got) else {
            return Err(format!("content-type {got} not documented (documented: {:?})", content.keys()));
        };
        if got == "application/json" || got.ends_with("+json") {
            let body: Value = serde_json::from_slice(&answer.body).map_err(|e| format!("body is not JSON ({e})"))?;
            self.validate(&media["schema"], &body)?;
            if got == shared::problem::CONTENT_TYPE && body["status"] != answer.status {
                return Err("problem `status` differs from the response status".into());
            }
        }
        Ok(())
    }

    /// The body of an answer outside every operation must still be a problem.
    fn problem_body(&self, answer: &Answer, content_type: Option<&str>) -> Result<(), String> {
        if !content_type.is_some_and(|t| t.starts_with(shared::problem::CONTENT_TYPE)) {
            return Err(format!("content-type {content_type:?} is not problem+json"));
        }
        let body: Value = serde_json::from_slice(&answer.body).map_err(|e| format!("body is not JSON ({e})"))?;
        self.validate(&json!({"$ref": "#/components/schemas/Problem"}), &body)
    }

    /// Send, check, return.
    async fn call(&mut self, request: RequestBuilder) -> Answer {
        let request = request.build().unwrap();
        let (method, path) = (request.method().to_string(), request.url().path().to_owned());
        let client = Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let response = client.execute(request).await.unwrap();
        let answer = Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes().await.unwrap().to_vec(),
        };
        self.check(&method, &path, &answer);
        answer
    }

    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        Client::new().request(method, format!("{}{path}", self.base))
    }

    /// Documented statuses never answered, except those only impractical examples explain.
    fn unexercised(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for (template, item) in self.doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let method = method.to_uppercase();
                for (status, response) in op["responses"].as_object().unwrap() {
                    let code: u16 = status.parse().unwrap();
                    if code >= 500 || self.seen.contains(&(method.clone(), template.clone(), code)) {
                        continue;
                    }
                    let examples: Vec<String> = self.resolve(response)["content"]
                        .as_object()
                        .into_iter()
                        .flat_map(|c| c.values())
                        .flat_map(|m| m["examples"].as_object().into_iter().flat_map(|e| e.keys().cloned()))
                        .collect();
                    if !examples.is_empty() && examples.iter().all(|e| IMPRACTICAL.contains(&e.as_str())) {
                        continue;
                    }
                    missing.push(format!("{} {method} {template} {code} (examples: {examples:?})", self.name));
                }
            }
        }
        missing
    }

    /// Every documented path with a method it does not document: 405 with `Allow`.
    async fn probe_other_methods(&mut self, concrete: &BTreeMap<String, String>) {
        for template in self.doc["paths"].as_object().unwrap().keys().cloned().collect::<Vec<_>>() {
            let documented = self.documented_methods(&template);
            let method = ["PUT", "DELETE", "POST", "GET"].into_iter().find(|m| !documented.contains(*m)).unwrap();
            let request = self.req(Method::from_bytes(method.as_bytes()).unwrap(), &concrete[&template]);
            let answer = self.call(request).await;
            assert_eq!(answer.status, 405, "{} {method} {template}", self.name);
        }
    }
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The cookie pair (`name=value`) a response set.
fn cookie(answer: &Answer, name: &str) -> Option<String> {
    answer.headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).find_map(|c| {
        let pair = c.split(';').next()?;
        pair.starts_with(&format!("{name}=")).then(|| pair.to_owned())
    })
}

/// Raw WebSocket handshake: (status, headers and the first frame's payload when 101).
async fn websocket(proxy: &str, path: &str, extra: &str) -> (u16, String, Option<String>) {
    let address = proxy.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the response head");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    if status != 101 {
        let length: usize = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
            .map_or(0, |(_, v)| v.trim().parse().unwrap());
        while buf.len() < head_end + length {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before the body");
            buf.extend_from_slice(&chunk[..n]);
        }
        return (status, head, Some(String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned()));
    }
    // One unmasked server text frame: FIN+text, then a 7-bit, 16-bit or 64-bit length.
    let mut frame = buf[head_end..].to_vec();
    while frame.len() < 2 || frame.len() < 4 && frame[1] == 126 {
        let n = stream.read(&mut chunk).await.unwrap();
        frame.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(frame[0], 0x81, "first frame is a final text frame");
    let (len, start) = match frame[1] {
        126 => (usize::from(u16::from_be_bytes([frame[2], frame[3]])), 4),
        127 => panic!("unexpectedly long first message"),
        n => (usize::from(n), 2),
    };
    while frame.len() < start + len {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        frame.extend_from_slice(&chunk[..n]);
    }
    (status, head, Some(String::from_utf8_lossy(&frame[start..start + len]).into_owned()))
}

/// A queue whose pre-queue is open for the whole test (its sale opens in an hour).
fn scheduled_queue() -> String {
    let now = waiting_room::clock::now_ms();
    format!(
        "\n[[queues]]\nid = \"drop\"\npaths = [\"/drop\"]\nrelease_per_tick = 1\ntick = \"1h\"\nsession = \"10m\"\n\
         prequeue_from = \"{}\"\nopens_at = \"{}\"\n",
        waiting_room::clock::rfc3339_ms(now - 60_000),
        waiting_room::clock::rfc3339_ms(now + 3_600_000)
    )
}

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
