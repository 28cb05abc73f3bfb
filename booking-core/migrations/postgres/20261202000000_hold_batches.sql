-- Many holds on one event in one transaction: the holds' group commit (see
-- holds/batch.rs). Each attempt runs take_hold's steps in turn; the answer
-- says which were granted, in the attempts' order (an attempt that would end
-- at or before p_now, its session over, is refused). Within the transaction
-- every statement sees the holds made before it, so a visitor's second
-- attempt in a batch counts the first against the limit.
--
-- Locks are taken in one global order so that batches never deadlock with
-- each other or with take_hold: first every (event, visitor) advisory lock,
-- by key; then the seats, by id. A transaction waiting for an advisory lock
-- holds no seat lock, and one that holds seat locks only waits for seats
-- with higher ids.
CREATE FUNCTION take_holds(p_event BIGINT, p_seats BIGINT[], p_holds TEXT[], p_visitors TEXT[],
                           p_now BIGINT, p_expires BIGINT[], p_max BIGINT)
RETURNS BOOLEAN[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    k INT;
    i INT;
    granted BOOLEAN[] := array_fill(false, ARRAY[cardinality(p_seats)]);
BEGIN
    FOR k IN SELECT DISTINCT hashtext(v) FROM unnest(p_visitors) AS v ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock((p_event % 2147483647)::int, k);
    END LOOP;
    FOR i IN SELECT t.n::int FROM unnest(p_seats) WITH ORDINALITY AS t(seat, n) ORDER BY t.seat, t.n LOOP
        -- A session that has already ended holds nothing.
        CONTINUE WHEN p_expires[i] <= p_now;
        WITH taken AS (
            UPDATE seats SET status = 'HELD', hold_id = p_holds[i], held_by = p_visitors[i],
                             hold_expires_at = p_expires[i]
            WHERE seats.id = p_seats[i] AND seats.event_id = p_event
              AND (seats.status = 'AVAILABLE' OR (seats.status = 'HELD' AND seats.hold_expires_at <= p_now))
              AND (SELECT count(*) FROM seats s
                   WHERE s.held_by = p_visitors[i] AND s.event_id = p_event
                     AND (s.status = 'BOOKED' OR (s.status = 'HELD' AND s.hold_expires_at > p_now))) < p_max
            RETURNING seats.id, seats.event_id)
        INSERT INTO holds (id, seat_id, event_id, visitor_id, created_at, expires_at)
        SELECT p_holds[i], taken.id, taken.event_id, p_visitors[i], p_now, p_expires[i] FROM taken;
        granted[i] := FOUND;
    END LOOP;
    RETURN granted;
END
$$;
