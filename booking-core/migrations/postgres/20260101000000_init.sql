-- Booking core schema (PostgreSQL). Timestamps are epoch milliseconds.
-- Constraint names matter: the code maps them to precise 4xx answers.

CREATE TABLE events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT   NOT NULL,
    venue       TEXT   NOT NULL,
    starts_at   BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE seats (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        BIGINT NOT NULL CONSTRAINT seats_event_fk REFERENCES events (id),
    label           TEXT   NOT NULL,
    row_label       TEXT   NOT NULL,
    number          BIGINT NOT NULL,
    price_cents     BIGINT NOT NULL CONSTRAINT seats_price_check CHECK (price_cents >= 0),
    status          TEXT   NOT NULL DEFAULT 'AVAILABLE'
                    CONSTRAINT seats_status_check CHECK (status IN ('AVAILABLE', 'HELD', 'BOOKED')),
    -- Set while HELD (and kept once BOOKED): the hold that owns the seat.
    hold_id         TEXT,
    held_by         TEXT,
    hold_expires_at BIGINT,
    CONSTRAINT seats_event_label_key UNIQUE (event_id, label),
    CONSTRAINT seats_held_check CHECK (status <> 'HELD' OR (hold_id IS NOT NULL AND hold_expires_at IS NOT NULL))
);
CREATE INDEX seats_event_idx ON seats (event_id, id);
CREATE INDEX seats_expiring_idx ON seats (hold_expires_at) WHERE status = 'HELD';

CREATE TABLE holds (
    id          TEXT   PRIMARY KEY,
    seat_id     BIGINT NOT NULL CONSTRAINT holds_seat_fk REFERENCES seats (id),
    event_id    BIGINT NOT NULL,
    visitor_id  TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    state       TEXT   NOT NULL DEFAULT 'ACTIVE'
                CONSTRAINT holds_state_check CHECK (state IN ('ACTIVE', 'CONFIRMED', 'RELEASED', 'EXPIRED'))
);
CREATE INDEX holds_active_expiry_idx ON holds (expires_at) WHERE state = 'ACTIVE';

CREATE TABLE bookings (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hold_id     TEXT   NOT NULL CONSTRAINT bookings_hold_key UNIQUE REFERENCES holds (id),
    -- One booking per seat, whatever the application does.
    seat_id     BIGINT NOT NULL CONSTRAINT bookings_seat_key UNIQUE REFERENCES seats (id),
    event_id    BIGINT NOT NULL,
    visitor_id  TEXT   NOT NULL,
    price_cents BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX bookings_visitor_idx ON bookings (visitor_id);

CREATE TABLE coupon_campaigns (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    BIGINT NOT NULL CONSTRAINT coupon_campaigns_event_fk REFERENCES events (id),
    name        TEXT   NOT NULL,
    stock       BIGINT NOT NULL CONSTRAINT coupon_campaigns_stock_check CHECK (stock > 0),
    opens_at    BIGINT NOT NULL,
    closes_at   BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    CONSTRAINT coupon_campaigns_window_check CHECK (opens_at < closes_at)
);

-- Exactly `stock` rows per campaign, created with it. A claim sets visitor_id
-- on a free row, so claims can never exceed stock; the unique constraint
-- keeps one per visitor (NULLs are distinct, so free rows do not collide);
-- leading with visitor_id, it also serves GET /api/me/coupons.
CREATE TABLE coupon_codes (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id BIGINT NOT NULL CONSTRAINT coupon_codes_campaign_fk REFERENCES coupon_campaigns (id),
    code        TEXT   NOT NULL CONSTRAINT coupon_codes_code_key UNIQUE,
    -- 1..stock: claimers start at a random slot, so they neither queue on
    -- the same rows nor all re-scan the claimed ones at the front.
    slot        BIGINT NOT NULL,
    visitor_id  TEXT,
    claimed_at  BIGINT,
    CONSTRAINT coupon_codes_campaign_visitor_key UNIQUE (visitor_id, campaign_id)
);
CREATE INDEX coupon_codes_free_idx ON coupon_codes (campaign_id, slot) WHERE visitor_id IS NULL;

CREATE TABLE idempotency_keys (
    visitor_id  TEXT   NOT NULL,
    key         TEXT   NOT NULL,
    fingerprint TEXT   NOT NULL,
    state       TEXT   NOT NULL CONSTRAINT idempotency_state_check CHECK (state IN ('running', 'done')),
    status      BIGINT,
    body        TEXT,
    created_at  BIGINT NOT NULL,
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (visitor_id, key)
);
