//! Joining a queue: the one path the queue page, `POST /wr/{q}/join` and the
//! WebSocket share, so every way in pays the same toll:
//!
//! 1. the client's join budget (`[limits] joins`, per instance);
//! 2. when the queue asks for a proof of work, the answer is checked here
//!    (one HMAC, one hash); a client without a visitor cookie and without a
//!    valid answer is sent a challenge at once, with no store call and no
//!    visitor id minted;
//! 3. a new visitor id only within the client's budget
//!    (`[limits] new_visitors`);
//! 4. the store's join, which in one atomic step keeps an existing place or
//!    session, and otherwise applies the places cap per client
//!    (`[limits] max_waiting_per_client`, across instances) and spends the
//!    answer's seed once.
//!
//! A visitor who already has a place or a live session passes 2 and 4
//! without a challenge. Status polls take none of this path.

use std::time::Instant;

use pingora::prelude::Session;
use shared::problem::Problem;
use shared::visitor::VisitorId;

use crate::challenge::{Answer, Challenge, ChallengeBody, Invalid};
use crate::client::ClientKey;
use crate::clock::now_ms;
use crate::config::QueueMode;
use crate::identity;
use crate::limits::{Rate, Refused, retry_after_secs};
use crate::metrics::METRICS;
use crate::problem::Failure;
use crate::queues::Queue;
use crate::reply::Reply;
use crate::schedule::Phase;
use crate::state::State;
use crate::store::{JoinChecks, JoinKind, Place, Proof, QueueStore, Standing};

/// A join that got through.
#[derive(Debug)]
pub struct Joined {
    /// The visitor.
    pub visitor: VisitorId,
    /// `Set-Cookie` for a visitor id minted by this join.
    pub set_cookie: Option<String>,
    /// Where the visitor stands now.
    pub standing: Standing,
    /// What the join did.
    pub kind: JoinKind,
    /// The queue ticket of the visitor's place (WAITING; see `ticket.rs`).
    pub ticket: Option<String>,
}

impl Joined {
    /// The `Set-Cookie` values of this join: a minted visitor id, the ticket.
    pub fn set_cookies(&self, queue: &str, secure: bool) -> Vec<String> {
        let ticket = self.ticket.as_deref().map(|t| crate::ticket::set_cookie(queue, t, secure));
        self.set_cookie.iter().cloned().chain(ticket).collect()
    }
}

/// Why a join was refused.
#[derive(Debug)]
pub enum Refusal {
    /// Over a per-client budget or cap: 429 with `Retry-After`.
    Limited {
        /// The config key of the limit.
        limit: &'static str,
        /// What happened and what to do.
        detail: String,
        /// Whole seconds to wait.
        retry_after: u64,
    },
    /// A new place needs a solved challenge: this one (428).
    Challenge {
        /// The fresh challenge.
        challenge: Challenge,
        /// Why an answer sent along was not accepted, if one was.
        why: Option<&'static str>,
    },
    /// The queue lets nobody (new) in now: not open yet, closed, or in
    /// `reject` mode. Not an error: the status message says which (200).
    Schedule(Box<crate::standing::StatusMessage>),
    /// The store did not answer (503).
    StoreDown,
}

/// A join past its budget checks, with its visitor decided: the WebSocket
/// registers that visitor with the hub before the store call.
#[derive(Debug)]
pub struct Prepared {
    /// The visitor who joins.
    pub visitor: VisitorId,
    set_cookie: Option<String>,
    client: ClientKey,
    proof: Proof,
    why: Option<&'static str>,
    /// The visitor's verified queue ticket.
    ticket: Option<Place>,
}

/// A challenge for `queue` at its current difficulty (counted as a refusal).
fn challenge(state: &State, queue: &Queue, why: Option<&'static str>) -> Refusal {
    Refused::Challenge.count();
    let ttl_ms = i64::try_from(queue.def().config.challenge_ttl.as_millis()).unwrap_or(i64::MAX);
    Refusal::Challenge { challenge: state.challenges.issue(queue.id(), queue.difficulty(), now_ms(), ttl_ms), why }
}

/// What a visitor without a place hears while the schedule keeps them out.
fn schedule(state: &State, queue: &Queue, now: i64) -> Refusal {
    Refusal::Schedule(Box::new(crate::standing::message(
        &state.keys.signer,
        queue,
        VisitorId::from_bytes([0; 16]),
        Standing::NotInQueue,
        now,
    )))
}

/// What the join budget counts, in a refusal's words.
pub const JOINS: &str = "joins";
/// What the new-visitor budget counts, in a refusal's words.
pub const NEW_VISITORS: &str = "new visitors (a visitor keeps the wr_visitor cookie and needs no new one)";

/// The detail of a refusal by a rate limit.
pub fn rate_detail(what: &str, rate: Rate, retry_after: u64) -> String {
    format!(
        "too many {what} from your address (at most {} at once, then {} per second); wait {retry_after} s, then try \
         again",
        rate.burst, rate.rate
    )
}

/// The detail of a refusal by the places cap.
pub fn places_detail(max: u64, retry_after: u64) -> String {
    format!(
        "your address already holds {max} places in this line, the most one address may hold; one frees when a \
         visitor from your address is let in or leaves the line, so try again in {retry_after} s"
    )
}

fn over_rate(reason: Refused, limit: &'static str, what: &str, rate: Rate, wait: std::time::Duration) -> Refusal {
    reason.count();
    let retry_after = retry_after_secs(wait);
    Refusal::Limited { limit, detail: rate_detail(what, rate, retry_after), retry_after }
}

/// Steps 1-3 of the module docs: budgets, the answer, the visitor id.
pub fn prepare(state: &State, session: &Session, queue: &Queue, answer: Option<&Answer>) -> Result<Prepared, Refusal> {
    let limits = &state.limits;
    let client = ClientKey::from(state.client_of(session));
    if let Err(wait) = limits.joins.take(client, Instant::now()) {
        return Err(over_rate(Refused::JoinRate, "joins", JOINS, limits.config.joins, wait));
    }
    let existing = identity::existing(session, &state.keys.cookies);
    // Before the opening nobody holds a place; once closed, only those who
    // do still ask (for their standing). Neither needs a challenge or an id.
    let now = now_ms();
    match queue.phase(now) {
        _ if queue.admission().queue_mode == QueueMode::Reject => return Err(schedule(state, queue, now)),
        // Sold out: newcomers are told before they take a place.
        _ if queue.sold_out() && existing.is_none() => return Err(schedule(state, queue, now)),
        Phase::Scheduled => return Err(schedule(state, queue, now)),
        Phase::Closed if existing.is_none() => return Err(schedule(state, queue, now)),
        _ => {}
    }
    let mut why = None;
    let proof = if !queue.challenge_on() {
        Proof::NotRequired
    } else {
        // A solution issued a tick before the line got busier still counts;
        // older, easier ones are answered with a harder challenge.
        let floor = queue.difficulty().saturating_sub(1).max(queue.def().config.challenge_min_bits);
        match answer.map(|a| state.challenges.verify(queue.id(), a, now_ms(), floor)) {
            Some(Ok(solved)) => Proof::Solved { seed: solved.seed, expires_at_ms: solved.expires_at_ms },
            Some(Err(invalid)) => {
                why = Some(Invalid::detail(invalid));
                Proof::Missing
            }
            None => Proof::Missing,
        }
    };
    let (visitor, set_cookie) = match existing {
        Some(visitor) => (visitor, None),
        // Nobody new gets a place without an answer: no id, no store call.
        None if proof == Proof::Missing => return Err(challenge(state, queue, why)),
        None => {
            if let Err(wait) = limits.new_visitors.take(client, Instant::now()) {
                let rate = limits.config.new_visitors;
                return Err(over_rate(Refused::NewVisitorRate, "new_visitors", NEW_VISITORS, rate, wait));
            }
            let (visitor, cookie) = identity::mint(&state.keys.cookies, state.cookie_secure);
            (visitor, Some(cookie))
        }
    };
    // Only a visitor who brings their cookie can bring their ticket.
    let ticket = existing.and_then(|v| state.tickets.place_in_request(session, queue.id(), v));
    Ok(Prepared { visitor, set_cookie, client, proof, why, ticket })
}

impl Prepared {
    /// Step 4: the store's join.
    pub async fn join(self, state: &State, queue: &Queue, store: &dyn QueueStore) -> Result<Joined, Refusal> {
        let max = state.limits.config.max_waiting_per_client;
        let checks = JoinChecks {
            client: (max > 0).then(|| state.challenges.client_tag(self.client)),
            max_per_client: max,
            proof: self.proof,
            ticket: self.ticket,
        };
        // A closed or sold-out queue takes no new places: those it has are
        // looked up (a visitor id from another queue is no place here).
        let placed = if queue.phase(now_ms()) == Phase::Closed || queue.sold_out() {
            store.status(queue.id(), self.visitor, &queue.params()).await.map(|standing| crate::store::Placed {
                standing,
                kind: JoinKind::Existing,
                place: None,
            })
        } else {
            store.join_placed(queue.id(), self.visitor, &queue.params(), &checks).await
        };
        let placed = match placed {
            Ok(placed) => placed,
            Err(e) => {
                tracing::warn!(error = %e, queue = queue.id(), "join failed");
                METRICS.store_errors.with_label_values(&["join"]).inc();
                return match crate::degraded::let_in(state, queue) {
                    Some(standing) => Ok(Joined {
                        visitor: self.visitor,
                        set_cookie: self.set_cookie,
                        standing,
                        kind: JoinKind::OpenDoor,
                        ticket: None,
                    }),
                    None => Err(Refusal::StoreDown),
                };
            }
        };
        let (standing, kind) = (placed.standing, placed.kind);
        match kind {
            JoinKind::ClientFull => {
                Refused::ClientPlaces.count();
                // A place frees when one of the client's visitors is let in
                // (next tick) or leaves the line.
                let retry_after = queue.admission().tick.as_secs().clamp(1, 60);
                Err(Refusal::Limited {
                    limit: "max_waiting_per_client",
                    detail: places_detail(max, retry_after),
                    retry_after,
                })
            }
            JoinKind::NeedsChallenge => Err(challenge(state, queue, self.why)),
            JoinKind::ChallengeSpent => {
                Err(challenge(state, queue, Some("that challenge was already used for a place; each is good for one")))
            }
            JoinKind::Joined
            | JoinKind::Existing
            | JoinKind::FreeEntry
            | JoinKind::Rejoined
            | JoinKind::Restored
            | JoinKind::OpenDoor => {
                let ticket = placed.place.map(|p| state.tickets.sign(queue.id(), self.visitor, p));
                Ok(Joined { visitor: self.visitor, set_cookie: self.set_cookie, standing, kind, ticket })
            }
        }
    }
}

/// Prepare and join in one go (the page and `POST /wr/{q}/join`).
pub async fn join(
    state: &State,
    session: &Session,
    queue: &Queue,
    store: &dyn QueueStore,
    answer: Option<&Answer>,
) -> Result<Joined, Refusal> {
    prepare(state, session, queue, answer)?.join(state, queue, store).await
}

/// The 429 of a limit (`Retry-After` in whole seconds).
pub fn limited_reply(limit: &'static str, detail: &str, retry_after: u64) -> Reply {
    Reply::problem(Problem::new(429, detail).with("limit", limit))
        .header("retry-after", retry_after.to_string())
        .no_store()
}

/// The 428 that hands out a challenge, saying how to answer it.
pub fn challenge_reply(queue: &str, c: &Challenge, why: Option<&str>) -> Reply {
    let body = ChallengeBody::from(c);
    let join = crate::standing::join_url(queue);
    let why = why.map(|w| format!("{w}. ")).unwrap_or_default();
    let detail = format!(
        "{why}This queue asks for a small proof of work before it grants a place: find a nonce (1-64 characters \
         from A-Z a-z 0-9 _ -) such that SHA-256 of the challenge, a colon and the nonce starts with {} zero bits, \
         then POST {join} again with the JSON body {{\"challenge\": \"<challenge>\", \"nonce\": \"<nonce>\"}} before \
         {}.",
        body.difficulty, body.expires_at
    );
    let problem = Problem::new(428, detail)
        .with("challenge", body.challenge)
        .with("difficulty", body.difficulty)
        .with("algorithm", body.algorithm)
        .with("expires_at", body.expires_at)
        .with("join_url", join);
    Reply::problem(problem).no_store()
}

impl Refusal {
    /// The JSON answer (`POST /wr/{q}/join`; the WebSocket's refusals).
    pub fn reply(&self, queue: &str) -> Reply {
        match self {
            Refusal::Limited { limit, detail, retry_after, .. } => limited_reply(limit, detail, *retry_after),
            Refusal::Challenge { challenge, why } => challenge_reply(queue, challenge, *why),
            Refusal::Schedule(m) => Reply::json(200, m.as_ref()).no_store(),
            Refusal::StoreDown => Failure::StoreDown.reply(),
        }
    }
}

// The OpenAPI responses of the refusals above (see `problem::doc`).

crate::problem::doc::problem_response!(
    /// 428: a new place needs a solved challenge.
    ChallengeRequired,
    "A new place in this queue needs a proof of work (`challenge`, `difficulty`, `algorithm`, `expires_at`, \
     `join_url`); the same answer follows a rejected answer, saying why first:\n",
    [
        ("challenge", challenge_reply("sale", &example_challenge(), None)),
        ("answer_rejected", challenge_reply("sale", &example_challenge(), Some(Invalid::Wrong.detail()))),
    ]
);

crate::problem::doc::problem_response!(
    /// 429: a per-client limit (`limit` names it; retry after `Retry-After` seconds).
    OverLimit,
    "Over a per-client limit (`limit` names the config key under `[limits]`); retry after `Retry-After` \
     seconds:\n",
    [
        ("joins", example_limit("joins", rate_detail(JOINS, limits().joins, 1))),
        ("new_visitors", example_limit("new_visitors", rate_detail(NEW_VISITORS, limits().new_visitors, 1))),
        ("max_waiting_per_client", example_limit("max_waiting_per_client", places_detail(limits().max_waiting_per_client, 1))),
    ]
);

fn limits() -> crate::config::LimitsConfig {
    crate::config::LimitsConfig::default()
}

fn example_limit(limit: &'static str, detail: String) -> Reply {
    limited_reply(limit, &detail, 1)
}

/// A challenge as the examples show it.
fn example_challenge() -> crate::challenge::Challenge {
    let keys = crate::challenge::Keys::new(&shared::visitor::CookieSigner::new(b"openapi example, not a real key"));
    keys.issue("sale", 14, 1_767_225_600_000, 300_000)
}
