//! The gate and the router read every path the same way: whenever the
//! booking core's router would send a request to a handler that needs an
//! entry token, the proxy's gate classifies that path as protected by the
//! queue whose tokens the handler accepts — for the shipped configs, over
//! arbitrary paths. And the spellings that slipped past the gate before
//! reach no protected handler of the real stack.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use booking_core::http::Listener;
use booking_core::http::router::{Route, route};
use http::Method;
use proptest::prelude::*;

/// The shipped configs, as `make run` serves them.
struct Configs {
    /// Waiting room: protected paths → queue.
    queues: waiting_room::queues::Queues,
    /// Booking core: queue → events its tokens admit to (`None`: all).
    scopes: BTreeMap<String, Option<Vec<i64>>>,
    policy: waiting_room::edge::Policy,
}

fn configs() -> &'static Configs {
    static CONFIGS: std::sync::LazyLock<Configs> = std::sync::LazyLock::new(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let env = BTreeMap::<String, String>::new();
        let wr = waiting_room::config::Config::load(Some(&root.join("configs/waiting-room.toml")), &env).unwrap();
        let bc = booking_core::config::Config::load(Some(&root.join("configs/booking-core.toml")), &env).unwrap();
        Configs {
            queues: waiting_room::queues::Queues::load(&wr.queues).unwrap(),
            scopes: bc.queues.iter().map(|q| (q.id.clone(), (!q.all_events).then(|| q.events.clone()))).collect(),
            policy: waiting_room::edge::Policy::new(
                &wr.server.allowed_methods,
                &wr.server.deny_paths,
                &wr.server.allowed_origins,
            ),
        }
    });
    &CONFIGS
}

/// The queues whose tokens the handler of `route` accepts; `None` for a
/// handler that needs no token. An empty list: no token can pass it.
fn accepted_queues(c: &Configs, r: &Route) -> Option<Vec<String>> {
    let for_event = |event: i64| {
        c.scopes.iter().filter(|(_, s)| s.as_ref().is_none_or(|e| e.contains(&event))).map(|(q, _)| q.clone()).collect()
    };
    match r {
        Route::Event(id) | Route::Seats(id) | Route::Hold(id) | Route::EventPage(id) => Some(for_event(*id)),
        Route::Confirm(_) | Route::Release(_) | Route::Claim(_) | Route::MyBookings | Route::MyCoupons => {
            Some(c.scopes.keys().cloned().collect())
        }
        _ => None,
    }
}

/// What the gate and the router make of `target`; fails the property when
/// a protected handler is reachable past the gate.
fn check(target: &str) -> Result<(), TestCaseError> {
    let c = configs();
    // The proxy refuses a target that is not canonical (400) and sends
    // the canonical path upstream.
    let Ok((path, _query)) = shared::path::target(target) else { return Ok(()) };
    for method in [Method::GET, Method::POST, Method::DELETE] {
        // The booking core's operator routes are never served through the
        // proxy, whatever the booking core's listeners.
        if route(Listener::Operator, &method, &path).is_ok() {
            prop_assert!(c.policy.denied(&path), "{target} reaches an operator route through the proxy");
        }
        let Ok((r, _)) = route(Listener::Public, &method, &path) else { continue };
        // The router reads the client's own spelling the same way.
        let raw = target.split(['?', '#']).next().unwrap_or("");
        prop_assert_eq!(route(Listener::Public, &method, raw).ok().map(|(r, _)| r), Some(r.clone()), "{}", target);
        if let Some(queues) = accepted_queues(c, &r) {
            if queues.is_empty() {
                continue;
            }
            let gate = c.queues.for_path(&path).map(|q| q.id().to_owned());
            prop_assert!(
                gate.as_ref().is_some_and(|g| queues.contains(g)),
                "{target} reaches {r:?} (tokens of {queues:?}) but the gate says {gate:?}"
            );
        }
    }
    Ok(())
}

/// Path segments attackers combine: the routes' own words and ids, other
/// spellings of them, and the separators that confuse parsers.
fn segment() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        4 => prop_oneof![Just("api"), Just("events"), Just("holds"), Just("coupons"), Just("me")],
        3 => prop_oneof![Just("1"), Just("2"), Just("01"), Just("+1"), Just("%31"), Just("1%00"), Just("0x1"), Just("1.0")],
        2 => prop_oneof![Just("seats"), Just("confirm"), Just("claims"), Just("bookings"), Just("popular"), Just("abc")],
        2 => prop_oneof![Just(""), Just("."), Just(".."), Just("%2e"), Just("%2F"), Just("%2f"), Just("\\"), Just(";")],
        1 => prop_oneof![Just("metrics"), Just("admin"), Just("healthz"), Just("livez"), Just("readyz"), Just("stats"), Just("%61pi"), Just("%65vents")],
    ]
}

fn target() -> impl Strategy<Value = String> {
    (
        prop_oneof![8 => Just("/"), 1 => Just("//"), 1 => Just("")],
        proptest::collection::vec(segment(), 1..4),
        prop_oneof![Just(""), Just("/"), Just("#x"), Just("?a=1"), Just("%23"), Just("/."), Just("//")],
    )
        .prop_map(|(lead, segments, tail)| format!("{lead}{}{tail}", segments.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn a_path_routed_to_a_protected_handler_is_gated_for_its_queue(target in target()) {
        check(&target)?;
    }

    #[test]
    fn arbitrary_targets_never_pass_a_protected_handler_ungated(raw in proptest::collection::vec(any::<u8>(), 0..48)) {
        check(&String::from_utf8_lossy(&raw))?;
    }
}

#[test]
fn the_spellings_that_slipped_past_the_gate_are_caught() {
    for target in [
        "//events/1",
        "/events/01",
        "/events/+1",
        "/api/events/01/seats",
        "//api/holds/x/confirm",
        "//api/coupons/1/claims",
        "//api/me/bookings",
        "/events/1#x",
        "/api/events/%31/seats",
    ] {
        check(target).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_spelling_of_a_protected_path_gets_an_answer_from_the_real_stack_without_a_token() {
    let stack = e2e::Stack::start(e2e::StackOptions {
        paths: ["/events/1", "/api/events/1", "/api/holds", "/api/coupons", "/api/me"].map(String::from).to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    stack.seed(2, 5, 10).await.unwrap();
    let c = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let targets = [
        ("GET", "//events/1"),
        ("GET", "/events/01"),
        ("GET", "/events/+1"),
        ("GET", "/api/events/01/seats"),
        ("GET", "/api/events/+1/seats"),
        ("POST", "//api/holds/x/confirm"),
        ("POST", "//api/coupons/1/claims"),
        ("POST", "/api/coupons/01/claims"),
        ("GET", "//api/me/bookings"),
        ("GET", "/api/me//bookings"),
        ("GET", "/api/events/1/./seats"),
        ("GET", "/api/%65vents/1/seats"),
        ("GET", "/events/1#x"),
    ];
    for (method, target) in targets {
        let url = format!("{}{target}", stack.proxy);
        let r = c.request(method.parse().unwrap(), &url).header("content-type", "application/json").body("{}");
        let status = r.send().await.unwrap().status().as_u16();
        assert!([400, 401].contains(&status), "{method} {target}: {status}\n{}", stack.logs());
    }
}
