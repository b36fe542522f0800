-- The notification outbox (package notify): one row per message an order's final stage sends (the
-- requester's mail, the admin copy, the webhook), written in the transaction of that stage, so a
-- notification is never lost between the commit and the send. A sender claims rows with a lease, as
-- the runner claims orders, and marks them sent once the server accepted them.
CREATE TABLE IF NOT EXISTS adi_outbox (
    id bigserial PRIMARY KEY,
    notice_key varchar NOT NULL UNIQUE,
    uuid varchar(36) NOT NULL,
    user_name varchar NOT NULL,
    channel varchar NOT NULL,
    recipient text NOT NULL DEFAULT '',
    payload text NOT NULL,
    created timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    not_before timestamptz NULL,
    lease_owner varchar NULL,
    lease_expires timestamptz NULL,
    batch varchar NULL,
    sent_at timestamptz NULL,
    last_error text NULL
);
CREATE INDEX IF NOT EXISTS adi_outbox_unsent ON adi_outbox (channel, recipient, created) WHERE sent_at IS NULL;
CREATE INDEX IF NOT EXISTS adi_outbox_user ON adi_outbox (user_name, id) WHERE channel = 'mail' AND recipient <> '';
