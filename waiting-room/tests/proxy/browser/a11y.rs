//! Accessibility: axe-core on the queue page in every state, language and colour scheme.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use super::{CHROMIUM, browser_dir, require_browser};
use crate::helpers::*;

/// The queue page in every state, as the server renders it, in one language.
mod states {
    use waiting_room::challenge::{ALGORITHM, ChallengeBody};
    use waiting_room::clock::rfc3339_ms;
    use waiting_room::queues::Queue;
    use waiting_room::standing::{QueueStatus, StatusMessage};
    use waiting_room::tokens::Issued;

    /// A state: its name, the message, a refusal, and the section that must show.
    pub struct State {
        pub name: &'static str,
        pub message: StatusMessage,
        pub refused: Option<(&'static str, u64)>,
        pub section: &'static str,
    }

    pub fn queue(pow: bool) -> Queue {
        let config = serde_json::from_value(serde_json::json!({
            "id": "q", "name": "Summer Tour 2025: ticket sale", "paths": ["/a"],
            "release_per_tick": 1, "tick": "2s", "session": "10m",
            "challenge": if pow { "pow" } else { "off" },
        }))
        .unwrap();
        Queue::new(config)
    }

    fn message(status: QueueStatus) -> StatusMessage {
        StatusMessage { status, queue: "q".into(), ..StatusMessage::default() }
    }

    fn waiting() -> StatusMessage {
        StatusMessage {
            position: Some(1204),
            queue_length: Some(1310),
            eta_seconds: Some(150),
            retry_after_seconds: Some(5),
            ..message(QueueStatus::Waiting)
        }
    }

    pub fn all() -> Vec<State> {
        let now = waiting_room::clock::now_ms();
        let at = |ms: i64| Some(rfc3339_ms(now + ms));
        let state = |name, message, section| State { name, message, refused: None, section };
        let challenge = ChallengeBody {
            challenge: "v1.q.12.99.seed.mac".into(),
            difficulty: 12,
            algorithm: ALGORITHM,
            expires_at: rfc3339_ms(now + 60_000),
        };
        vec![
            state("waiting", waiting(), "wr-waiting"),
            state("waiting-paused", StatusMessage { paused: true, ..waiting() }, "wr-paused"),
            state(
                "waiting-random",
                StatusMessage {
                    position: None,
                    mode: Some("random"),
                    wait_range_seconds: Some([10, 300]),
                    ..waiting()
                },
                "wr-random",
            ),
            state(
                "waiting-drawn",
                StatusMessage {
                    public_id: Some("0123456789abcdef".into()),
                    lottery_url: Some("/wr/q/lottery".into()),
                    ..waiting()
                },
                "wr-drawn",
            ),
            state(
                "ready",
                StatusMessage {
                    entry: Some(Issued {
                        token: "header.payload.signature".into(),
                        expires_at: rfc3339_ms(now + 600_000),
                        admitted_at: rfc3339_ms(now),
                        max_age: 600,
                    }),
                    ..message(QueueStatus::Ready)
                },
                "wr-ready",
            ),
            state(
                "not-in-queue",
                StatusMessage { join_url: Some("/wr/q/join".into()), ..message(QueueStatus::NotInQueue) },
                "wr-gone",
            ),
            state(
                "challenge",
                StatusMessage { challenge: Some(challenge), ..message(QueueStatus::NotInQueue) },
                "wr-checking",
            ),
            State {
                refused: Some(("too many joins from your address", 30)),
                ..state("refused", message(QueueStatus::NotInQueue), "wr-busy")
            },
            state(
                "scheduled",
                StatusMessage {
                    prequeue_from: at(86_400_000 + 3_600_000),
                    opens_at: at(2 * 86_400_000),
                    retry_after_seconds: Some(60),
                    ..message(QueueStatus::Scheduled)
                },
                "wr-scheduled",
            ),
            state(
                "prequeue",
                StatusMessage {
                    opens_at: at(3_600_000),
                    queue_length: Some(5321),
                    public_id: Some("0123456789abcdef".into()),
                    lottery_url: Some("/wr/q/lottery".into()),
                    retry_after_seconds: Some(60),
                    ..message(QueueStatus::Prequeue)
                },
                "wr-prequeue",
            ),
            state("closed", message(QueueStatus::Closed), "wr-closed"),
            state(
                "sold-out",
                StatusMessage {
                    queue_length: Some(1310),
                    retry_after_seconds: Some(30),
                    ..message(QueueStatus::SoldOut)
                },
                "wr-soldout",
            ),
            state(
                "unavailable",
                StatusMessage { retry_after_seconds: Some(30), ..message(QueueStatus::Unavailable) },
                "wr-unavailable",
            ),
        ]
    }
}

/// Run `tests/browser/a11y.js` on `targets` (see there); its result.
async fn axe(targets: &Value, dir: &Path) -> Value {
    require_browser();
    assert!(
        browser_dir().join("node_modules/axe-core/axe.min.js").is_file(),
        "axe-core is missing: run `npm ci --prefix waiting-room/tests/browser`"
    );
    let file = dir.join("a11y-targets.json");
    std::fs::write(&file, serde_json::to_vec_pretty(targets).unwrap()).unwrap();
    let run = Command::new("node")
        .arg(browser_dir().join("a11y.js"))
        .arg(&file)
        .current_dir(browser_dir())
        .env("WR_CHROMIUM", CHROMIUM)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("a11y.js timed out")
        .unwrap_or_else(|e| panic!("cannot run `node` (Node.js 20 or later is required for the browser test): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: Value = stdout.lines().rev().find_map(|l| serde_json::from_str(l).ok()).unwrap_or_else(|| {
        panic!("a11y.js printed no result ({}):\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr))
    });
    assert!(out.status.success() && r["event"] == "result", "a11y.js failed: {r:#}");
    r
}

/// Every violation axe found, one line each, and the serious or critical ones.
fn violations(r: &Value) -> (Vec<String>, Vec<String>) {
    let (mut all, mut bad) = (Vec::new(), Vec::new());
    for page in r["pages"].as_array().unwrap() {
        for result in page["results"].as_array().unwrap() {
            for v in result["violations"].as_array().unwrap() {
                let line = format!(
                    "{} ({}): {} [{}] {}: {}",
                    page["name"].as_str().unwrap_or(""),
                    result["scheme"].as_str().unwrap_or(""),
                    v["id"].as_str().unwrap_or(""),
                    v["impact"].as_str().unwrap_or(""),
                    v["help"].as_str().unwrap_or(""),
                    v["nodes"]
                );
                if matches!(v["impact"].as_str(), Some("serious" | "critical")) {
                    bad.push(line.clone());
                }
                all.push(line);
            }
        }
    }
    (all, bad)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axe_finds_no_serious_problem_on_the_queue_page_in_any_state_language_or_color_scheme() {
    use waiting_room::page::{Lang, render_in};
    let dir = tempfile::tempdir().unwrap();
    let mut targets = Vec::new();
    let mut expected = Vec::new();
    for lang in Lang::ALL {
        for s in states::all() {
            let queue = states::queue(s.name == "challenge");
            let html = render_in(&queue, &s.message, "/a/start?x=1", s.refused, lang);
            let name = format!("{}-{}", s.name, lang.code());
            let file = dir.path().join(format!("{name}.html"));
            std::fs::write(&file, html).unwrap();
            let locale = if lang == Lang::De { "de-DE" } else { "en-US" };
            targets.push(serde_json::json!({
                "name": name, "url": "http://waiting-room.test/wr/q?return_to=/a/start%3Fx%3D1",
                "html": file, "locale": locale,
            }));
            expected.push((name, lang, s.message.status.as_str(), s.section));
        }
    }
    let r = axe(&Value::Array(targets), dir.path()).await;
    println!("axe-core {}", r["axeVersion"]);
    for (page, (name, lang, status, section)) in r["pages"].as_array().unwrap().iter().zip(&expected) {
        assert_eq!(page["name"], name.as_str());
        assert!(page["pageErrors"].as_array().unwrap().is_empty(), "{name}: script errors: {:#}", page["pageErrors"]);
        let results = page["results"].as_array().unwrap();
        let colors: Vec<&Value> = results.iter().map(|r| &r["shown"]["colors"]).collect();
        assert_ne!(colors[0], colors[1], "{name}: the dark scheme looks like the light one");
        for result in results {
            let shown = &result["shown"];
            assert_eq!(shown["lang"], lang.code(), "{name}: {shown:#}");
            assert_eq!(shown["status"], *status, "{name}: {shown:#}");
            let sections: Vec<&str> = shown["sections"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
            assert!(sections.contains(section), "{name}: {section} is not on screen: {sections:?}");
            // Nothing the page shows, nor what the script wrote, is in the other language.
            let text = shown["text"].as_str().unwrap();
            let other = if *lang == Lang::De { Lang::En } else { Lang::De };
            for (key, t) in other.page_texts().chain(other.live_texts()) {
                let t = t.replace("{{queue_name}}", "Summer Tour 2025: ticket sale");
                let words = t.split(' ').count();
                assert!(
                    words < 3 || t.contains('{') || !text.contains(&t),
                    "{name}: {key} shows in {:?}: {t}\n{text}",
                    other
                );
            }
        }
    }
    let (all, bad) = violations(&r);
    for line in &all {
        println!("axe: {line}");
    }
    println!(
        "{} pages checked in 2 colour schemes, {} violations, {} serious or critical",
        expected.len(),
        all.len(),
        bad.len()
    );
    assert!(bad.is_empty(), "serious or critical accessibility violations:\n{}", bad.join("\n"));
}

/// Through the real proxy: a browser whose language is German gets the
/// German page (and an English one the English page), live over the socket,
/// and axe finds nothing serious on either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_serves_the_queue_page_in_the_browsers_language() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(ProxySpec::memory(&queue("q", "/a", 1, "1m", "10m", 0), upstream.addr)).await;
    let c = client();
    for _ in 0..2 {
        assert_eq!(Visitor::default().join(&c, &proxy, "q").await["status"], "WAITING");
    }
    let targets: Vec<Value> = [("en", "en-US"), ("de", "de-DE")]
        .iter()
        .map(|(name, locale)| {
            serde_json::json!({
                "name": name, "url": proxy.url("/wr/q?return_to=/a"), "locale": locale,
                "waitFor": "html[data-wr-link=\"live\"] [data-wr=\"connection\"]",
            })
        })
        .collect();
    let r = axe(&Value::Array(targets), &proxy.dir).await;
    for page in r["pages"].as_array().unwrap() {
        for result in page["results"].as_array().unwrap() {
            let shown = &result["shown"];
            assert_eq!(shown["lang"], page["name"], "{shown:#}");
            assert_eq!(shown["status"], "WAITING", "{shown:#}");
        }
    }
    let text = |i: usize| r["pages"][i]["results"][0]["shown"]["text"].as_str().unwrap_or("").to_owned();
    assert!(
        text(0).contains("Your place in line") && text(0).contains("Live: updates as the line moves."),
        "{}",
        text(0)
    );
    assert!(
        text(1).contains("Ihr Platz in der Warteschlange") && text(1).contains("Live: aktualisiert sich"),
        "{}",
        text(1)
    );
    let (all, bad) = violations(&r);
    assert!(bad.is_empty(), "serious or critical accessibility violations:\n{}", all.join("\n"));
}
