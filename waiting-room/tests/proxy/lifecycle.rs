//! Sessions ending, keys surviving restarts, and config errors.

use std::process::Command;
use std::time::Duration;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_returns_the_visitor_to_not_in_queue_and_closes_the_gate() {
    let upstream = Upstream::start().await;
    let prefix = unique("expiry");
    let proxy = Proxy::start(ProxySpec {
        queues: &queue("q", "/a", 10, "200ms", "2s", 1),
        upstream: upstream.addr,
        redis_prefix: Some(&prefix),
        keys_dir: None,
        redis_url: None,
        store: None,
        limits: ONE_ADDRESS_LIMITS,
        open_files: None,
    })
    .await;
    let c = client();
    let mut v = Visitor::default();
    let s = v.join(&c, &proxy, "q").await;
    assert_eq!(s["status"], "READY", "free entry: {s}");
    let cookie = v.cookie_header();
    assert!(v.get("wr_entry").is_some(), "the token is also set as a cookie");
    // The first request verifies the token; the next ones, on the same
    // keep-alive connection, pass on the fast lane from the worker's own copy
    // of the cached token, which must close at expiry too.
    for _ in 0..3 {
        assert_eq!(c.get(proxy.url("/a/x")).header("cookie", &cookie).send().await.unwrap().status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert_eq!(v.status(&c, &proxy, "q").await["status"], "NOT_IN_QUEUE");
    let r = c.get(proxy.url("/a/x")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(upstream.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_keys_survive_a_restart() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::start(ProxySpec {
        queues: &queue("q", "/a", 10, "1s", "10m", 5),
        upstream: upstream.addr,
        redis_prefix: None,
        keys_dir: None,
        redis_url: None,
        store: None,
        limits: ONE_ADDRESS_LIMITS,
        open_files: None,
    })
    .await;
    let c = client();
    let mut v = Visitor::default();
    let token = v.join(&c, &proxy, "q").await["token"].as_str().unwrap().to_owned();
    let key_before = std::fs::read(proxy.dir.join("keys/signing.pem")).unwrap();
    proxy.restart().await;
    assert_eq!(std::fs::read(proxy.dir.join("keys/signing.pem")).unwrap(), key_before);
    let r = c.get(proxy.url("/a/x")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200, "a token issued before the restart still passes");
}

fn run_with_config(text: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wr.toml");
    std::fs::write(&path, text).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_waiting-room"));
    cmd.arg("--config").arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn invalid_config_exits_2_naming_the_key() {
    let good = queue("q", "/a", 10, "10s", "10m", 0);
    let (code, err) = run_with_config(&good.replace("\"10s\"", "\"ten\""), &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains(r#"queues[0].tick: expected a duration like "10s", got "ten""#), "{err}");

    let overlapping = format!("{good}{}", queue("r", "/a/b", 10, "10s", "10m", 0));
    let (code, err) = run_with_config(&overlapping, &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("queues[1].paths[0]") && err.contains("overlaps"), "{err}");

    let (code, err) = run_with_config(&good, &[("WR_STORE__BACKEND", "floppy")]);
    assert_eq!(code, Some(2));
    assert!(err.contains("store.backend"), "{err}");

    let (code, err) = run_with_config(&format!("{good}\n[server]\nthreds = 2\n"), &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("server.threds"), "{err}");
}
