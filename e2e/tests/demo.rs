//! The demo `make run` serves, end to end through the real proxy: the stack
//! runs the checked-in demo configuration (queue, protected paths, admission,
//! queue → event mapping, `[demo]` seeding by the booking core itself), and a
//! visitor does what the event page's script does, with the cookies a
//! browser would send.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use e2e::{Stack, StackOptions};
use serde_json::{Value, json};

/// The demo event's id on a fresh database (what the shipped configs protect and map).
const EVENT: i64 = 1;

fn shipped() -> (waiting_room::config::Config, booking_core::Config) {
    let configs = e2e::workspace_root().join("configs");
    let none = BTreeMap::<String, String>::new();
    let proxy = waiting_room::config::Config::load(Some(&configs.join("waiting-room.toml")), &none).unwrap();
    let booking = booking_core::Config::load(Some(&configs.join("booking-core.toml")), &none).unwrap();
    (proxy, booking)
}

/// The cookies a browser keeps for the proxy's origin.
#[derive(Default)]
struct Jar(BTreeMap<String, String>);

impl Jar {
    fn take(&mut self, r: &reqwest::Response) {
        for value in r.headers().get_all("set-cookie") {
            let pair = value.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.0.insert(name.trim().to_owned(), value.trim().to_owned());
        }
    }

    fn header(&self) -> String {
        self.0.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }
}

fn page_state(html: &str) -> Value {
    let start = html.find(r#"<script type="application/json" id="page-state">"#).unwrap();
    let json = &html[start..];
    let json = &json[json.find('>').unwrap() + 1..json.find("</script>").unwrap()];
    serde_json::from_str(json).unwrap()
}

/// The stack with the shipped demo configuration: queue, protected paths and
/// admission of configs/waiting-room.toml (tick shortened: the shipped few
/// seconds are for people watching the line), the queue → event mapping and
/// `[demo]` section of configs/booking-core.toml. The booking core seeds the
/// event itself.
async fn start_demo() -> (Stack, waiting_room::config::QueueConfig, booking_core::demo::DemoConfig) {
    let (proxy_config, booking_config) = shipped();
    let queue = proxy_config.queues[0].clone();
    let demo = booking_config.demo.clone();
    assert!(demo.seed, "configs/booking-core.toml seeds the demo");
    let mapping =
        booking_config.queues.iter().find(|q| q.id == queue.id).expect("the booking core maps the demo queue");
    assert!(mapping.all_events || mapping.events.contains(&EVENT), "the demo queue admits to event {EVENT}");
    let events = mapping.events.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let env = [
        ("BC_QUEUES__0__ALL_EVENTS", mapping.all_events.to_string()),
        ("BC_QUEUES__0__EVENTS", format!("[{events}]")),
        ("BC_DEMO__SEED", "true".into()),
        ("BC_DEMO__EVENT_NAME", demo.event_name.clone()),
        ("BC_DEMO__VENUE", demo.venue.clone()),
        ("BC_DEMO__ROWS", demo.rows.to_string()),
        ("BC_DEMO__SEATS_PER_ROW", demo.seats_per_row.to_string()),
        ("BC_DEMO__PRICE_CENTS", demo.price_cents.to_string()),
        ("BC_DEMO__COUPON_NAME", demo.coupon_name.clone()),
        ("BC_DEMO__COUPON_STOCK", demo.coupon_stock.to_string()),
    ];
    let stack = Stack::start(StackOptions {
        queue: queue.id.clone(),
        paths: queue.paths.clone(),
        free_entry: queue.free_entry,
        release_per_tick: queue.release_per_tick,
        tick: "1s".into(),
        session: humantime::format_duration(queue.session).to_string(),
        env: env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    (stack, queue, demo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_queues_for_the_demo_event_page_then_books_a_seat_and_claims_a_coupon_through_the_proxy() {
    let (stack, queue, demo) = start_demo().await;
    let c = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let html = "text/html,application/xhtml+xml";
    let page = format!("/events/{EVENT}");

    // Without a token: a browser is sent to the queue, the booking core refuses on its own.
    let r = c.get(format!("{}{page}", stack.proxy)).header("accept", html).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let queue_page = r.headers()["location"].to_str().unwrap().to_owned();
    let return_to = queue_page.strip_prefix(&format!("/wr/{}?return_to=", queue.id)).unwrap();
    assert_eq!(return_to.replace("%2F", "/"), page);
    let r = c.get(format!("{}{page}", stack.booking)).header("accept", html).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");

    // The queue page joins; poll the status like the page does until READY sets wr_entry.
    let mut jar = Jar::default();
    let r = c.get(format!("{}{queue_page}", stack.proxy)).header("accept", html).send().await.unwrap();
    assert_eq!(r.status(), 200);
    jar.take(&r);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !jar.0.contains_key(shared::ENTRY_COOKIE) {
        assert!(Instant::now() < deadline, "never admitted\n{}", stack.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = c.get(format!("{}/wr/{}/status", stack.proxy, queue.id)).header("cookie", jar.header()).send();
        jar.take(&r.await.unwrap());
    }
    let get = |path: String| c.get(format!("{}{path}", stack.proxy)).header("cookie", jar.header()).send();
    let post = |path: String, key: &str, body: Option<Value>| {
        let r = c.post(format!("{}{path}", stack.proxy)).header("cookie", jar.header()).header("idempotency-key", key);
        match body {
            Some(b) => r.json(&b).send(),
            None => r.send(),
        }
    };

    // The event page, seeded by the booking core from [demo].
    let r = get(page.clone()).await.unwrap();
    assert_eq!(r.status(), 200, "{}", stack.logs());
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let body = r.text().await.unwrap();
    assert!(body.contains(&format!("<h1 id=\"event-name\">{}</h1>", demo.event_name)), "{body}");
    let state = page_state(&body);
    assert_eq!(state["event"]["id"], EVENT);
    assert_eq!(state["event"]["seat_count"], demo.rows * demo.seats_per_row);
    assert_eq!(state["queue"], queue.id.as_str());
    assert!(state["session_ends_at"].is_string(), "{state}");
    assert_eq!(state["holds"], json!([]));
    assert_eq!(state["campaigns"].as_array().unwrap().len(), 1, "{state}");
    assert_eq!(state["campaigns"][0]["stock"], demo.coupon_stock);
    let campaign = state["campaigns"][0]["id"].as_i64().unwrap();

    assert_eq!(state["end_session_on"], json!(["confirm"]));
    assert_eq!(state["max_per_visitor"], 4);

    // Coupon first (the booking ends the session): a code, then the same code
    // again as the reason for a second claim.
    let r = post(format!("/api/coupons/{campaign}/claims"), "claim-1", None).await.unwrap();
    assert_eq!(r.status(), 201);
    let code = r.json::<Value>().await.unwrap()["code"].clone();
    let r = post(format!("/api/coupons/{campaign}/claims"), "claim-2", None).await.unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], code);

    // Seat map → hold (retried with the same key: replayed) → the page keeps it on reload → confirm.
    let seats: Value = get(format!("/api/events/{EVENT}/seats")).await.unwrap().json().await.unwrap();
    assert_eq!(seats["available"], demo.rows * demo.seats_per_row);
    let seat = &seats["seats"][0];
    let hold_body = json!({"seat_id": seat["id"]});
    let r = post(format!("/api/events/{EVENT}/holds"), "hold-1", Some(hold_body.clone())).await.unwrap();
    assert_eq!(r.status(), 201);
    let hold: Value = r.json().await.unwrap();
    let r = post(format!("/api/events/{EVENT}/holds"), "hold-1", Some(hold_body)).await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["idempotent-replayed"].to_str().unwrap()), (201, "true"));
    assert_eq!(r.json::<Value>().await.unwrap(), hold);
    let state = page_state(&get(page.clone()).await.unwrap().text().await.unwrap());
    assert_eq!(state["holds"][0]["hold_id"], hold["hold_id"]);
    assert_eq!(state["holds"][0]["label"], seat["label"]);
    let r = post(format!("/api/holds/{}/confirm", hold["hold_id"].as_str().unwrap()), "confirm-1", None).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["session_end"], "confirm", "the purchase ends the session");

    // What the visitor holds now, asked of the booking core directly (the
    // proxy no longer admits a token whose session ended).
    let direct = |path: &str| c.get(format!("{}{path}", stack.booking)).header("cookie", jar.header()).send();
    let seats: Value = direct(&format!("/api/events/{EVENT}/seats")).await.unwrap().json().await.unwrap();
    assert_eq!((&seats["seats"][0]["status"], &seats["seats"][0]["mine"]), (&json!("BOOKED"), &json!(true)));
    let bookings: Value = direct("/api/me/bookings").await.unwrap().json().await.unwrap();
    assert_eq!(bookings[0]["seat_label"], seat["label"]);
    let coupons: Value = direct("/api/me/coupons").await.unwrap().json().await.unwrap();
    assert_eq!(coupons[0]["code"], code);

    // The token admits to the demo event only; bad ids are a 400 problem, not a crash.
    let cookie = jar.header();
    let r = c.get(format!("{}/events/2", stack.booking)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = c.get(format!("{}/events/abc", stack.booking)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}

/// Debian's Chromium, driven by `playwright-core` from waiting-room/tests/browser.
const CHROMIUM: &str = "/usr/bin/chromium";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_the_event_page_holds_confirms_and_claims_after_the_queue() {
    let root = e2e::workspace_root();
    // Missing tools fail with instructions (a skipped browser test would let a broken page through).
    assert!(std::path::Path::new(CHROMIUM).is_file(), "{CHROMIUM} is missing: apt-get install -y chromium");
    let playwright = root.join("waiting-room/tests/browser/node_modules/playwright-core/package.json");
    assert!(playwright.is_file(), "playwright-core is missing: npm ci --prefix waiting-room/tests/browser");
    let (stack, _, demo) = start_demo().await;
    let shots = stack.dir.join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let run = tokio::process::Command::new("node")
        .arg(root.join("e2e/tests/browser/event-page.js"))
        .arg(format!("{}/events/{EVENT}", stack.proxy))
        .arg(&shots)
        .env("WR_CHROMIUM", CHROMIUM)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run).await.expect("the browser run timed out").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let r: Value = serde_json::from_str(line).unwrap_or_else(|_| {
        panic!("no result from the browser: {stdout}\n{}\n{}", String::from_utf8_lossy(&out.stderr), stack.logs())
    });
    assert_eq!(r["event"], "result", "{r:#}\n{}", stack.logs());
    assert_eq!(r["pageErrors"], json!([]), "{r:#}");
    assert!(r["queueUrl"].as_str().unwrap().contains("/wr/"), "sent to the queue first: {r:#}");
    assert_eq!(r["heading"], demo.event_name.as_str());
    assert_eq!(r["seatButtons"], demo.rows * demo.seats_per_row);
    let steps = &r["steps"];
    assert_eq!(steps["seatLabel"].as_str().unwrap().split(',').next(), Some("Row A seat 1"), "{r:#}");
    assert!(steps["hold"].as_str().unwrap().contains("Seat A1") && steps["hold"].as_str().unwrap().contains("left"));
    assert_eq!(steps["mineSeats"], 1, "{r:#}");
    assert!(steps["bookings"].as_str().unwrap().contains("Seat A1"), "{r:#}");
    assert_eq!(steps["bookedMine"], 1, "{r:#}");
    let code = steps["code"].as_str().unwrap();
    assert!(code.starts_with('C') && steps["myCoupons"].as_str().unwrap().contains(code), "{r:#}");
    assert_eq!(steps["claimButton"], json!({"text": "Claimed", "disabled": true}));
    assert_eq!(steps["sessionOpenAfterClaim"], true, "a claim does not end the session by default: {r:#}");
    let ended = steps["ended"].as_str().unwrap();
    assert!(ended.contains("Your session has ended") && ended.contains("completed your purchase"), "{r:#}");
    assert_eq!(steps["seatButtonsDisabled"], true, "{r:#}");
    assert!(r["phonePageOverflow"].as_i64().unwrap() <= 0, "the page scrolls sideways on a phone: {r:#}");
    for name in ["phone", "desktop"] {
        assert!(shots.join(format!("event-page-{name}.png")).is_file());
    }
}
