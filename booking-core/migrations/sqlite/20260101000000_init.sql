-- Booking core schema (SQLite): the PostgreSQL schema with SQLite's integer
-- primary keys. Timestamps are epoch milliseconds. Constraint names match the
-- PostgreSQL ones.

CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL,
    venue       TEXT    NOT NULL,
    starts_at   INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE seats (
    id              INTEGER PRIMARY KEY,
    event_id        INTEGER NOT NULL CONSTRAINT seats_event_fk REFERENCES events (id),
    label           TEXT    NOT NULL,
    row_label       TEXT    NOT NULL,
    number          INTEGER NOT NULL,
    price_cents     INTEGER NOT NULL CONSTRAINT seats_price_check CHECK (price_cents >= 0),
    status          TEXT    NOT NULL DEFAULT 'AVAILABLE'
                    CONSTRAINT seats_status_check CHECK (status IN ('AVAILABLE', 'HELD', 'BOOKED')),
    hold_id         TEXT,
    held_by         TEXT,
    hold_expires_at INTEGER,
    CONSTRAINT seats_event_label_key UNIQUE (event_id, label),
    CONSTRAINT seats_held_check CHECK (status <> 'HELD' OR (hold_id IS NOT NULL AND hold_expires_at IS NOT NULL))
);
CREATE INDEX seats_event_idx ON seats (event_id, id);
CREATE INDEX seats_expiring_idx ON seats (hold_expires_at) WHERE status = 'HELD';

CREATE TABLE holds (
    id          TEXT    PRIMARY KEY,
    seat_id     INTEGER NOT NULL CONSTRAINT holds_seat_fk REFERENCES seats (id),
    event_id    INTEGER NOT NULL,
    visitor_id  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'ACTIVE'
                CONSTRAINT holds_state_check CHECK (state IN ('ACTIVE', 'CONFIRMED', 'RELEASED', 'EXPIRED'))
);
CREATE INDEX holds_active_expiry_idx ON holds (expires_at) WHERE state = 'ACTIVE';

CREATE TABLE bookings (
    id          INTEGER PRIMARY KEY,
    hold_id     TEXT    NOT NULL CONSTRAINT bookings_hold_key UNIQUE REFERENCES holds (id),
    seat_id     INTEGER NOT NULL CONSTRAINT bookings_seat_key UNIQUE REFERENCES seats (id),
    event_id    INTEGER NOT NULL,
    visitor_id  TEXT    NOT NULL,
    price_cents INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX bookings_visitor_idx ON bookings (visitor_id);

CREATE TABLE coupon_campaigns (
    id          INTEGER PRIMARY KEY,
    event_id    INTEGER NOT NULL CONSTRAINT coupon_campaigns_event_fk REFERENCES events (id),
    name        TEXT    NOT NULL,
    stock       INTEGER NOT NULL CONSTRAINT coupon_campaigns_stock_check CHECK (stock > 0),
    opens_at    INTEGER NOT NULL,
    closes_at   INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    CONSTRAINT coupon_campaigns_window_check CHECK (opens_at < closes_at)
);

CREATE TABLE coupon_codes (
    id          INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL CONSTRAINT coupon_codes_campaign_fk REFERENCES coupon_campaigns (id),
    code        TEXT    NOT NULL CONSTRAINT coupon_codes_code_key UNIQUE,
    -- 1..stock: claimers start at a random slot, so they neither queue on
    -- the same rows nor all re-scan the claimed ones at the front.
    slot        INTEGER NOT NULL,
    visitor_id  TEXT,
    claimed_at  INTEGER,
    CONSTRAINT coupon_codes_campaign_visitor_key UNIQUE (visitor_id, campaign_id)
);
CREATE INDEX coupon_codes_free_idx ON coupon_codes (campaign_id, slot) WHERE visitor_id IS NULL;

CREATE TABLE idempotency_keys (
    visitor_id  TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    state       TEXT    NOT NULL CONSTRAINT idempotency_state_check CHECK (state IN ('running', 'done')),
    status      INTEGER,
    body        TEXT,
    created_at  INTEGER NOT NULL,
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (visitor_id, key)
);
