//! Unit tests of the visitor: times, cookies, token subjects and plans.

use super::join::merge_cookies;
use super::*;

#[test]
fn admission_times_parse_to_epoch_milliseconds() {
    assert_eq!(epoch_ms("1970-01-01T00:00:01.250Z"), Some(1250));
    assert_eq!(epoch_ms("2026-11-21T13:33:00Z"), Some(1_795_267_980_000));
    assert_eq!(epoch_ms("yesterday"), None);
}

#[test]
fn a_join_keeps_the_visitor_and_ticket_cookies_and_replaces_old_ones() {
    let set = ["wr_visitor=v2; Path=/; HttpOnly", "wr_ticket_q=t2; Path=/wr/q; HttpOnly", "other=x; Path=/"];
    assert_eq!(merge_cookies("wr_visitor=v1; wr_ticket_q=t1", set.into_iter()), "wr_visitor=v2; wr_ticket_q=t2");
    assert_eq!(merge_cookies("", ["wr_visitor=v; Path=/"].into_iter()), "wr_visitor=v");
    assert_eq!(merge_cookies("wr_visitor=v", std::iter::empty()), "wr_visitor=v");
}

#[test]
fn the_token_subject_is_read_without_verification() {
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"ABCDEF","aud":"q"}"#);
    assert_eq!(token_subject(&format!("h.{payload}.s")), Some("abcdef".into()));
    assert_eq!(token_subject("garbage"), None);
}

#[test]
fn plans_are_reproducible_and_follow_the_shares() {
    use clap::Parser;
    let args = Args::try_parse_from(["loadtest", "--poll-share", "0.25", "--abandon-share", "0"])
        .unwrap_or_else(|e| panic!("{e}"));
    let polling = (0..4000).filter(|&i| Plan::new(&args, i).mode == Mode::Polling).count();
    assert!((800..1200).contains(&polling), "{polling}");
    assert!((0..100).all(|i| Plan::new(&args, i).abandon_after.is_none()));
    assert_eq!(Plan::new(&args, 17).seed, Plan::new(&args, 17).seed);
    assert!((0..4000).all(|i| !Plan::new(&args, i).no_show), "no no-shows by default");
}

#[test]
fn no_shows_follow_the_share_and_the_seed_but_not_the_other_shares() {
    use clap::Parser;
    let parse = |flags: &[&str]| {
        let mut argv = vec!["loadtest"];
        argv.extend_from_slice(flags);
        Args::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}"))
    };
    let who = |args: &Args| (0..4000).filter(|&i| Plan::new(args, i).no_show).collect::<Vec<_>>();
    let base = who(&parse(&["--no-show", "0.3"]));
    assert!((1080..1320).contains(&base.len()), "{}", base.len());
    // The same visitors whatever the abandon and poll shares (the plan's
    // generator draws a different number of values for abandoners).
    assert_eq!(base, who(&parse(&["--no-show", "0.3", "--abandon-share", "0.5", "--poll-share", "0.9"])));
    // Another seed, other visitors.
    assert_ne!(base, who(&parse(&["--no-show", "0.3", "--seed", "2"])));
    // A larger share keeps every no-show of a smaller one (a threshold on one draw).
    let more = who(&parse(&["--no-show", "0.6"]));
    assert!(base.iter().all(|i| more.contains(i)) && more.len() > base.len());
    assert_eq!(who(&parse(&["--no-show", "1"])).len(), 4000);
}
