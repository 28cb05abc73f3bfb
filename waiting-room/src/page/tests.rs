//! Unit tests of the queue page: rendering, escaping, placeholders, languages and the texts in words.

use super::*;
use crate::config::QueueConfig;
use crate::tokens::Issued;

fn queue(name: &str, template: Option<&str>) -> Queue {
    let config: QueueConfig = serde_json::from_value(serde_json::json!({
        "id": "drop", "name": name, "paths": ["/a"], "release_per_tick": 1, "tick": "2s", "session": "10m",
    }))
    .unwrap();
    Queue::defined(crate::queues::Def::new(config, template.map(str::to_owned)))
}

fn waiting(position: u64, eta: u64, retry: u64) -> StatusMessage {
    StatusMessage {
        status: QueueStatus::Waiting,
        queue: "drop".into(),
        position: Some(position),
        queue_length: Some(position + 10),
        eta_seconds: Some(eta),
        retry_after_seconds: Some(retry),
        paused: false,
        entry: None,
        ..StatusMessage::default()
    }
}

fn ready() -> StatusMessage {
    StatusMessage {
        status: QueueStatus::Ready,
        queue: "drop".into(),
        position: None,
        queue_length: None,
        eta_seconds: None,
        retry_after_seconds: None,
        paused: false,
        entry: Some(Issued {
            token: "header.payload.signature".into(),
            expires_at: "2030-01-01T00:00:00Z".into(),
            admitted_at: "2030-01-01T00:00:00.000Z".into(),
            max_age: 600,
        }),
        ..StatusMessage::default()
    }
}

#[test]
fn only_same_origin_paths_are_returned_to() {
    assert_eq!(safe_return_to(Some("/api/events/42?x=1")), "/api/events/42?x=1");
    assert_eq!(safe_return_to(Some("//evil.example/x")), "/");
    assert_eq!(safe_return_to(Some("https://evil.example/")), "/");
    assert_eq!(safe_return_to(Some("/\\evil")), "/");
    assert_eq!(safe_return_to(None), "/");
}

#[test]
fn a_hostile_queue_name_is_escaped_everywhere_and_never_expanded() {
    let hostile = "<script>alert('x')</script> & \"{{script}}\"";
    let html = render(&queue(hostile, None), &waiting(3, 100, 10), "/a", None);
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;{{script}}&quot;"));
    // In the JSON block the name is data, and cannot close the element.
    assert!(html.contains(r#""name":"\u003cscript\u003ealert('x')\u003c/script\u003e \u0026 \"{{script}}\"""#));
    assert_eq!(html.matches("id=\"wr-data\"").count(), 1, "the name's {{{{script}}}} was expanded");
}

#[test]
fn a_return_path_cannot_break_out_of_the_data_block() {
    let html = render(&queue("Drop", None), &waiting(3, 100, 10), "/a/</script><script>x()</script>", None);
    assert!(!html.contains("</script><script>x()"));
    assert!(html.contains(r#""return_to":"/a/\u003c/script\u003e\u003cscript\u003ex()\u003c/script\u003e""#));
}

#[test]
fn an_operator_template_gets_every_placeholder_filled() {
    let t = "<title>{{queue_name}}</title>{{refresh}}<b data-wr=\"position\">{{ position }}</b> {{eta}} \
             ({{eta_seconds}} s) of {{queue_length}} in {{queue_id}} [{{status}} paused={{paused}}] \
             <a href=\"{{return_to}}\">go</a> {{unknown}} {{ unclosed";
    let html = render(&queue("Big Drop", Some(t)), &waiting(1204, 150, 15), "/a/b?c=1&d=2", None);
    let (before_script, script) = html.split_once("<script type=").unwrap_or((&html, ""));
    assert_eq!(
        before_script,
        "<title>Big Drop</title><noscript><meta http-equiv=\"refresh\" content=\"15\"></noscript>\
         <b data-wr=\"position\">1,204</b> about 3 minutes (150 s) of 1,214 in drop [WAITING paused=false] \
         <a href=\"/a/b?c=1&amp;d=2\">go</a> {{unknown}} {{ unclosed"
    );
    assert!(script.is_empty(), "no {{{{script}}}} placeholder, so no script");
    let live = render(&queue("Big Drop", Some("<body>{{script}}</body>")), &waiting(2, 5, 2), "/a", None);
    assert!(live.contains("<script type=\"application/json\" id=\"wr-data\">{"));
    assert!(live.contains("\"position\":2") && live.contains("connectSocket"));
}

#[test]
fn the_example_operator_template_uses_only_known_placeholders() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/page-template.example.html");
    let template = std::fs::read_to_string(path).unwrap();
    let html = render(&queue("Drop", Some(&template)), &waiting(3, 100, 10), "/a", None);
    // `{{this}}` is the comment's illustration of the syntax; nothing else may survive.
    assert_eq!(html.matches("{{").count(), 1, "{html}");
    assert!(html.contains("data-wr=\"position\">3</span>") && html.contains("id=\"wr-data\""));
}

#[test]
fn an_operator_template_follows_the_visitors_language_only_if_it_names_lang() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/page-template.example.html");
    let example = std::fs::read_to_string(path).unwrap();
    let html = render_in(&queue("Drop", Some(&example)), &waiting(1204, 150, 10), "/a", None, Lang::De);
    assert!(html.contains("<html lang=\"de\"") && html.contains("<h1>Sie sind in der Warteschlange</h1>"));
    assert!(html.contains("data-wr=\"eta\">etwa 3 Minuten</") && html.contains(r#""lang":"de""#));
    let fixed = "<html lang=\"en\"><p>Wait: {{eta}} at {{position}}</p>{{script}}";
    let html = render_in(&queue("Drop", Some(fixed)), &waiting(1204, 150, 10), "/a", None, Lang::De);
    assert!(html.contains("<p>Wait: about 3 minutes at 1,204</p>") && html.contains(r#""lang":"en""#), "{html}");
}

#[test]
fn the_ready_page_refreshes_straight_to_the_return_path_and_holds_no_token() {
    let html = render(&queue("Drop", None), &ready(), "/a/start?x=1&y=2", None);
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"0;url=/a/start?x=1&amp;y=2\">"));
    assert!(!html.contains("<noscript><meta http-equiv=\"refresh\""), "READY must redirect with JS too");
    assert!(html.contains("data-wr-status=\"READY\""));
    assert!(html.contains("href=\"/a/start?x=1&amp;y=2\""), "a plain link for when the refresh does not fire");
    assert!(!html.contains("header.payload.signature"), "the token stays in the HttpOnly cookie");
}

#[test]
fn without_javascript_a_waiting_page_reloads_every_retry_interval() {
    let html = render(&queue("Drop", None), &waiting(40, 400, 7), "/a", None);
    assert!(html.contains("<noscript><meta http-equiv=\"refresh\" content=\"7\"></noscript>"));
    assert_eq!(html.matches("http-equiv=\"refresh\"").count(), 1);
    let mut lost = waiting(1, 0, 0);
    lost.status = QueueStatus::NotInQueue;
    lost.retry_after_seconds = None;
    assert!(render(&queue("Drop", None), &lost, "/a", None).contains("content=\"5\""));
}

#[test]
fn the_default_page_shows_name_position_estimate_and_a_paused_notice() {
    let mut m = waiting(3, 100, 10);
    let html = render(&queue("Summer Tickets", None), &m, "/a", None);
    assert!(html.contains("<h1 class=\"wr-name\">Summer Tickets</h1>"), "{html}");
    assert!(html.contains("data-wr=\"position\">3</"));
    assert!(html.contains("data-wr=\"eta\">about 2 minutes</"));
    assert!(html.contains("aria-live=\"polite\""));
    assert!(html.contains("data-wr-paused=\"false\""));
    assert!(!html.contains("{{"), "every placeholder of the built-in page is known");
    m.paused = true;
    let html = render(&queue("Summer Tickets", None), &m, "/a", None);
    assert!(html.contains("data-wr-paused=\"true\"") && html.contains("data-wr=\"eta\">on hold</"));
}

fn challenged() -> StatusMessage {
    let mut m = waiting(1, 0, 0);
    m.status = QueueStatus::NotInQueue;
    m.position = None;
    m.retry_after_seconds = None;
    m.challenge = Some(crate::challenge::ChallengeBody {
        challenge: "v1.drop.12.99.seed.mac".into(),
        difficulty: 12,
        algorithm: crate::challenge::ALGORITHM,
        expires_at: "2030-01-01T00:00:00Z".into(),
    });
    m
}

#[test]
fn a_visitor_without_a_place_gets_the_challenge_the_solver_and_a_no_script_explanation() {
    let pow = queue("Drop", None);
    let mut config = pow.def().config.clone();
    config.challenge = crate::config::ChallengeMode::Pow;
    pow.redefine(crate::queues::Def::new(config, None));
    let html = render(&pow, &challenged(), "/a", None);
    assert!(html.contains("data-wr-step=\"challenge\""));
    assert!(html.contains(r#""step":"challenge""#) && html.contains(r#""challenge":"v1.drop.12.99.seed.mac""#));
    assert!(html.contains("<script id=\"wr-solver\">") && html.contains("WorkerGlobalScope"));
    assert!(html.contains("<noscript><p class=\"wr-ready-text\"><strong>JavaScript is turned off"));
    assert!(!html.contains("http-equiv=\"refresh\""), "reloading cannot solve a challenge");
    // Queues without the challenge do not carry the solver.
    let plain = render(&queue("Drop", None), &waiting(3, 100, 10), "/a", None);
    assert!(!plain.contains("id=\"wr-solver\"") && plain.contains("data-wr-step=\"\""));
}

#[test]
fn a_refused_visitor_is_told_why_and_the_page_retries_after_the_wait() {
    let mut m = waiting(1, 0, 0);
    m.status = QueueStatus::NotInQueue;
    let html = render(&queue("Drop", None), &m, "/a", Some(("too many joins from <your> address", 7)));
    assert!(html.contains("data-wr-step=\"refused\""));
    assert!(html.contains("data-wr=\"notice\">too many joins from &lt;your&gt; address</span>"));
    assert!(html.contains("<noscript><meta http-equiv=\"refresh\" content=\"7\"></noscript>"), "without script");
    assert!(html.contains(r#""retry_after":7"#));
}

#[test]
fn the_built_in_page_speaks_german_from_accept_language_and_english_otherwise() {
    let q = queue("Sommer", None);
    let mut m = waiting(1204, 150, 15);
    let de = render_for(&q, &m, "/a", None, Some("de-DE,de;q=0.9,en;q=0.8"));
    assert!(de.starts_with("<!doctype html>\n<html lang=\"de\""), "{de}");
    assert!(de.contains("<title>Sommer · Warteraum</title>"));
    assert!(de.contains("data-wr=\"position\">1.204</") && de.contains("data-wr=\"eta\">etwa 3 Minuten</"));
    assert!(de.contains(r#""lang":"de""#) && de.contains(r#""opening":"Wird geöffnet…""#));
    assert!(!de.contains("{{"), "every placeholder is known");
    let en = render_for(&q, &m, "/a", None, Some("fr;q=1, de;q=0"));
    assert!(en.contains("<html lang=\"en\"") && en.contains("<title>Sommer · Waiting room</title>"));
    assert_eq!(en, render(&q, &m, "/a", None), "English is the fallback and `render`'s language");
    // No English sentence of the page is left in the German one (the script's comments are English).
    let html = de.split("<script").next().unwrap_or_default();
    for (key, text) in Lang::En.page_texts() {
        let text = text.replace("{{queue_name}}", "Sommer");
        assert!(!html.contains(&text), "{key} is English in German: {text}");
    }
    m.status = QueueStatus::Scheduled;
    m.opens_at = Some("2099-03-04T10:00:00Z".into());
    let de = render_in(&q, &m, "/a", None, Lang::De);
    assert!(de.contains(">am 4. März 2099, 10:00 UTC</time>") && de.contains("Tage "), "{de}");
}

#[test]
fn every_text_the_script_asks_for_is_in_the_live_table() {
    let keys: Vec<&str> = SCRIPT
        .match_indices("t(\"")
        .filter(|(i, _)| !SCRIPT[..*i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '.'))
        .filter_map(|(i, _)| SCRIPT[i + 3..].split('"').next())
        .collect();
    assert!(keys.len() > 30, "{keys:?}");
    for key in keys {
        assert!(Lang::En.live_texts().any(|(k, _)| k == key), "queue.js asks for {key:?}");
    }
    // Keys chosen by an expression: each branch written out.
    for key in ["drawing", "opening", "said_closed", "link_closed", "one_day", "days"] {
        assert!(SCRIPT.contains(&format!("\"{key}\"")), "{key}");
    }
}

#[test]
fn countdowns_read_like_a_clock() {
    assert_eq!(countdown(0), "00:00");
    assert_eq!(countdown(65), "01:05");
    assert_eq!(countdown(3600), "1:00:00");
    assert_eq!(countdown(86_399), "23:59:59");
    assert_eq!(countdown(86_400 + 61), "1 day 00:01:01");
    assert_eq!(countdown(3 * 86_400), "3 days 00:00:00");
    assert_eq!(readable_time(Lang::En, "2026-12-24T10:00:00+02:00"), "on 24 Dec 2026, 08:00 UTC");
    assert_eq!(readable_time(Lang::De, "2026-03-04T10:00:00+02:00"), "am 4. März 2026, 08:00 UTC");
    assert_eq!(countdown_in(Lang::De, 2 * 86_400 + 5), "2 Tage 00:00:05");
    assert_eq!(countdown_in(Lang::De, 86_400), "1 Tag 00:00:00");
}

#[test]
fn waits_read_the_way_people_say_them() {
    let cases = [
        (0, "less than a minute"),
        (44, "less than a minute"),
        (45, "about a minute"),
        (89, "about a minute"),
        (90, "about 2 minutes"),
        (125, "about 2 minutes"),
        (3_500, "about 58 minutes"),
        (3_570, "about 1 hour"),
        (4_500, "about 1 hour 15 minutes"),
        (7_300, "about 2 hours"),
        (86_400, "more than a day"),
    ];
    for (secs, words) in cases {
        assert_eq!(human_wait(secs), words, "{secs} s");
    }
    assert_eq!(grouped(Lang::En, 1_234_567), "1,234,567");
    assert_eq!(grouped(Lang::De, 1_234_567), "1.234.567");
    assert_eq!(grouped(Lang::En, 999), "999");
    let german = [
        (0, "weniger als eine Minute"),
        (45, "etwa eine Minute"),
        (125, "etwa 2 Minuten"),
        (3_570, "etwa 1 Stunde"),
        (4_500, "etwa 1 Stunde 15 Minuten"),
        (7_300, "etwa 2 Stunden"),
        (9_000, "etwa 2 Stunden 30 Minuten"),
        (86_400, "mehr als ein Tag"),
    ];
    for (secs, words) in german {
        assert_eq!(human_wait_in(Lang::De, secs), words, "{secs} s");
    }
    assert_eq!(human_wait(9_000), "about 2 hours 30 minutes");
    assert_eq!(wait_range_in(Lang::De, 10, 300), "weniger als eine Minute und etwa 5 Minuten");
}
