-- Issue 20: what each in-place order linked, what the integrity check found, and the retention
-- journal. One row per ManagedRepository link (an order may hold 200,000): the check pages them per
-- order, and retention asks by target whether any link points at a path, which an index answers;
-- neither would scale inside imports.result (one JSON value per order, read and written whole).
CREATE TABLE IF NOT EXISTS adi_links (
    id bigserial PRIMARY KEY,
    uuid varchar(36) NOT NULL,
    fileset_id bigint NOT NULL DEFAULT 0,
    link text NOT NULL,
    target text NOT NULL,
    is_dir boolean NOT NULL DEFAULT false,
    size bigint NOT NULL,
    mtime_ns bigint NOT NULL,
    -- the target's device and inode at import: a check that finds them (and size and time) unchanged
    -- through the link needs one stat per link
    dev bigint NOT NULL DEFAULT 0,
    ino bigint NOT NULL DEFAULT 0,
    UNIQUE (uuid, link)
);
-- Range scans (target = $1, or target >= $1 || '/' AND target < $1 || '0') need byte order.
CREATE INDEX IF NOT EXISTS adi_links_target ON adi_links (target COLLATE "C");

CREATE TABLE IF NOT EXISTS adi_integrity (
    uuid varchar(36) PRIMARY KEY,
    checked_at timestamptz NOT NULL DEFAULT now(),
    links bigint NOT NULL DEFAULT 0,
    broken boolean NOT NULL DEFAULT false,
    damage text NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS adi_integrity_broken ON adi_integrity (uuid) WHERE broken;

CREATE TABLE IF NOT EXISTS adi_retention_moves (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    worker varchar NOT NULL DEFAULT '',
    rule varchar NOT NULL DEFAULT '',
    uuid varchar(36) NOT NULL DEFAULT '',
    source text NOT NULL,
    destination text NOT NULL,
    reason text NOT NULL
);
