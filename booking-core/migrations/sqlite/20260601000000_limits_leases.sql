-- Per-visitor limits, session-bound holds and bounded idempotency storage.
-- (The hold's per-visitor count lives in its UPDATE: SQLite has one writer.)

-- A visitor's seats (held or booked) on an event: counted by every hold.
CREATE INDEX seats_holder_idx ON seats (held_by, event_id) WHERE held_by IS NOT NULL;

-- Idempotency records expire (idempotency.ttl); the sweeper deletes by age.
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
-- The session end an answer carried (`confirm`/`claim`), replayed with it.
ALTER TABLE idempotency_keys ADD COLUMN session_end TEXT;
