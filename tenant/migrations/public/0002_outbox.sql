-- The transactional outbox: an event row is written in the same transaction
-- as the change that caused it, with one delivery row per consumer.

CREATE TABLE outbox (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    type        text NOT NULL,
    subject_id  text NOT NULL DEFAULT '',
    actor_id    uuid,
    payload     jsonb NOT NULL,
    -- Set for events the scheduler computes, so each fires once across workers.
    dedupe_key  text UNIQUE,
    occurred_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_tenant_idx ON outbox (tenant_id, id DESC);

CREATE TABLE outbox_deliveries (
    event_id        uuid NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    consumer        text NOT NULL,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'parked')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    locked_until    timestamptz,
    last_error      text NOT NULL DEFAULT '',
    delivered_at    timestamptz,
    PRIMARY KEY (event_id, consumer)
);
CREATE INDEX outbox_deliveries_due_idx ON outbox_deliveries (next_attempt_at) WHERE state = 'pending';
