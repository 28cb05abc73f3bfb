//! The dashboard: its expressions and the metric names they use.

use std::collections::BTreeSet;

use e2e::workspace_root;
use serde_json::Value;

use crate::QUEUE;

pub fn dashboard() -> Value {
    let path = workspace_root().join("grafana/dashboards/waiting-room.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Every PromQL expression of the dashboard with where it came from: panel
/// targets (`expr`, at any depth, so panels inside collapsed rows count) and
/// templating queries (`label_values(metric, label)` becomes a query of
/// `metric` grouped by `label`).
pub fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, title: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(map) => {
                let title = map.get("title").and_then(Value::as_str).unwrap_or(title);
                if let Some(expr) = map.get("expr").and_then(Value::as_str) {
                    out.push((format!("panel {title:?}"), expr.to_owned()));
                }
                for (key, child) in map {
                    if key != "templating" {
                        walk(child, title, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, title, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, "", &mut out);
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if var["type"] != "query" {
            continue;
        }
        let query = var["query"]["query"].as_str().or(var["query"].as_str()).unwrap();
        let name = var["name"].as_str().unwrap();
        let expr = match query.trim().strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')) {
            Some(args) => {
                let (metric, label) =
                    args.rsplit_once(',').unwrap_or_else(|| panic!("label_values({args}): no metric"));
                format!("count by ({}) ({})", label.trim(), metric.trim())
            }
            None => query.strip_prefix("query_result(").and_then(|q| q.strip_suffix(')')).unwrap_or(query).to_owned(),
        };
        out.push((format!("variable ${name}"), expr));
    }
    out
}

/// Grafana's variables, given the values a person would see for this stack.
/// Longer names first, so `$__range_s` is not read as `$__range` + "_s".
pub fn substitute(expr: &str) -> String {
    let values = [
        ("$__rate_interval", "1m"),
        ("$__interval_ms", "15000"),
        ("$__interval", "15s"),
        ("$__range_ms", "300000"),
        ("$__range_s", "300"),
        ("$__range", "5m"),
        ("${queue}", QUEUE),
        ("[[queue]]", QUEUE),
        ("$queue", QUEUE),
    ];
    values.iter().fold(expr.to_owned(), |e, (var, value)| e.replace(var, value))
}

/// The metric names a PromQL expression selects: identifiers outside label
/// matchers, strings and ranges that are not functions, aggregations,
/// keywords or label lists of `by`/`without`/`on`/`ignoring`/`group_*`.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
    const WORDS: &[&str] = &[
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "inf",
        "nan",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_to = |mut i: usize, close: char| {
        while i < chars.len() && chars[i] != close {
            if chars[i] == '"' || chars[i] == '\'' {
                let quote = chars[i];
                i += 1;
                while i < chars.len() && chars[i] != quote {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
            }
            i += 1;
        }
        i + 1
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '{' => i = skip_to(i + 1, '}'),
            '[' => i = skip_to(i + 1, ']'),
            '"' | '\'' | '`' => i = skip_to(i + 1, c),
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let call = chars.get(next) == Some(&'(');
                if LABEL_LISTS.contains(&word.as_str()) {
                    if call {
                        i = skip_to(next + 1, ')');
                    }
                } else if !call && !WORDS.contains(&word.to_ascii_lowercase().as_str()) {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn metric_names_are_read_from_promql_and_nothing_else() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(r#"histogram_quantile(0.99, sum by (le, op) (rate(x_seconds_bucket{op=~"a|b", q="}"}[5m])))"#),
        ["x_seconds_bucket"]
    );
    assert_eq!(
        names(r#"sum(rate(a_total{r="hit"}[1m])) / sum without (i) (rate(b_total[1m] offset 5m)) > bool 0"#),
        ["a_total", "b_total"]
    );
    assert_eq!(names("60 * max(c) by (queue) + on (queue) group_left d"), ["c", "d"]);
    assert_eq!(names("1 - sum(e) / sum(f) and vector(1)"), ["e", "f"]);
}

#[test]
fn the_dashboard_covers_every_part_of_the_sale() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    let exprs = expressions(&d);
    let used: BTreeSet<String> = exprs.iter().flat_map(|(_, e)| metric_names(e)).collect();
    // The issue's list: waiting and active per queue, joins/s, admissions/s vs
    // configured rate, abandonments, ETA, WebSocket connections and push
    // delay, gate decisions, upstream latency, holds/confirms/expiries, claims
    // and stock left, DB latency.
    for metric in [
        "waiting_room_waiting_visitors",
        "waiting_room_active_sessions",
        "waiting_room_joins_total",
        "waiting_room_admissions_total",
        "waiting_room_configured_release_rate",
        "waiting_room_abandoned_total",
        "waiting_room_eta_seconds",
        "waiting_room_ws_connections",
        "waiting_room_push_delay_seconds_bucket",
        "waiting_room_gate_decisions_total",
        "waiting_room_upstream_latency_seconds_bucket",
        "booking_core_holds_total",
        "booking_core_confirms_total",
        "booking_core_hold_expiries_total",
        "booking_core_claims_total",
        "booking_core_coupon_stock_left",
        "booking_core_db_query_duration_seconds_bucket",
        // Adaptive admission: every decision and the signals it used.
        "waiting_room_adaptive_n",
        "waiting_room_adaptive_decisions_total",
        "waiting_room_upstream_window_p99_seconds",
        "waiting_room_upstream_window_error_ratio",
        "waiting_room_upstream_in_flight",
        "waiting_room_arrivals_total",
        "waiting_room_no_shows_total",
    ] {
        assert!(used.contains(metric), "no panel shows {metric}");
    }
    let upstream: Vec<_> =
        exprs.iter().filter(|(_, e)| e.contains("waiting_room_upstream_latency_seconds_bucket")).collect();
    assert!(upstream.iter().any(|(_, e)| e.contains("histogram_quantile(0.5,")), "upstream p50");
    assert!(upstream.iter().any(|(_, e)| e.contains("histogram_quantile(0.99,")), "upstream p99");
    // Every panel reads the provisioned datasource, and the queue variable
    // lists the queues the waiting room reports.
    let queue = &d["templating"]["list"][0];
    assert_eq!(queue["name"], "queue");
    let query = queue["query"]["query"].as_str().or(queue["query"].as_str());
    assert_eq!(query, Some("label_values(waiting_room_waiting_visitors, queue)"));
    let mut panels = 0;
    for panel in d["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row") {
        panels += 1;
        assert!(["timeseries", "stat", "gauge"].contains(&panel["type"].as_str().unwrap()), "{panel}");
        assert_eq!(panel["datasource"]["uid"], "prometheus", "{}", panel["title"]);
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        assert!(targets.iter().all(|t| t["datasource"]["uid"] == "prometheus"), "{}", panel["title"]);
    }
    assert!(panels >= 12);
    let datasource = std::fs::read_to_string(workspace_root().join("grafana/provisioning/datasources/datasource.yml"));
    let datasource = datasource.unwrap();
    assert!(datasource.contains("uid: prometheus") && datasource.contains("url: http://prometheus:9090"));
}
