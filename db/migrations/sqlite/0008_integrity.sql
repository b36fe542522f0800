-- Issue 20: what each in-place order linked, what the integrity check found, and the retention
-- journal; see the PostgreSQL twin of this file for why links are rows and not result JSON.
CREATE TABLE IF NOT EXISTS adi_links (
    id INTEGER PRIMARY KEY,
    uuid TEXT NOT NULL,
    fileset_id INTEGER NOT NULL DEFAULT 0,
    link TEXT NOT NULL,
    target TEXT NOT NULL,
    is_dir INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    dev INTEGER NOT NULL DEFAULT 0,
    ino INTEGER NOT NULL DEFAULT 0,
    UNIQUE (uuid, link)
);
CREATE INDEX IF NOT EXISTS adi_links_target ON adi_links (target);

CREATE TABLE IF NOT EXISTS adi_integrity (
    uuid TEXT PRIMARY KEY,
    checked_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    links INTEGER NOT NULL DEFAULT 0,
    broken INTEGER NOT NULL DEFAULT 0,
    damage TEXT NOT NULL DEFAULT '[]'
);

CREATE TABLE IF NOT EXISTS adi_retention_moves (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    worker TEXT NOT NULL DEFAULT '',
    rule TEXT NOT NULL DEFAULT '',
    uuid TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL,
    destination TEXT NOT NULL,
    reason TEXT NOT NULL
);
