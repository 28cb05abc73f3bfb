//! What one virtual visitor saw: the raw material of the audit.
//!
//! Client-side times are nanoseconds since the start of the run on the
//! harness's monotonic clock; server-side times (`admitted_at`, hold expiry)
//! are the services' epoch milliseconds, compared only with each other.

use serde::Serialize;

/// How a visitor waits in line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Holds `/wr/{q}/ws` open until READY.
    WebSocket,
    /// Polls `/wr/{q}/status`.
    Polling,
}

/// The join as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct JoinObs {
    /// When the request was about to be sent (ns since the run started).
    pub sent_ns: u64,
    /// When the answer arrived.
    pub received_ns: u64,
    /// Position in the answer (WAITING).
    pub position: Option<u64>,
}

/// A seat hold the booking core granted (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HoldObs {
    /// Hold id.
    pub hold_id: String,
    /// Seat.
    pub seat_id: i64,
    /// Hold end (epoch ms, server clock).
    pub expires_at_ms: i64,
    /// Confirm answered 200 (a booking).
    pub confirmed: bool,
    /// When that 200 arrived (ns since the run started).
    pub confirmed_ns: Option<u64>,
}

/// A coupon claim acknowledged with 201.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClaimObs {
    /// Claim id.
    pub claim_id: i64,
    /// Campaign.
    pub campaign_id: i64,
    /// Coupon code.
    pub code: String,
}

/// How the visitor's flow ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "fate", content = "detail")]
pub enum Fate {
    /// Still running (never seen in a finished record).
    Running,
    /// Admitted and went through the booking flow (whatever the seats and stock allowed).
    Done,
    /// Admitted, then made no request on purpose (`--no-show`).
    NoShow,
    /// Left the line on purpose before being admitted.
    Abandoned,
    /// Told SOLD_OUT before being admitted (at the join, on the socket or
    /// by a poll) and stopped: the sale's outcome, not a failure.
    SoldOut,
    /// Still waiting when the run stopped it (drain timeout).
    StillWaiting,
    /// Still booking when the run stopped it.
    Stopped,
    /// An error ended the flow (the kind).
    Failed(String),
}

/// Everything one visitor observed.
#[derive(Debug, Clone, Serialize)]
pub struct VisitorRecord {
    /// Arrival number.
    pub index: usize,
    /// WebSocket or polling (a WebSocket visitor that fell back to polling stays `WebSocket`).
    pub mode: Mode,
    /// Chosen to abandon while waiting.
    pub abandoner: bool,
    /// The visitor id (the entry token's `sub`), once admitted.
    pub visitor_id: Option<String>,
    /// The first join.
    pub join: Option<JoinObs>,
    /// Lost its place (NOT_IN_QUEUE) and joined again: its join order is unknown.
    pub rejoined: bool,
    /// Admitted at once by the join (free entry), not by a tick.
    pub free_entry: bool,
    /// Proof-of-work challenges solved to join.
    pub challenges: u32,
    /// Nonces tried for them.
    pub hashes: u64,
    /// `admitted_at` of the READY message (epoch ms, server clock).
    pub admitted_at_ms: Option<i64>,
    /// When the harness saw the READY (ns since the run started).
    pub admitted_ns: Option<u64>,
    /// When the booking flow's last answer arrived (ns since the run started; done visitors only).
    pub finished_ns: Option<u64>,
    /// Status of the unauthenticated request to the protected URL.
    pub gate_status: Option<u16>,
    /// Positions that went up between two observations: (before, after).
    pub position_increases: Vec<(u64, u64)>,
    /// The entry token (kept for the per-visitor checks after the run).
    #[serde(skip)]
    pub token: Option<String>,
    /// Holds granted.
    pub holds: Vec<HoldObs>,
    /// Claims acknowledged.
    pub claims: Vec<ClaimObs>,
    /// How it ended.
    #[serde(flatten)]
    pub fate: Fate,
    /// The visitor's public id in the queue's lottery (from PREQUEUE or WAITING).
    pub public_id: Option<String>,
    /// Joined while the pre-queue was open (saw PREQUEUE).
    pub prequeue: bool,
    /// When SOLD_OUT reached the visitor (ns since the run started).
    pub sold_out_ns: Option<u64>,
    /// It came over the WebSocket (not a poll or the join's answer).
    pub sold_out_on_socket: bool,
    /// Waiting on an open WebSocket right now (at the end: the socket was
    /// still open when the run stopped the visitor).
    pub on_socket: bool,
    /// Last observed position (internal bookkeeping for `position_increases`).
    #[serde(skip)]
    pub last_position: Option<u64>,
}

impl VisitorRecord {
    /// A visitor about to arrive.
    pub fn new(index: usize, mode: Mode, abandoner: bool) -> Self {
        VisitorRecord {
            index,
            mode,
            abandoner,
            visitor_id: None,
            join: None,
            rejoined: false,
            free_entry: false,
            challenges: 0,
            hashes: 0,
            admitted_at_ms: None,
            admitted_ns: None,
            finished_ns: None,
            gate_status: None,
            position_increases: Vec::new(),
            token: None,
            holds: Vec::new(),
            claims: Vec::new(),
            fate: Fate::Running,
            public_id: None,
            prequeue: false,
            sold_out_ns: None,
            sold_out_on_socket: false,
            on_socket: false,
            last_position: None,
        }
    }

    /// Note a WAITING position; remembers it if it went up.
    pub fn saw_position(&mut self, position: u64) {
        if let Some(last) = self.last_position
            && position > last
        {
            self.position_increases.push((last, position));
        }
        self.last_position = Some(position);
    }

    /// Note a standing message (join answer, socket message or poll): the
    /// public id, the pre-queue, the position.
    pub fn saw_standing(&mut self, m: &serde_json::Value) {
        if let Some(id) = m["public_id"].as_str() {
            self.public_id = Some(id.to_owned());
        }
        if m["status"] == "PREQUEUE" {
            self.prequeue = true;
        }
        if let Some(p) = m["position"].as_u64() {
            self.saw_position(p);
        }
    }

    /// Whether the visitor stood in line (joined and was not let in by free entry).
    pub fn queued(&self) -> bool {
        self.join.is_some() && !self.free_entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_that_goes_up_is_remembered() {
        let mut r = VisitorRecord::new(0, Mode::WebSocket, false);
        for p in [10, 8, 8, 3, 5, 1] {
            r.saw_position(p);
        }
        assert_eq!(r.position_increases, vec![(3, 5)]);
    }
}
