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

-- A row that becomes pending (inserted, or set back by a person or by Retry) wakes the agents.
CREATE OR REPLACE FUNCTION adi_imports_notify_pending() RETURNS trigger AS $$
BEGIN
    IF NEW.stage = 'Import Pending' AND (TG_OP = 'INSERT' OR OLD.stage IS DISTINCT FROM 'Import Pending') THEN
        PERFORM pg_notify('omero_adi_pending', '');
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS adi_imports_notify_pending ON imports;
CREATE TRIGGER adi_imports_notify_pending AFTER INSERT OR UPDATE OF stage ON imports
    FOR EACH ROW EXECUTE FUNCTION adi_imports_notify_pending();

-- A person's retry (UPDATE imports SET stage = 'Import Pending' ...) works live: the lease of the
-- previous attempt is dropped, and the stage time is set when the statement did not set it.
CREATE OR REPLACE FUNCTION adi_imports_back_to_pending() RETURNS trigger AS $$
BEGIN
    IF NEW.stage = 'Import Pending' AND OLD.stage IS DISTINCT FROM 'Import Pending' THEN
        NEW.lease_owner := NULL;
        NEW.lease_expires := NULL;
        NEW.cancel_requested := false;
    END IF;
    IF NEW.stage IS DISTINCT FROM OLD.stage AND NEW.timestamp IS NOT DISTINCT FROM OLD.timestamp THEN
        NEW.timestamp := now();
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS adi_imports_back_to_pending ON imports;
CREATE TRIGGER adi_imports_back_to_pending BEFORE UPDATE OF stage ON imports
    FOR EACH ROW EXECUTE FUNCTION adi_imports_back_to_pending();

-- Stage changes made by anything but the agent (psql, the web plugin, Metabase) land in the
-- history too; the agent (application_name omero-adi) writes its own rows with worker and reason.
CREATE OR REPLACE FUNCTION adi_imports_history_by_hand() RETURNS trigger AS $$
BEGIN
    IF current_setting('application_name', true) IS DISTINCT FROM 'omero-adi'
       AND (TG_OP = 'INSERT' OR NEW.stage IS DISTINCT FROM OLD.stage) THEN
        INSERT INTO adi_history (uuid, stage, at, worker, description)
        VALUES (NEW.uuid, NEW.stage, now(), 'sql:' || session_user, 'changed outside the agent');
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS adi_imports_history_by_hand ON imports;
CREATE TRIGGER adi_imports_history_by_hand AFTER INSERT OR UPDATE OF stage ON imports
    FOR EACH ROW EXECUTE FUNCTION adi_imports_history_by_hand();
