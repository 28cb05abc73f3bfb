-- Per-visitor limits, session-bound holds and bounded idempotency storage.

-- A visitor's seats (held or booked) on an event: counted by every hold.
CREATE INDEX seats_holder_idx ON seats (held_by, event_id) WHERE held_by IS NOT NULL;

-- Idempotency records expire (idempotency.ttl); the sweeper deletes by age.
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
-- The session end an answer carried (`confirm`/`claim`), replayed with it.
ALTER TABLE idempotency_keys ADD COLUMN session_end TEXT;

-- A hold with the per-visitor limit, in one statement: the caller's live
-- holds and bookings on the event are counted under a transaction-scoped
-- advisory lock on (event, visitor), so two holds by one visitor never count
-- at the same time. The count runs after the lock is granted: in a VOLATILE
-- function each statement takes a fresh snapshot, so it sees every hold the
-- previous lock holder committed (a plain CTE would count from a snapshot
-- taken before the wait). The same statement then runs the conditional
-- UPDATE that decides the seat, and inserts the hold record. True: held.
-- False: over the limit, seat taken, or not a seat of this event (the caller
-- reads which). The lock key's halves may collide for different visitors;
-- that only makes two of them wait for each other.
CREATE FUNCTION take_hold(p_event BIGINT, p_seat BIGINT, p_hold TEXT, p_visitor TEXT,
                          p_now BIGINT, p_expires BIGINT, p_max BIGINT)
RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock((p_event % 2147483647)::int, hashtext(p_visitor));
    WITH taken AS (
        UPDATE seats SET status = 'HELD', hold_id = p_hold, held_by = p_visitor, hold_expires_at = p_expires
        WHERE seats.id = p_seat AND seats.event_id = p_event
          AND (seats.status = 'AVAILABLE' OR (seats.status = 'HELD' AND seats.hold_expires_at <= p_now))
          AND (SELECT count(*) FROM seats s
               WHERE s.held_by = p_visitor AND s.event_id = p_event
                 AND (s.status = 'BOOKED' OR (s.status = 'HELD' AND s.hold_expires_at > p_now))) < p_max
        RETURNING seats.id, seats.event_id)
    INSERT INTO holds (id, seat_id, event_id, visitor_id, created_at, expires_at)
    SELECT p_hold, taken.id, taken.event_id, p_visitor, p_now, p_expires FROM taken;
    RETURN FOUND;
END
$$;
