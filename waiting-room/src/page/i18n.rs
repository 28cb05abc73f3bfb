//! The queue page's languages: which one a visitor gets (from
//! `Accept-Language`) and every text the built-in page shows or announces,
//! by key.
//!
//! Two tables: [`PAGE`] holds the texts of the HTML template (`{{t.key}}`,
//! trusted HTML that may hold markup and other placeholders such as
//! `{{queue_name}}`), [`LIVE`] the texts the script writes at runtime, with
//! `{name}` slots it fills (`queue.js`'s `t()`; the Rust twins of its
//! functions use the same table). The live table travels to the script in
//! the page's JSON data block, so both always speak the same language.
//! Adding a language: a [`Lang`] variant, its code and tag, and a column in
//! both tables (the unit tests insist that no text is missing).

/// A language the built-in page speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Lang {
    /// English, the fallback.
    #[default]
    En,
    /// German.
    De,
}

/// The most `Accept-Language` entries looked at (a longer header is someone's
/// experiment, not a browser's preference list).
const MAX_RANGES: usize = 32;

impl Lang {
    /// Every language, English first.
    pub const ALL: [Lang; 2] = [Lang::En, Lang::De];

    /// The BCP 47 tag for `<html lang>`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::De => "de",
        }
    }

    /// The language of a primary subtag (`de` of `de-CH`), if it is spoken.
    fn of_tag(tag: &str) -> Option<Lang> {
        let primary = tag.split(['-', '_']).next().unwrap_or("");
        Lang::ALL.into_iter().find(|l| primary.eq_ignore_ascii_case(l.code()))
    }

    /// The visitor's language from an `Accept-Language` header (RFC 9110
    /// 12.5.4): the spoken language with the highest q-value, the earlier
    /// one on a tie; `q=0` means "not this one"; malformed entries are
    /// skipped; `*` or nothing spoken means English.
    pub fn from_accept_language(header: Option<&str>) -> Lang {
        let mut best: Option<(u16, Lang)> = None;
        for range in header.unwrap_or("").split(',').take(MAX_RANGES) {
            let mut parts = range.split(';');
            let tag = parts.next().unwrap_or("").trim();
            let (mut q, mut well_formed) = (1000, true);
            for param in parts.map(str::trim).filter(|p| !p.is_empty()) {
                match quality(param) {
                    Some(value) => q = value,
                    None => well_formed &= param.contains('='),
                }
            }
            let Some(lang) = Lang::of_tag(tag) else { continue };
            if well_formed && q > 0 && best.is_none_or(|(b, _)| q > b) {
                best = Some((q, lang));
            }
        }
        best.map_or(Lang::En, |(_, l)| l)
    }

    /// The template text for `key` (`{{t.key}}`), if there is one.
    pub fn page_text(self, key: &str) -> Option<&'static str> {
        PAGE.iter().find(|(k, _)| *k == key).map(|(_, texts)| texts[self as usize])
    }

    /// The runtime text for `key` (the script's `t(key)`). Panics on an unknown
    /// key: the keys are this crate's constants, checked by the tests.
    pub fn live(self, key: &str) -> &'static str {
        LIVE.iter().find(|(k, _)| *k == key).map_or_else(|| panic!("no live text {key:?}"), |(_, t)| t[self as usize])
    }

    /// Every runtime text, key → text, for the script's data block.
    pub fn live_texts(self) -> impl Iterator<Item = (&'static str, &'static str)> {
        LIVE.iter().map(move |(k, t)| (*k, t[self as usize]))
    }

    /// Every template text, key → text.
    pub fn page_texts(self) -> impl Iterator<Item = (&'static str, &'static str)> {
        PAGE.iter().map(move |(k, t)| (*k, t[self as usize]))
    }
}

/// The q-value of a `q=…` parameter in thousandths; `None` for other
/// parameters. A malformed q-value reads as 0 (the entry is ignored).
fn quality(param: &str) -> Option<u16> {
    let (name, value) = param.split_once('=')?;
    if !name.trim().eq_ignore_ascii_case("q") {
        return None;
    }
    let value = value.trim();
    let ok = !value.is_empty()
        && value.len() <= 5
        && value.chars().all(|c| c.is_ascii_digit() || c == '.')
        && value.matches('.').count() <= 1;
    let parsed = if ok { value.parse::<f64>().ok().filter(|q| (0.0..=1.0).contains(q)) } else { None };
    // Rounded to thousandths, within 0..=1000: the cast cannot truncate.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some(parsed.map_or(0, |q| (q * 1000.0).round() as u16))
}

/// Fill `{name}` slots of a live text.
pub fn format(text: &str, vars: &[(&str, &str)]) -> String {
    let mut out = text.to_owned();
    for (name, value) in vars {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

type Texts = [&'static str; Lang::ALL.len()];

/// The texts of the HTML template, `{{t.key}}`: trusted HTML.
const PAGE: &[(&str, Texts)] = &[
    ("waiting_room", ["Waiting room", "Warteraum"]),
    (
        "lede",
        [
            "It's busy right now, so we're letting people in a few at a time. Keep this page open: we'll take you in automatically when it's your turn.",
            "Gerade ist viel los, deshalb lassen wir immer nur wenige Personen gleichzeitig hinein. Lassen Sie diese Seite geöffnet: Sobald Sie an der Reihe sind, geht es automatisch weiter.",
        ],
    ),
    (
        "random",
        [
            "Visitors are let in by a random draw each time the line moves, so there is no place number: everyone waiting has the same chance.",
            "Bei jedem Einlass wird unter allen Wartenden zufällig ausgelost, deshalb gibt es keine Platznummer: Alle haben die gleiche Chance.",
        ],
    ),
    ("your_wait_between", ["Your wait: between", "Ihre Wartezeit: zwischen"]),
    ("in_line_title", ["You're in line", "Sie sind in der Warteschlange"]),
    ("place_label", ["Your place in line", "Ihr Platz in der Warteschlange"]),
    ("progress_label", ["How far you have moved up the line", "Wie weit Sie in der Warteschlange vorgerückt sind"]),
    ("paused_title", ["Entry is paused for a moment.", "Der Einlass ist kurz angehalten."]),
    (
        "paused_text",
        [
            "You keep your place, and the line starts moving again as soon as entry resumes.",
            "Sie behalten Ihren Platz, und die Warteschlange bewegt sich wieder, sobald der Einlass weitergeht.",
        ],
    ),
    ("eta_label", ["Estimated wait", "Geschätzte Wartezeit"]),
    ("length_label", ["People in line", "Personen in der Warteschlange"]),
    (
        "drawn_text",
        ["Your place was drawn by lottery. Your lottery number is", "Ihr Platz wurde ausgelost. Ihre Losnummer ist"],
    ),
    ("drawn_link", ["see the published draw", "zur veröffentlichten Auslosung"]),
    ("scheduled_title", ["Not open yet", "Noch nicht geöffnet"]),
    ("opens", ["{{queue_name}} opens", "{{queue_name}} öffnet"]),
    (
        "opens_by_itself",
        [
            "This page opens the line by itself when the time comes.",
            "Diese Seite öffnet die Warteschlange von selbst, sobald es so weit ist.",
        ],
    ),
    ("starts_in", ["Starts in", "Beginnt in"]),
    ("prequeue_title", ["You're in the pre-queue", "Sie sind in der Vorwarteschlange"]),
    (
        "prequeue_text",
        [
            "When the sale opens, everyone in the pre-queue gets a place in line by a lottery, so joining early gives no advantage and you lose nothing by waiting here. Keep this page open to see your place.",
            "Wenn der Verkauf beginnt, bekommen alle in der Vorwarteschlange ihren Platz per Los. Früh da zu sein bringt also keinen Vorteil, und Sie verpassen nichts, wenn Sie hier warten. Lassen Sie diese Seite geöffnet, um Ihren Platz zu sehen.",
        ],
    ),
    ("drawn_in", ["Places are drawn in", "Die Plätze werden ausgelost in"]),
    ("entrants_label", ["People in the pre-queue", "Personen in der Vorwarteschlange"]),
    ("lottery_number", ["Your lottery number", "Ihre Losnummer"]),
    ("unavailable_title", ["Not available right now", "Derzeit nicht verfügbar"]),
    (
        "unavailable_text",
        [
            "{{queue_name}} is not letting visitors in at the moment. If you were in line, you keep your place. This page checks again by itself.",
            "{{queue_name}} lässt im Moment niemanden hinein. Wenn Sie in der Warteschlange waren, behalten Sie Ihren Platz. Diese Seite prüft von selbst erneut.",
        ],
    ),
    ("sold_out_title", ["Sold out", "Ausverkauft"]),
    (
        "sold_out_text",
        [
            "{{queue_name}} is sold out. If you are in line, you keep your place: if anything becomes available again (when someone's reservation runs out), the line moves on and this page takes you in by itself.",
            "{{queue_name}} ist ausverkauft. Wenn Sie in der Warteschlange sind, behalten Sie Ihren Platz: Wird wieder etwas frei (etwa wenn eine Reservierung abläuft), geht es weiter, und diese Seite bringt Sie von selbst hinein.",
        ],
    ),
    ("closed_title", ["This sale is closed", "Dieser Verkauf ist beendet"]),
    (
        "closed_text",
        [
            "{{queue_name}} no longer takes new visitors. If you were already in line, reload this page to see your place.",
            "{{queue_name}} nimmt keine neuen Besucher mehr an. Wenn Sie schon in der Warteschlange waren, laden Sie diese Seite neu, um Ihren Platz zu sehen.",
        ],
    ),
    ("ready_title", ["You're in!", "Sie sind dran!"]),
    ("ready_text", ["Taking you to {{queue_name}} now.", "Wir bringen Sie jetzt zu {{queue_name}}."]),
    ("continue", ["Continue", "Weiter"]),
    ("checking_title", ["Checking your browser", "Ihr Browser wird geprüft"]),
    (
        "checking_text",
        [
            "To keep bots from taking places, this line asks every browser to solve a small puzzle before it joins.",
            "Damit Bots keine Plätze belegen, löst jeder Browser eine kleine Rechenaufgabe, bevor er sich einreiht.",
        ],
    ),
    (
        "checking_live",
        [
            "Your browser is working on it now; it takes a few seconds, and you join the line as soon as it is done.",
            "Ihr Browser arbeitet gerade daran. Das dauert einige Sekunden; danach reihen Sie sich von selbst ein.",
        ],
    ),
    ("puzzle_progress", ["Puzzle progress", "Fortschritt der Rechenaufgabe"]),
    (
        "no_js_title",
        [
            "JavaScript is turned off in your browser, so it cannot solve the puzzle and cannot join this line.",
            "JavaScript ist in Ihrem Browser ausgeschaltet, deshalb kann er die Rechenaufgabe nicht lösen und sich nicht einreihen.",
        ],
    ),
    (
        "no_js_text",
        [
            "Turn JavaScript on for this site, then reload this page.",
            "Schalten Sie JavaScript für diese Website ein und laden Sie die Seite dann neu.",
        ],
    ),
    ("busy_title", ["Just a moment", "Einen Moment bitte"]),
    (
        "busy_text",
        ["Too many requests came from your network for now:", "Aus Ihrem Netzwerk kamen gerade zu viele Anfragen:"],
    ),
    ("busy_retry", ["This page tries again by itself.", "Diese Seite versucht es von selbst erneut."]),
    ("gone_title", ["You're not in line", "Sie sind nicht in der Warteschlange"]),
    (
        "gone_text",
        [
            "Your place may have expired. Reload this page to join the line again.",
            "Ihr Platz ist vielleicht abgelaufen. Laden Sie diese Seite neu, um sich wieder einzureihen.",
        ],
    ),
    ("join", ["Join the line", "In die Warteschlange einreihen"]),
    (
        "updates",
        [
            "Updates automatically while this page is open.",
            "Aktualisiert sich von selbst, solange diese Seite geöffnet ist.",
        ],
    ),
];

/// The texts the script writes at runtime, and their Rust twins' (`{slot}`s).
const LIVE: &[(&str, Texts)] = &[
    ("less_than_a_minute", ["less than a minute", "weniger als eine Minute"]),
    ("about_a_minute", ["about a minute", "etwa eine Minute"]),
    ("about_minutes", ["about {n} minutes", "etwa {n} Minuten"]),
    ("about_one_hour", ["about 1 hour", "etwa 1 Stunde"]),
    ("about_hours", ["about {n} hours", "etwa {n} Stunden"]),
    ("about_one_hour_minutes", ["about 1 hour {m} minutes", "etwa 1 Stunde {m} Minuten"]),
    ("about_hours_minutes", ["about {n} hours {m} minutes", "etwa {n} Stunden {m} Minuten"]),
    ("more_than_a_day", ["more than a day", "mehr als ein Tag"]),
    ("now", ["now", "jetzt"]),
    ("on_hold", ["on hold", "angehalten"]),
    ("one_day", ["1 day {clock}", "1 Tag {clock}"]),
    ("days", ["{n} days {clock}", "{n} Tage {clock}"]),
    ("wait_range", ["{soonest} and {longest}", "{soonest} und {longest}"]),
    ("opens_on", ["on {date}", "am {date}"]),
    ("date_utc", ["{day} {month} {year}, {time} UTC", "{day}. {month} {year}, {time} UTC"]),
    (
        "months",
        [
            "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec",
            "Jan. Feb. März Apr. Mai Juni Juli Aug. Sept. Okt. Nov. Dez.",
        ],
    ),
    ("group_separator", [",", "."]),
    ("opening", ["Opening…", "Wird geöffnet…"]),
    ("drawing", ["Drawing places…", "Plätze werden ausgelost…"]),
    ("title_in_line", ["In line · {title}", "In der Warteschlange · {title}"]),
    ("title_ready", ["You're in · {title}", "Sie sind dran · {title}"]),
    ("title_position", ["#{position} in line · {title}", "Nr. {position} in der Warteschlange · {title}"]),
    (
        "said_random",
        [
            "You are in line. Visitors are let in by random draw; your wait: between {range}.",
            "Sie sind in der Warteschlange. Der Einlass wird zufällig ausgelost; Ihre Wartezeit: zwischen {range}.",
        ],
    ),
    ("said_closed", ["This sale is closed.", "Dieser Verkauf ist beendet."]),
    (
        "said_sold_out",
        [
            "Sold out. If you are in line, you keep your place in case anything becomes available again.",
            "Ausverkauft. Wenn Sie in der Warteschlange sind, behalten Sie Ihren Platz, falls wieder etwas frei wird.",
        ],
    ),
    (
        "said_unavailable",
        [
            "Not available right now. This page checks again by itself.",
            "Derzeit nicht verfügbar. Diese Seite prüft von selbst erneut.",
        ],
    ),
    (
        "said_prequeue",
        [
            "You are in the pre-queue. Places are drawn by lottery when the sale opens.",
            "Sie sind in der Vorwarteschlange. Die Plätze werden ausgelost, wenn der Verkauf beginnt.",
        ],
    ),
    (
        "said_scheduled",
        [
            "The line is not open yet. This page opens it by itself when the time comes.",
            "Die Warteschlange ist noch nicht geöffnet. Diese Seite öffnet sie von selbst, sobald es so weit ist.",
        ],
    ),
    (
        "said_paused",
        [
            "Entry is paused. You keep your place: number {position} in line.",
            "Der Einlass ist angehalten. Sie behalten Ihren Platz: Nummer {position} in der Warteschlange.",
        ],
    ),
    (
        "said_position",
        [
            "You are number {position} in line. Estimated wait: {eta}.",
            "Sie sind Nummer {position} in der Warteschlange. Geschätzte Wartezeit: {eta}.",
        ],
    ),
    ("said_admitted", ["You're in! Taking you to the site now.", "Sie sind dran! Wir bringen Sie jetzt zur Website."]),
    (
        "said_refused",
        [
            "Too many requests from your network. This page tries again in {seconds}.",
            "Zu viele Anfragen aus Ihrem Netzwerk. Diese Seite versucht es in {seconds} erneut.",
        ],
    ),
    (
        "said_checking",
        [
            "Checking your browser before you join the line. This takes a few seconds.",
            "Ihr Browser wird geprüft, bevor Sie sich einreihen. Das dauert einige Sekunden.",
        ],
    ),
    ("said_solved", ["Done. Joining the line…", "Fertig. Sie werden eingereiht…"]),
    ("link_admitted", ["You're in. Opening the site…", "Sie sind dran. Die Website wird geöffnet…"]),
    ("link_polling", ["Checking for updates every {seconds}.", "Sucht alle {seconds} nach Neuigkeiten."]),
    ("link_lost", ["Connection lost. Trying again…", "Verbindung unterbrochen. Neuer Versuch…"]),
    ("link_retry", ["Trying again in {seconds}.", "Neuer Versuch in {seconds}."]),
    (
        "link_checking",
        ["Checking your browser before you join the line…", "Ihr Browser wird geprüft, bevor Sie sich einreihen…"],
    ),
    (
        "link_unsolved",
        [
            "This browser could not solve the puzzle. Trying again…",
            "Dieser Browser konnte die Rechenaufgabe nicht lösen. Neuer Versuch…",
        ],
    ),
    ("link_live", ["Live: updates as the line moves.", "Live: aktualisiert sich, wenn die Warteschlange vorrückt."]),
    ("link_connecting", ["Connecting for live updates…", "Verbindung für Live-Aktualisierungen wird aufgebaut…"]),
    ("link_closed", ["This sale is closed.", "Dieser Verkauf ist beendet."]),
    ("link_unavailable", ["This page checks again by itself.", "Diese Seite prüft von selbst erneut."]),
    (
        "link_scheduled",
        [
            "This page opens the line by itself when the time comes.",
            "Diese Seite öffnet die Warteschlange von selbst, sobald es so weit ist.",
        ],
    ),
    ("one_second", ["1 second", "1 Sekunde"]),
    ("seconds", ["{n} seconds", "{n} Sekunden"]),
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pick(header: &str) -> Lang {
        Lang::from_accept_language(Some(header))
    }

    #[test]
    fn the_best_spoken_language_wins_by_q_value_then_by_order() {
        assert_eq!(Lang::from_accept_language(None), Lang::En);
        assert_eq!(pick(""), Lang::En);
        assert_eq!(pick("de"), Lang::De);
        assert_eq!(pick("de-CH,de;q=0.9,en;q=0.8"), Lang::De);
        assert_eq!(pick("DE-at"), Lang::De);
        assert_eq!(pick("en-US,en;q=0.9,de;q=0.8"), Lang::En);
        assert_eq!(pick("en;q=0.5, de;q=0.9"), Lang::De);
        assert_eq!(pick("fr-FR,fr;q=0.9,de;q=0.7,en;q=0.6"), Lang::De, "the first spoken one by q");
        assert_eq!(pick("fr, es"), Lang::En, "nothing spoken: English");
        assert_eq!(pick("*"), Lang::En);
        assert_eq!(pick("de;q=0, en;q=0.1"), Lang::En, "q=0 is a refusal");
        assert_eq!(pick("de;q=0"), Lang::En);
        assert_eq!(pick("en;q=0.5,de;q=0.5"), Lang::En, "a tie goes to the earlier");
        assert_eq!(pick("de;q=0.5,en;q=0.5"), Lang::De);
        assert_eq!(pick("de ; q = 0.8 , en ; q=0.3"), Lang::De, "spaces around parameters");
        assert_eq!(pick("de_DE"), Lang::De);
        assert_eq!(pick("deu"), Lang::En, "a three-letter code is not `de`");
    }

    #[test]
    fn malformed_entries_are_ignored() {
        assert_eq!(pick("de;q=2, en;q=0.1"), Lang::En, "q above 1");
        assert_eq!(pick("de;q=-1, en;q=0.1"), Lang::En);
        assert_eq!(pick("de;q=abc"), Lang::En);
        assert_eq!(pick("de;q=0.5.5"), Lang::En);
        assert_eq!(pick("de;q=NaN"), Lang::En);
        assert_eq!(pick("de;q="), Lang::En);
        assert_eq!(pick("de;junk"), Lang::En);
        assert_eq!(pick(",,;;,de"), Lang::De);
        assert_eq!(pick("de;level=1"), Lang::De, "other parameters do not matter");
        let long = format!("{}de", "fr,".repeat(MAX_RANGES));
        assert_eq!(pick(&long), Lang::En, "entries past the first {MAX_RANGES} are not read");
    }

    #[test]
    fn every_language_has_every_text_and_the_same_slots() {
        let slots = |t: &str| {
            let mut s: Vec<String> =
                t.split('{').skip(1).filter_map(|p| p.split_once('}')).map(|(n, _)| n.into()).collect();
            s.sort();
            s
        };
        for table in [PAGE, LIVE] {
            for (key, texts) in table {
                for (lang, text) in Lang::ALL.iter().zip(texts) {
                    assert!(!text.is_empty(), "{key} in {lang:?}");
                    assert_eq!(slots(text), slots(texts[0]), "{key} in {lang:?}: other slots than English");
                }
                assert!(
                    texts[1..].iter().all(|t| t != &texts[0]) || ["group_separator"].contains(key) || key.len() < 3
                );
            }
            let mut keys: Vec<&str> = table.iter().map(|(k, _)| *k).collect();
            keys.sort_unstable();
            keys.dedup();
            assert_eq!(keys.len(), table.len(), "a key twice");
        }
        assert_eq!(Lang::De.live("months").split(' ').count(), 12);
        assert_eq!(Lang::En.live("months").split(' ').count(), 12);
        assert_eq!(format("about {n} minutes", &[("n", "3")]), "about 3 minutes");
    }

    proptest! {
        #[test]
        fn any_header_gives_a_spoken_language(header in ".{0,300}") {
            let lang = Lang::from_accept_language(Some(&header));
            prop_assert!(Lang::ALL.contains(&lang));
        }

        #[test]
        fn a_list_of_ranges_gives_the_highest_spoken_one(
            ranges in proptest::collection::vec(("(de|en|fr|es|\\*)(-[A-Z]{2})?", 0u16..=1000), 0..8)
        ) {
            let header: Vec<String> =
                ranges.iter().map(|(tag, q)| format!("{tag};q={}.{:03}", q / 1000, q % 1000)).collect();
            let lang = Lang::from_accept_language(Some(&header.join(", ")));
            let best = ranges
                .iter()
                .filter_map(|(tag, q)| Lang::of_tag(tag).map(|l| (*q, l)))
                .filter(|(q, _)| *q > 0)
                .fold(None::<(u16, Lang)>, |b, (q, l)| if b.is_none_or(|(bq, _)| q > bq) { Some((q, l)) } else { b });
            prop_assert_eq!(lang, best.map_or(Lang::En, |(_, l)| l));
        }
    }
}
