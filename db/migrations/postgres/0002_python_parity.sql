-- One database for omero-adi and the Python service (BIOMERO.importer 1.4), both ways.
-- Revision 78d3d6d84aec of the service added imports.description, 92e8f9e637a1 added
-- imports.import_options (TEXT NULL, JSON). The alembic stamp itself is written by Migrate.
ALTER TABLE imports ADD COLUMN IF NOT EXISTS description text NULL;
ALTER TABLE imports ADD COLUMN IF NOT EXISTS import_options text NULL;

-- import_id: the imports row a history row records (a row appended by another writer, or the
-- newest row of an order when the history began), so that the row is listed once.
ALTER TABLE adi_history ADD COLUMN IF NOT EXISTS import_id bigint NULL;
CREATE INDEX IF NOT EXISTS adi_history_import_id ON adi_history (import_id) WHERE import_id IS NOT NULL;

-- Every order's history starts with the state of its newest row: an old failure text stays in the
-- history when a retry overwrites the row.
INSERT INTO adi_history (uuid, stage, at, worker, description, import_id)
SELECT i.uuid, i.stage, COALESCE(i.timestamp, now()), 'legacy', COALESCE(i.description, ''), i.id
FROM imports i
WHERE i.id = (SELECT max(i2.id) FROM imports i2 WHERE i2.uuid = i.uuid)
  AND NOT EXISTS (SELECT 1 FROM adi_history h WHERE h.uuid = i.uuid);

-- Only the newest row of a uuid is the order: a stage change of an older row (the documented
-- retry UPDATE touches every row of the uuid) leaves it as it was. The agent only ever changes
-- newest rows, so its own updates skip this. The name sorts before the other BEFORE trigger.
CREATE OR REPLACE FUNCTION adi_imports_keep_old_rows() RETURNS trigger AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM imports i WHERE i.uuid = OLD.uuid AND i.id > OLD.id) THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS adi_imports_keep_old_rows ON imports;
CREATE TRIGGER adi_imports_keep_old_rows BEFORE UPDATE OF stage ON imports
    FOR EACH ROW WHEN (NEW.stage IS DISTINCT FROM OLD.stage
        AND current_setting('application_name', true) IS DISTINCT FROM 'omero-adi')
    EXECUTE FUNCTION adi_imports_keep_old_rows();

-- A row inserted by another writer (psql, the web plugin, the Python service appending one row
-- per stage) is recorded once, with its own stage time and description.
CREATE OR REPLACE FUNCTION adi_imports_history_insert() RETURNS trigger AS $$
BEGIN
    INSERT INTO adi_history (uuid, stage, at, worker, description, import_id)
    VALUES (NEW.uuid, NEW.stage, COALESCE(NEW.timestamp, now()), 'sql:' || session_user,
        COALESCE(NEW.description, ''), NEW.id);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS adi_imports_history_by_hand_insert ON imports;
CREATE TRIGGER adi_imports_history_by_hand_insert AFTER INSERT ON imports
    FOR EACH ROW WHEN (current_setting('application_name', true) IS DISTINCT FROM 'omero-adi')
    EXECUTE FUNCTION adi_imports_history_insert();

-- imports_log: the layout of the old one-row-per-stage table for dashboards. Rows of imports that
-- no history row records (older rows of Python-era orders), then each stage change of the history
-- with the order's columns; id numbers them in that order.
CREATE OR REPLACE VIEW imports_log AS
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
