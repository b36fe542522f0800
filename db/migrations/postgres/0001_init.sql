-- Tables the ecosystem knows (orders-db.md). Old databases created by the Python service already
-- have them: everything here is IF NOT EXISTS or idempotent.
CREATE TABLE IF NOT EXISTS imports_preprocessing (
    id serial PRIMARY KEY,
    container varchar NOT NULL,
    input_file varchar NOT NULL,
    output_folder varchar NOT NULL,
    alt_output_folder varchar NULL,
    extra_params json NULL
);

CREATE TABLE IF NOT EXISTS imports (
    id serial PRIMARY KEY,
    group_name varchar NOT NULL,
    user_name varchar NOT NULL,
    destination_id varchar NOT NULL,
    destination_type varchar NOT NULL,
    stage varchar NOT NULL,
    uuid varchar(36) NOT NULL DEFAULT gen_random_uuid()::text,
    timestamp timestamptz DEFAULT now(),
    files text NOT NULL,
    file_names text NULL,
    description text NULL,
    preprocessing_id integer NULL REFERENCES imports_preprocessing (id)
);

-- Old databases: give hand-written INSERTs the defaults of the agent's schema.
ALTER TABLE imports ALTER COLUMN uuid SET DEFAULT gen_random_uuid()::text;
ALTER TABLE imports ALTER COLUMN timestamp SET DEFAULT now();

-- The agent's columns, each with a default so that old INSERTs keep working.
ALTER TABLE imports ADD COLUMN IF NOT EXISTS source varchar DEFAULT 'sql';
ALTER TABLE imports ADD COLUMN IF NOT EXISTS attempt integer NOT NULL DEFAULT 0;
ALTER TABLE imports ADD COLUMN IF NOT EXISTS lease_owner varchar NULL;
ALTER TABLE imports ADD COLUMN IF NOT EXISTS lease_expires timestamptz NULL;
ALTER TABLE imports ADD COLUMN IF NOT EXISTS not_before timestamptz NULL;
ALTER TABLE imports ADD COLUMN IF NOT EXISTS cancel_requested boolean NOT NULL DEFAULT false;
ALTER TABLE imports ADD COLUMN IF NOT EXISTS result text NULL;

-- Indexes of the old service, and the agent's: newest row per uuid, the queue, the running orders.
CREATE INDEX IF NOT EXISTS ix_imports_user_name ON imports (user_name);
CREATE INDEX IF NOT EXISTS ix_imports_uuid ON imports (uuid);
CREATE INDEX IF NOT EXISTS imports_ix_uuid_timestamp ON imports (uuid, timestamp);
CREATE INDEX IF NOT EXISTS adi_imports_uuid_id ON imports (uuid, id);
CREATE INDEX IF NOT EXISTS adi_imports_pending ON imports (id) WHERE stage = 'Import Pending';
CREATE INDEX IF NOT EXISTS adi_imports_running ON imports (lease_expires)
    WHERE stage IN ('Import Started', 'Import Preprocessing');

CREATE TABLE IF NOT EXISTS adi_history (
    id bigserial PRIMARY KEY,
    uuid varchar(36) NOT NULL,
    stage varchar NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    worker varchar NOT NULL DEFAULT '',
    description text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS adi_history_uuid ON adi_history (uuid);

CREATE TABLE IF NOT EXISTS adi_watch_items (
    rule varchar NOT NULL,
    path text NOT NULL,
    fingerprint varchar NOT NULL,
    uuid varchar(36) NOT NULL,
    created timestamptz NOT NULL DEFAULT now(),
    UNIQUE (rule, path, fingerprint)
);
CREATE INDEX IF NOT EXISTS adi_watch_items_rule_fingerprint ON adi_watch_items (rule, fingerprint);

-- Triggers use WHEN clauses so that the agent's own updates (claims, heartbeats, finishes) do not
-- call any trigger function at all.

-- A row that becomes pending (inserted, or set back by a person or by Retry) wakes the agents.
CREATE OR REPLACE FUNCTION adi_imports_notify_pending() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('omero_adi_pending', '');
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS adi_imports_notify_pending_insert ON imports;
CREATE TRIGGER adi_imports_notify_pending_insert AFTER INSERT ON imports
    FOR EACH ROW WHEN (NEW.stage = 'Import Pending') EXECUTE FUNCTION adi_imports_notify_pending();
DROP TRIGGER IF EXISTS adi_imports_notify_pending_update ON imports;
CREATE TRIGGER adi_imports_notify_pending_update AFTER UPDATE OF stage ON imports
    FOR EACH ROW WHEN (NEW.stage = 'Import Pending' AND OLD.stage IS DISTINCT FROM 'Import Pending')
    EXECUTE FUNCTION adi_imports_notify_pending();

-- A person's retry (UPDATE imports SET stage = 'Import Pending' ...) works live: the lease of the
-- previous attempt is dropped, and the stage time is set when the statement did not set it.
CREATE OR REPLACE FUNCTION adi_imports_stage_set_by_hand() RETURNS trigger AS $$
BEGIN
    IF NEW.stage = 'Import Pending' THEN
        NEW.lease_owner := NULL;
        NEW.lease_expires := NULL;
        NEW.cancel_requested := false;
    END IF;
    IF NEW.timestamp IS NOT DISTINCT FROM OLD.timestamp THEN
        NEW.timestamp := now();
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS adi_imports_stage_set_by_hand ON imports;
CREATE TRIGGER adi_imports_stage_set_by_hand BEFORE UPDATE OF stage ON imports
    FOR EACH ROW WHEN (NEW.stage IS DISTINCT FROM OLD.stage AND (NEW.timestamp IS NOT DISTINCT FROM OLD.timestamp
        OR (NEW.stage = 'Import Pending' AND NEW.lease_owner IS NOT NULL)))
    EXECUTE FUNCTION adi_imports_stage_set_by_hand();

-- Stage changes made by anything but the agent (psql, the web plugin, Metabase) land in the
-- history too; the agent (application_name omero-adi) writes its own rows with worker and reason.
CREATE OR REPLACE FUNCTION adi_imports_history_by_hand() RETURNS trigger AS $$
BEGIN
    INSERT INTO adi_history (uuid, stage, at, worker, description)
    VALUES (NEW.uuid, NEW.stage, now(), 'sql:' || session_user, 'changed outside the agent');
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS adi_imports_history_by_hand_insert ON imports;
CREATE TRIGGER adi_imports_history_by_hand_insert AFTER INSERT ON imports
    FOR EACH ROW WHEN (current_setting('application_name', true) IS DISTINCT FROM 'omero-adi')
    EXECUTE FUNCTION adi_imports_history_by_hand();
DROP TRIGGER IF EXISTS adi_imports_history_by_hand_update ON imports;
CREATE TRIGGER adi_imports_history_by_hand_update AFTER UPDATE OF stage ON imports
    FOR EACH ROW WHEN (NEW.stage IS DISTINCT FROM OLD.stage
        AND current_setting('application_name', true) IS DISTINCT FROM 'omero-adi')
    EXECUTE FUNCTION adi_imports_history_by_hand();

-- The claim (see Store.Claim): pending newest rows, oldest first, locked with SKIP LOCKED, moved to
-- Import Started under a lease, with a history row each. Bitmap scans are off inside it: right
-- after a bulk insert the statistics still say "few pending rows", and a bitmap scan then sorts
-- every pending row (and every stale index entry of claimed ones) on each claim, where the
-- ordered scan of adi_imports_pending stops after p_max rows.
CREATE OR REPLACE FUNCTION adi_claim(p_worker text, p_max integer, p_lease_us bigint)
RETURNS SETOF imports LANGUAGE plpgsql SET enable_bitmapscan = off AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH c AS (
        SELECT i.id FROM imports i
        WHERE i.stage = 'Import Pending' AND (i.not_before IS NULL OR i.not_before <= now())
          AND i.id = (SELECT max(i2.id) FROM imports i2 WHERE i2.uuid = i.uuid)
        ORDER BY i.id LIMIT p_max FOR UPDATE SKIP LOCKED
    ), u AS (
        UPDATE imports i SET stage = 'Import Started', attempt = i.attempt + 1, lease_owner = p_worker,
            lease_expires = now() + p_lease_us * interval '1 microsecond', cancel_requested = false,
            not_before = NULL, timestamp = now()
        FROM c WHERE i.id = c.id AND i.stage = 'Import Pending'
        RETURNING i.*
    ), h AS (
        INSERT INTO adi_history (uuid, stage, at, worker, description)
        SELECT u.uuid, u.stage, now(), p_worker, 'claimed, attempt ' || u.attempt FROM u
    )
    SELECT u.* FROM u;
END
$$;
