-- Tables the ecosystem knows (orders-db.md), in SQLite types. Timestamps are UTC text
-- 'YYYY-MM-DD HH:MM:SS.SSS', which sorts and compares like the time it names.
CREATE TABLE IF NOT EXISTS imports_preprocessing (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    container TEXT NOT NULL,
    input_file TEXT NOT NULL,
    output_folder TEXT NOT NULL,
    alt_output_folder TEXT NULL,
    extra_params TEXT NULL
);

CREATE TABLE IF NOT EXISTS imports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    group_name TEXT NOT NULL,
    user_name TEXT NOT NULL,
    destination_id TEXT NOT NULL,
    destination_type TEXT NOT NULL,
    stage TEXT NOT NULL,
    uuid TEXT NOT NULL DEFAULT (lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' ||
        substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) ||
        substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))),
    timestamp TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    files TEXT NOT NULL,
    file_names TEXT NULL,
    description TEXT NULL,
    preprocessing_id INTEGER NULL REFERENCES imports_preprocessing (id)
);

-- The agent's columns (the migration runner adds the ones a table lacks).
ALTER TABLE imports ADD COLUMN IF NOT EXISTS source TEXT DEFAULT 'sql';
ALTER TABLE imports ADD COLUMN IF NOT EXISTS attempt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE imports ADD COLUMN IF NOT EXISTS lease_owner TEXT NULL;
ALTER TABLE imports ADD COLUMN IF NOT EXISTS lease_expires TEXT NULL;
ALTER TABLE imports ADD COLUMN IF NOT EXISTS not_before TEXT NULL;
ALTER TABLE imports ADD COLUMN IF NOT EXISTS cancel_requested BOOLEAN NOT NULL DEFAULT 0;
ALTER TABLE imports ADD COLUMN IF NOT EXISTS result TEXT NULL;

CREATE INDEX IF NOT EXISTS ix_imports_user_name ON imports (user_name);
CREATE INDEX IF NOT EXISTS ix_imports_uuid ON imports (uuid);
CREATE INDEX IF NOT EXISTS imports_ix_uuid_timestamp ON imports (uuid, timestamp);
CREATE INDEX IF NOT EXISTS adi_imports_uuid_id ON imports (uuid, id);
CREATE INDEX IF NOT EXISTS adi_imports_pending ON imports (id) WHERE stage = 'Import Pending';
CREATE INDEX IF NOT EXISTS adi_imports_running ON imports (lease_expires)
    WHERE stage IN ('Import Started', 'Import Preprocessing');

CREATE TABLE IF NOT EXISTS adi_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid TEXT NOT NULL,
    stage TEXT NOT NULL,
    at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    worker TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS adi_history_uuid ON adi_history (uuid);

CREATE TABLE IF NOT EXISTS adi_watch_items (
    rule TEXT NOT NULL,
    path TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    uuid TEXT NOT NULL,
    created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    UNIQUE (rule, path, fingerprint)
);
CREATE INDEX IF NOT EXISTS adi_watch_items_rule_fingerprint ON adi_watch_items (rule, fingerprint);

-- A person's retry (UPDATE imports SET stage = 'Import Pending' ...) works live: the lease of the
-- previous attempt is dropped, and the stage time is set when the statement did not set it. The
-- agent's own updates always set timestamp and drop the lease themselves, so they skip this.
DROP TRIGGER IF EXISTS adi_imports_back_to_pending;
DROP TRIGGER IF EXISTS adi_imports_stage_set_by_hand;
CREATE TRIGGER adi_imports_stage_set_by_hand AFTER UPDATE OF stage ON imports
    FOR EACH ROW WHEN NEW.stage IS NOT OLD.stage AND (NEW.timestamp IS OLD.timestamp
        OR (NEW.stage = 'Import Pending' AND NEW.lease_owner IS NOT NULL))
BEGIN
    UPDATE imports SET lease_owner = NULL, lease_expires = NULL, cancel_requested = 0
        WHERE id = NEW.id AND NEW.stage = 'Import Pending';
    UPDATE imports SET timestamp = strftime('%Y-%m-%d %H:%M:%f', 'now')
        WHERE id = NEW.id AND NEW.timestamp IS OLD.timestamp;
END;
