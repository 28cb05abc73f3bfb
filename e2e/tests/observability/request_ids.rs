//! Request ids in the logs: the proxy's id on the booking core's JSON log lines.

use std::time::{Duration, Instant};

use e2e::{Stack, StackOptions};
use serde_json::Value;

use crate::QUEUE;
use crate::traffic::client;

/// The log lines of `file` in the stack's folder, each parsed as JSON. With
/// `strict`, a line that is not JSON fails the test (the service was
/// configured for JSON logs); otherwise such lines (a library writing to
/// stderr itself) are skipped.
fn json_lines(stack: &Stack, file: &str, strict: bool) -> Vec<Value> {
    let text = std::fs::read_to_string(stack.dir.join(file)).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| match serde_json::from_str(l) {
            Ok(v) => Some(v),
            Err(e) if strict => panic!("{file}: not JSON ({e}): {l}"),
            Err(_) => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_request_id_is_on_the_booking_core_json_log_lines_of_that_request() {
    let stack = Stack::start(StackOptions {
        free_entry: 10,
        env: vec![("BC_LOG__FORMAT".into(), "json".into()), ("WR_LOG__FORMAT".into(), "json".into())],
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let (event, _) = stack.seed(2, 5, 1).await.unwrap();
    let c = client();
    let ready: Value = c.post(format!("{}/wr/{QUEUE}/join", stack.proxy)).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "READY", "free entry");
    let token = ready["token"].as_str().unwrap();
    let seats = format!("{}/api/events/{event}/seats", stack.proxy);

    // A well-formed id from the client is kept; a malformed one is replaced
    // by one the proxy generates. Either way the client gets it back.
    let r = c.get(&seats).bearer_auth(token).header("x-request-id", "abc123def456").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "abc123def456");
    let r = c.get(&seats).bearer_auth(token).header("x-request-id", "bad id!").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(generated.len() == 32 && generated.bytes().all(|b| b.is_ascii_hexdigit()), "{generated}");

    let answered = |lines: &[Value], id: &str| {
        lines.iter().any(|l| {
            l["span"]["request_id"] == id
                && l["fields"]["message"] == "answered"
                && l["fields"]["status"] == 200
                && l["span"]["path"] == format!("/api/events/{event}/seats")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = json_lines(&stack, "booking-core.log", true);
        if answered(&lines, "abc123def456") && answered(&lines, &generated) {
            // Every line logged inside a request span carries the id of its request.
            for l in lines.iter().filter(|l| l["span"]["name"] == "request") {
                assert!(l["span"]["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{l}");
            }
            break;
        }
        assert!(Instant::now() < deadline, "request ids not in the booking core's log:\n{}", stack.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The proxy logs the same id for the same request.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !json_lines(&stack, "waiting-room.log", false).iter().any(|l| l["fields"]["request_id"] == "abc123def456") {
        assert!(Instant::now() < deadline, "request id not in the proxy's log:\n{}", stack.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
