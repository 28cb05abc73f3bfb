//! Where a visitor stands, in the words the visitor hears: the
//! [`StatusMessage`] the queue API (`join`, `status`), the WebSocket, the push
//! fan-out and the queue page all send, built by [`message`] from the store's
//! [`Standing`], the queue's phase and mode (signing the entry token when
//! READY). Its JSON is the wire format of `/wr` and of the page's script.

use serde::Serialize;
use shared::token::TokenSigner;
use shared::visitor::VisitorId;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;
use utoipa::{PartialSchema, ToSchema};

use crate::challenge::ChallengeBody;
use crate::config::QueueMode;
use crate::queues::Queue;
use crate::schedule::{At, Phase};
use crate::store::Standing;
use crate::tokens::{self, Issued};

/// What the queue API and the WebSocket tell a visitor about their standing.
/// WAITING carries `position`, `queue_length`, `eta_seconds`,
/// `retry_after_seconds` (and `paused` while releases are paused); READY the
/// entry token with `expires_at` and `admitted_at`; NOT_IN_QUEUE the `join_url`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct StatusMessage {
    /// `WAITING`, `READY`, `NOT_IN_QUEUE`, on a scheduled queue
    /// `SCHEDULED`, `PREQUEUE`, `CLOSED`, in `reject` mode `UNAVAILABLE`,
    /// and `SOLD_OUT` once what the queue sells is gone.
    pub status: QueueStatus,
    /// Queue id.
    pub queue: String,
    /// 1 + visitors ahead (WAITING).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// Visitors in line (WAITING).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_length: Option<u64>,
    /// Estimated seconds until admission (WAITING).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<u64>,
    /// How long a polling client should wait before asking again (WAITING).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
    /// Releases are paused by the operator (WAITING).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// The entry token and its times (READY).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = entry_fields)]
    pub entry: Option<Issued>,
    /// Where to join (NOT_IN_QUEUE).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_url: Option<String>,
    /// The challenge to solve before joining (NOT_IN_QUEUE, on a queue with
    /// `challenge = "pow"`, sent by the WebSocket before it closes): answer
    /// it with `POST join_url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenge: Option<ChallengeBody>,
    /// The operator's message to everyone in the queue (any status).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `random` when visitors are let in by random draw (WAITING): there is
    /// no place number then, and the wait is a range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    /// The wait as a range, shortest and longest, in seconds (WAITING in
    /// random mode: picked at the next tick at the soonest, once everyone now
    /// waiting has been let in at the latest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_range_seconds: Option<[u64; 2]>,
    /// When the queue opens (SCHEDULED, PREQUEUE), RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opens_at: Option<String>,
    /// When the pre-queue opens (SCHEDULED on a queue with a lottery).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prequeue_from: Option<String>,
    /// When the sale closes(d) (CLOSED; WAITING on a queue that closes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closes_at: Option<String>,
    /// The visitor's public id in the lottery (PREQUEUE, and WAITING on a
    /// queue with a lottery): find it in the published draw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_id: Option<String>,
    /// Where the lottery's commitment, and after the draw its seed and
    /// order, are published (queues with a pre-queue).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lottery_url: Option<String>,
    /// The queue ticket of this place (WAITING, in the answer to a join; also
    /// set as cookie `wr_ticket_<queue>`): should the queue store lose the
    /// line, joining again with it restores the place by its original order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
}

/// Polling interval for a visitor `eta` seconds from the front: every 2 s near
/// the front, growing to 30 s for visitors far back.
pub fn retry_after(eta: u64) -> u64 {
    (eta / 10).clamp(2, 30)
}

/// The message for a standing (signing the token when READY).
pub fn message(
    signer: &TokenSigner,
    queue: &Queue,
    visitor: VisitorId,
    standing: Standing,
    now_ms: i64,
) -> StatusMessage {
    let mut m = StatusMessage {
        status: QueueStatus::NotInQueue,
        queue: queue.id().to_owned(),
        position: None,
        queue_length: None,
        eta_seconds: None,
        retry_after_seconds: None,
        paused: false,
        entry: None,
        join_url: None,
        challenge: None,
        ticket: None,
        opens_at: None,
        prequeue_from: None,
        closes_at: None,
        public_id: None,
        lottery_url: None,
        mode: None,
        wait_range_seconds: None,
        message: queue.message().map(|m| m.to_string()),
    };
    // A deleted queue: everyone still connected hears it is closed (its
    // paths are no longer behind a line).
    if queue.retired() {
        m.status = QueueStatus::Closed;
        return m;
    }
    let queue_mode = queue.admission().queue_mode;
    if queue_mode == QueueMode::Reject && !matches!(standing, Standing::Ready { .. }) {
        m.status = QueueStatus::Unavailable;
        m.retry_after_seconds = Some(UNAVAILABLE_RETRY_SECS);
        return m;
    }
    // Sold out: everyone not admitted hears it; a place is kept for stock
    // that comes back (the socket stays open and hears that too).
    if queue.sold_out() && !matches!(standing, Standing::Ready { .. }) {
        m.status = QueueStatus::SoldOut;
        m.retry_after_seconds = Some(UNAVAILABLE_RETRY_SECS);
        m.queue_length = match standing {
            Standing::Waiting { waiting, .. } => Some(waiting),
            _ => None,
        };
        return m;
    }
    let def = queue.def();
    let schedule = &def.schedule;
    if schedule.has_lottery() {
        m.lottery_url = Some(lottery_url(queue.id()));
    }
    m.closes_at = schedule.closes_at.map(At::rfc3339);
    let phase = queue.phase(now_ms);
    match (phase, standing) {
        (Phase::Scheduled, _) => {
            m.status = QueueStatus::Scheduled;
            m.opens_at = schedule.opens_at.map(At::rfc3339);
            m.prequeue_from = schedule.prequeue_from.map(At::rfc3339);
            m.retry_after_seconds = Some(until_next_change(schedule, now_ms));
            return m;
        }
        (Phase::PreQueue, Standing::Waiting { waiting, .. }) => {
            m.status = QueueStatus::Prequeue;
            m.queue_length = Some(waiting);
            m.opens_at = schedule.opens_at.map(At::rfc3339);
            m.public_id = Some(crate::lottery::public_id(queue.id(), visitor));
            m.retry_after_seconds = Some(until_next_change(schedule, now_ms));
            return m;
        }
        (Phase::Closed, Standing::NotInQueue) => {
            m.status = QueueStatus::Closed;
            return m;
        }
        _ => {}
    }
    if schedule.has_lottery() && matches!(standing, Standing::Waiting { .. }) {
        m.public_id = Some(crate::lottery::public_id(queue.id(), visitor));
    }
    match standing {
        Standing::Waiting { waiting, .. } if queue_mode == QueueMode::Random => {
            // Every waiting visitor has the same chance each tick: the
            // expected wait is half the line's, the longest the whole line's.
            let (soonest, eta, longest) = (
                queue.eta_seconds(1, now_ms),
                queue.eta_seconds(waiting.div_ceil(2), now_ms),
                queue.eta_seconds(waiting, now_ms),
            );
            m.status = QueueStatus::Waiting;
            m.mode = Some("random");
            m.queue_length = Some(waiting);
            m.eta_seconds = Some(eta);
            m.wait_range_seconds = Some([soonest, longest]);
            m.retry_after_seconds = Some(retry_after(soonest));
            m.paused = queue.paused();
        }
        Standing::Waiting { position, waiting } => {
            let eta = queue.eta_seconds(position, now_ms);
            m.status = QueueStatus::Waiting;
            m.position = Some(position);
            m.queue_length = Some(waiting);
            m.eta_seconds = Some(eta);
            m.retry_after_seconds = Some(retry_after(eta));
            m.paused = queue.paused();
        }
        Standing::Ready { .. } => match tokens::for_standing(signer, queue.id(), visitor, standing, now_ms) {
            Some(issued) => {
                m.status = QueueStatus::Ready;
                m.entry = Some(issued);
            }
            None => m.join_url = Some(join_url(queue.id())),
        },
        Standing::NotInQueue => m.join_url = Some(join_url(queue.id())),
    }
    m
}

/// How often a visitor of a queue in `reject` mode asks again.
const UNAVAILABLE_RETRY_SECS: u64 = 30;

/// Where to join `queue`.
pub fn join_url(queue: &str) -> String {
    format!("/wr/{queue}/join")
}

/// Where `queue`'s lottery is published.
pub fn lottery_url(queue: &str) -> String {
    format!("/wr/{queue}/lottery")
}

/// Seconds a client should wait before asking again while the schedule
/// holds it: until the next phase begins (at most 30 s, so a countdown
/// corrected by an operator is heard; at least 1 s).
fn until_next_change(schedule: &crate::schedule::Schedule, now_ms: i64) -> u64 {
    schedule.next_change(now_ms).map_or(30, |t| u64::try_from((t.0 - now_ms + 999) / 1000).unwrap_or(1).clamp(1, 30))
}

/// The token fields a READY [`StatusMessage`]
/// flattens in: [`Issued`]'s derived schema, none required (other statuses
/// have none of them).
pub fn entry_fields() -> RefOr<Schema> {
    let mut schema = Issued::schema();
    if let RefOr::T(Schema::Object(object)) = &mut schema {
        object.required.clear();
        object.description = Some("READY only: the entry token (also set as cookie `wr_entry`) and its times.".into());
    }
    schema
}

/// Where a visitor stands.
// (The doc line above is the schema's description in the OpenAPI document;
// on the wire each status is its `as_str`.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum QueueStatus {
    /// In line: `position`, `queue_length`, `eta_seconds`, `retry_after_seconds`.
    Waiting,
    /// Admitted: `token`, `expires_at`, `admitted_at` (and cookie `wr_entry`).
    Ready,
    /// Not in line (never joined, or lost the place): `join_url`.
    #[default]
    NotInQueue,
    /// The queue opens later (`opens_at`; a pre-queue from `prequeue_from`):
    /// nobody joins yet; ask again after `retry_after_seconds`.
    Scheduled,
    /// In the pre-queue: `public_id`, `queue_length` (entrants so far),
    /// `opens_at`. Places are drawn by lottery at `opens_at` (`lottery_url`).
    Prequeue,
    /// The sale is closed (`closes_at`): nobody new joins.
    Closed,
    /// The queue is not available (operator's `reject` mode): nobody joins
    /// or is let in; places already held are kept. Ask again after
    /// `retry_after_seconds`.
    Unavailable,
    /// Sold out (`stop_when_sold_out`): nobody new joins, nobody is let in;
    /// places are kept in case stock comes back (the socket says so).
    SoldOut,
}

impl QueueStatus {
    /// The status as sent (`WAITING`, `NOT_IN_QUEUE`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            QueueStatus::Waiting => "WAITING",
            QueueStatus::Ready => "READY",
            QueueStatus::NotInQueue => "NOT_IN_QUEUE",
            QueueStatus::Scheduled => "SCHEDULED",
            QueueStatus::Prequeue => "PREQUEUE",
            QueueStatus::Closed => "CLOSED",
            QueueStatus::Unavailable => "UNAVAILABLE",
            QueueStatus::SoldOut => "SOLD_OUT",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_is_sent_as_its_name() {
        use QueueStatus::*;
        for s in [Waiting, Ready, NotInQueue, Scheduled, Prequeue, Closed, Unavailable, SoldOut] {
            assert_eq!(serde_json::to_value(s).ok(), Some(serde_json::Value::from(s.as_str())));
        }
    }

    #[test]
    fn pollers_far_back_are_asked_to_wait_longer() {
        assert_eq!(retry_after(0), 2);
        assert_eq!(retry_after(100), 10);
        assert_eq!(retry_after(10_000), 30);
    }
}
