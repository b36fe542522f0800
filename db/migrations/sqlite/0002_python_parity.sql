-- One database for omero-adi and the Python service (BIOMERO.importer 1.4), both ways; see the
-- PostgreSQL twin of this file. The alembic stamp itself is written by Migrate.
ALTER TABLE imports ADD COLUMN IF NOT EXISTS description TEXT NULL;
ALTER TABLE imports ADD COLUMN IF NOT EXISTS import_options TEXT NULL;
ALTER TABLE adi_history ADD COLUMN IF NOT EXISTS import_id INTEGER NULL;
CREATE INDEX IF NOT EXISTS adi_history_import_id ON adi_history (import_id) WHERE import_id IS NOT NULL;

INSERT INTO adi_history (uuid, stage, at, worker, description, import_id)
SELECT i.uuid, i.stage, COALESCE(i.timestamp, strftime('%Y-%m-%d %H:%M:%f', 'now')), 'legacy',
    COALESCE(i.description, ''), i.id
FROM imports i
WHERE i.id = (SELECT max(i2.id) FROM imports i2 WHERE i2.uuid = i.uuid)
  AND NOT EXISTS (SELECT 1 FROM adi_history h WHERE h.uuid = i.uuid);

-- Only the newest row of a uuid is the order: a stage change of an older row leaves it as it was.
-- Claims change attempt and skip the lookup.
DROP TRIGGER IF EXISTS adi_imports_keep_old_rows;
CREATE TRIGGER adi_imports_keep_old_rows BEFORE UPDATE OF stage ON imports
    FOR EACH ROW WHEN NEW.stage IS NOT OLD.stage AND NEW.attempt IS OLD.attempt
        AND EXISTS (SELECT 1 FROM imports i WHERE i.uuid = OLD.uuid AND i.id > OLD.id)
BEGIN
    SELECT RAISE(IGNORE);
END;

-- A row inserted by another writer (the agent's own orders carry their source) is recorded once.
DROP TRIGGER IF EXISTS adi_imports_history_insert;
CREATE TRIGGER adi_imports_history_insert AFTER INSERT ON imports
    FOR EACH ROW WHEN NEW.source IS NULL OR NEW.source = 'sql'
BEGIN
    INSERT INTO adi_history (uuid, stage, at, worker, description, import_id)
    VALUES (NEW.uuid, NEW.stage, COALESCE(NEW.timestamp, strftime('%Y-%m-%d %H:%M:%f', 'now')), 'sql',
        COALESCE(NEW.description, ''), NEW.id);
END;

-- A person's stage change (the statement did not set the stage time, and it is not the agent's
-- claim or finish, which change attempt or lease) lands in the history too.
DROP TRIGGER IF EXISTS adi_imports_stage_set_by_hand;
CREATE TRIGGER adi_imports_stage_set_by_hand AFTER UPDATE OF stage ON imports
    FOR EACH ROW WHEN NEW.stage IS NOT OLD.stage AND (NEW.timestamp IS OLD.timestamp
        OR (NEW.stage = 'Import Pending' AND NEW.lease_owner IS NOT NULL))
BEGIN
    UPDATE imports SET lease_owner = NULL, lease_expires = NULL, cancel_requested = 0
        WHERE id = NEW.id AND NEW.stage = 'Import Pending';
    UPDATE imports SET timestamp = strftime('%Y-%m-%d %H:%M:%f', 'now')
        WHERE id = NEW.id AND NEW.timestamp IS OLD.timestamp;
    INSERT INTO adi_history (uuid, stage, at, worker, description)
    SELECT NEW.uuid, NEW.stage, strftime('%Y-%m-%d %H:%M:%f', 'now'), 'sql', 'changed outside the agent'
    WHERE NEW.attempt IS OLD.attempt AND NEW.lease_owner IS OLD.lease_owner;
END;

DROP VIEW IF EXISTS imports_log;
CREATE VIEW imports_log AS
SELECT row_number() OVER (ORDER BY l.part, l.seq) AS id, l.group_name, l.user_name, l.destination_id,
    l.destination_type, l.stage, l.uuid, l.timestamp, l.files, l.file_names, l.description,
    l.preprocessing_id, l.import_options
FROM (
    SELECT 0 AS part, i.id AS seq, i.group_name, i.user_name, i.destination_id, i.destination_type,
        i.stage, i.uuid, i.timestamp, i.files, i.file_names, i.description, i.preprocessing_id,
        i.import_options
    FROM imports i
    WHERE i.id < (SELECT max(i2.id) FROM imports i2 WHERE i2.uuid = i.uuid)
      AND NOT EXISTS (SELECT 1 FROM adi_history h WHERE h.import_id = i.id)
    UNION ALL
    SELECT 1, e.id, n.group_name, n.user_name, n.destination_id, n.destination_type,
        e.stage, e.uuid, e.at, n.files, n.file_names, NULLIF(e.description, ''), n.preprocessing_id,
        n.import_options
    FROM (SELECT h.id, h.uuid, h.stage, h.at, h.description,
            lag(h.stage) OVER (PARTITION BY h.uuid ORDER BY h.id) AS prev
          FROM adi_history h) e
    JOIN imports n ON n.uuid = e.uuid AND n.id = (SELECT max(i3.id) FROM imports i3 WHERE i3.uuid = e.uuid)
    WHERE e.prev IS NULL OR e.prev <> e.stage
) l;
