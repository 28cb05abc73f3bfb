//! The booking core's event page under axe-core in headless Chromium, through
//! the whole stack: the browser asks for the event page, waits in the queue,
//! lands on the page and is checked there, then after claiming a coupon,
//! holding a seat and confirming it (which ends the session), in the light
//! and the dark colour scheme. The queue page's states are checked in
//! `waiting-room/tests/proxy/browser/a11y.rs`; both use
//! `waiting-room/tests/browser/a11y.js`.
//!
//! Fails (never skips) when Chromium, `playwright-core` or `axe-core` is
//! missing; nothing is downloaded.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::{Stack, StackOptions};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axe_finds_no_serious_problem_on_the_event_page_in_either_color_scheme() {
    let root = e2e::workspace_root();
    let browser = root.join("waiting-room/tests/browser");
    assert!(std::path::Path::new(CHROMIUM).is_file(), "{CHROMIUM} is missing: apt-get install -y chromium");
    for module in ["playwright-core/package.json", "axe-core/axe.min.js"] {
        assert!(
            browser.join("node_modules").join(module).is_file(),
            "{module} is missing: npm ci --prefix waiting-room/tests/browser"
        );
    }
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let (event, _) = stack.seed(4, 10, 5).await.unwrap();
    let targets = json!([{
        "name": "event page",
        "url": format!("{}/events/{event}", stack.proxy),
        "waitForPath": format!("/events/{event}"),
        "waitFor": "#seatmap button[aria-disabled=\"false\"]",
        "steps": [
            {"name": "coupon claimed", "click": "#campaigns button.primary", "waitFor": "#campaigns .result code.coupon"},
            {"name": "seat held", "click": "#seatmap button[aria-disabled=\"false\"]", "waitFor": "#holds .hold"},
            {"name": "booked, session ended", "click": "#holds .confirm", "waitFor": "#ended"},
        ],
    }]);
    let file = stack.dir.join("a11y-targets.json");
    std::fs::write(&file, targets.to_string()).unwrap();
    let run = tokio::process::Command::new("node")
        .arg(browser.join("a11y.js"))
        .arg(&file)
        .current_dir(&browser)
        .env("WR_CHROMIUM", CHROMIUM)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run).await.expect("a11y.js timed out").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|_| {
        panic!("no result from a11y.js: {stdout}\n{}\n{}", String::from_utf8_lossy(&out.stderr), stack.logs())
    });
    assert_eq!(r["event"], "result", "{r:#}\n{}", stack.logs());

    let pages = r["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 4, "the page and its three steps: {r:#}");
    let mut serious = Vec::new();
    for page in pages {
        assert_eq!(page["pageErrors"], json!([]), "{page:#}");
        let results = page["results"].as_array().unwrap();
        assert_ne!(results[0]["shown"]["colors"], results[1]["shown"]["colors"], "the scheme switched: {page:#}");
        for result in results {
            assert!(result["shown"]["url"].as_str().unwrap().ends_with(&format!("/events/{event}")), "{result:#}");
            for v in result["violations"].as_array().unwrap() {
                let line = format!(
                    "{} ({}): {} [{}] {} {}",
                    page["name"], result["scheme"], v["id"], v["impact"], v["help"], v["nodes"]
                );
                println!("axe: {line}");
                if v["impact"] == "serious" || v["impact"] == "critical" {
                    serious.push(line);
                }
            }
        }
    }
    println!("axe-core {}: {} states of the event page checked in 2 colour schemes", r["axeVersion"], pages.len());
    assert!(serious.is_empty(), "serious or critical accessibility violations:\n{}", serious.join("\n"));
}
