-- Webhooks: an application's receivers, and the durable outbox of their deliveries.
-- webhooks.events: the event types it receives, as ',type,type,' (a LIKE finds one); the signing
-- secret is sealed under the master key for its row.
CREATE TABLE webhooks (
    id               UUID PRIMARY KEY,
    application_id   UUID NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    url              TEXT NOT NULL,
    events           TEXT NOT NULL,
    secret_encrypted BYTEA NOT NULL,
    created_at       BIGINT NOT NULL
);
CREATE INDEX webhooks_application ON webhooks (application_id, id);

-- One row per event and webhook, written in the transaction that made the change. `id` is the
-- Standard Webhooks message id (the same on every attempt); `payload` the exact body signed.
CREATE TABLE webhook_deliveries (
    id              UUID PRIMARY KEY,
    webhook_id      UUID NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    application_id  UUID NOT NULL,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    last_status     BIGINT,
    last_error      TEXT,
    next_attempt_at BIGINT,
    created_at      BIGINT NOT NULL,
    delivered_at    BIGINT
);
-- The worker's queue: pending deliveries by when they are due.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
-- A webhook's log, newest first.
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, id);

-- The event types any of an application's webhooks receive (',type,…,'; '' none), kept with the
-- application so a change knows without a query whether it has an event to write.
ALTER TABLE applications ADD COLUMN webhook_events TEXT NOT NULL DEFAULT '';
