-- The notification outbox; see the PostgreSQL twin of this file.
CREATE TABLE IF NOT EXISTS adi_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    notice_key TEXT NOT NULL UNIQUE,
    uuid TEXT NOT NULL,
    user_name TEXT NOT NULL,
    channel TEXT NOT NULL,
    recipient TEXT NOT NULL DEFAULT '',
    payload TEXT NOT NULL,
    created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before TEXT NULL,
    lease_owner TEXT NULL,
    lease_expires TEXT NULL,
    batch TEXT NULL,
    sent_at TEXT NULL,
    last_error TEXT NULL
);
CREATE INDEX IF NOT EXISTS adi_outbox_unsent ON adi_outbox (channel, recipient, created) WHERE sent_at IS NULL;
CREATE INDEX IF NOT EXISTS adi_outbox_user ON adi_outbox (user_name, id) WHERE channel = 'mail' AND recipient <> '';
