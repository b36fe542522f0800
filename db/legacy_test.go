package db_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/db"
)

// oldSchema is what the Python service (SQLAlchemy + alembic) left behind.
var oldSchema = map[string]string{
	"postgres": `
CREATE TABLE imports_preprocessing (id serial PRIMARY KEY, container varchar NOT NULL, input_file varchar NOT NULL,
  output_folder varchar NOT NULL, alt_output_folder varchar, extra_params json);
CREATE TABLE imports (id serial PRIMARY KEY, group_name varchar NOT NULL, user_name varchar NOT NULL,
  destination_id varchar NOT NULL, destination_type varchar NOT NULL, stage varchar NOT NULL, uuid varchar(36) NOT NULL,
  timestamp timestamptz, files text NOT NULL, file_names text, description text,
  preprocessing_id integer REFERENCES imports_preprocessing (id));
CREATE INDEX ix_imports_user_name ON imports (user_name);
CREATE INDEX ix_imports_uuid ON imports (uuid);
CREATE INDEX imports_ix_uuid_timestamp ON imports (uuid, timestamp);
CREATE TABLE alembic_version_omeroadi (version_num varchar(32) NOT NULL PRIMARY KEY);
INSERT INTO alembic_version_omeroadi VALUES ('4a3b2c1d0e9f');`,
	"sqlite": `
CREATE TABLE imports_preprocessing (id INTEGER PRIMARY KEY, container VARCHAR NOT NULL, input_file VARCHAR NOT NULL,
  output_folder VARCHAR NOT NULL, alt_output_folder VARCHAR, extra_params JSON);
CREATE TABLE imports (id INTEGER PRIMARY KEY, group_name VARCHAR NOT NULL, user_name VARCHAR NOT NULL,
  destination_id VARCHAR NOT NULL, destination_type VARCHAR NOT NULL, stage VARCHAR NOT NULL, uuid VARCHAR(36) NOT NULL,
  timestamp DATETIME, files TEXT NOT NULL, file_names TEXT, description TEXT,
  preprocessing_id INTEGER REFERENCES imports_preprocessing (id));
CREATE INDEX ix_imports_user_name ON imports (user_name);
CREATE INDEX ix_imports_uuid ON imports (uuid);
CREATE INDEX imports_ix_uuid_timestamp ON imports (uuid, timestamp);
CREATE TABLE alembic_version_omeroadi (version_num VARCHAR(32) NOT NULL PRIMARY KEY);
INSERT INTO alembic_version_omeroadi VALUES ('4a3b2c1d0e9f');`,
}

const (
	doneUUID   = "11111111-1111-4111-8111-111111111111"
	failedUUID = "22222222-2222-4222-8222-222222222222"
)

// oldRows are multi-row histories, one row per stage, as the Python service wrote them.
const oldRows = `
INSERT INTO imports (group_name, user_name, destination_id, destination_type, stage, uuid, timestamp, files, file_names, description) VALUES
 ('Demo', 'alice', '151', 'Dataset', 'Import Pending',   '` + doneUUID + `', '2024-03-01 10:00:00', '["/data/demo/a.tif"]', '["a.tif"]', NULL),
 ('Demo', 'alice', '151', 'Dataset', 'Import Started',   '` + doneUUID + `', '2024-03-01 10:00:05', '["/data/demo/a.tif"]', '["a.tif"]', NULL),
 ('Demo', 'alice', '151', 'Dataset', 'Import Completed', '` + doneUUID + `', '2024-03-01 10:01:00', '["/data/demo/a.tif"]', '["a.tif"]', NULL),
 ('Demo', 'bob',   '9',   'Screen',  'Import Pending',   '` + failedUUID + `', '2024-03-02 10:00:00', '["/data/demo/b.tif"]', '[]', NULL),
 ('Demo', 'bob',   '9',   'Screen',  'Import Started',   '` + failedUUID + `', '2024-03-02 10:00:05', '["/data/demo/b.tif"]', '[]', NULL),
 ('Demo', 'bob',   '9',   'Screen',  'Import Failed',    '` + failedUUID + `', '2024-03-02 10:01:00', '["/data/demo/b.tif"]', '[]', 'omero import failed');`

func TestPythonEraDatabase(t *testing.T) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			url := e.url(t)
			s := open(t, url, "test-host")
			if _, err := s.DB().ExecContext(ctx(t), oldSchema[e.name]); err != nil {
				t.Fatalf("create old schema: %v", err)
			}
			if _, err := s.DB().ExecContext(ctx(t), oldRows); err != nil {
				t.Fatalf("insert old rows: %v", err)
			}
			for i := 0; i < 2; i++ {
				if _, err := s.Migrate(ctx(t)); err != nil {
					t.Fatalf("Migrate #%d: %v", i+1, err)
				}
			}
			if c := mustClaim(t, s, "w", 10, time.Minute); len(c) != 0 {
				t.Fatalf("claimed %d orders of a finished old database", len(c))
			}
			if n, err := s.Recover(ctx(t), db.RecoverPolicy{}); err != nil || n != 0 {
				t.Fatalf("Recover = %d, %v; old Started rows must not be touched", n, err)
			}
			list, err := s.List(ctx(t), db.Filter{})
			if err != nil || len(list) != 2 || list[0].UUID != failedUUID || list[0].Stage != db.StageFailed ||
				list[1].Stage != db.StageCompleted || list[0].Source != db.SourceSQL {
				t.Fatalf("List = %+v, %v", list, err)
			}
			if list[1].Timestamp.Format("2006-01-02 15:04") != "2024-03-01 10:01" {
				t.Fatalf("old timestamp = %v", list[1].Timestamp)
			}

			// The documented retry sets every row of the uuid to pending: exactly one run follows.
			if _, err := s.DB().ExecContext(ctx(t), `UPDATE imports SET stage = 'Import Pending' WHERE uuid = '`+failedUUID+`';`); err != nil {
				t.Fatalf("retry UPDATE: %v", err)
			}
			claimed := mustClaim(t, s, "w", 10, time.Minute)
			if len(claimed) != 1 || claimed[0].UUID != failedUUID || claimed[0].ID != 6 || claimed[0].Attempt != 1 {
				t.Fatalf("claim after retry = %+v", claimed)
			}
			if more := mustClaim(t, s, "w2", 10, time.Minute); len(more) != 0 {
				t.Fatalf("older rows of the retried uuid were claimed: %+v", more)
			}
			if err := s.Finish(ctx(t), claimed[0].Lease(), db.StageCompleted, ""); err != nil {
				t.Fatalf("Finish: %v", err)
			}
			if more := mustClaim(t, s, "w2", 10, time.Minute); len(more) != 0 {
				t.Fatalf("older rows of the retried uuid were claimed after finish: %+v", more)
			}
			got, err := s.Get(ctx(t), failedUUID)
			if err != nil || got.Stage != db.StageCompleted || got.ID != 6 {
				t.Fatalf("Get = %+v, %v", got, err)
			}
			hist, err := s.History(ctx(t), failedUUID)
			if err != nil || len(hist) < 4 || hist[0].Worker != "legacy" || hist[len(hist)-1].Stage != db.StageCompleted {
				t.Fatalf("History = %+v, %v", hist, err)
			}

			// The agent's defaults work on the migrated old table.
			cols := "group_name, user_name, destination_id, destination_type, stage, files"
			vals := "'Demo', 'carol', '1', 'Dataset', 'Import Pending', '[\"/data/demo/c.tif\"]'"
			if e.name == "sqlite" { // SQLite cannot add a default to an existing column
				cols, vals = cols+", uuid", vals+", '33333333-3333-4333-8333-333333333333'"
			}
			if _, err := s.DB().ExecContext(ctx(t), "INSERT INTO imports ("+cols+") VALUES ("+vals+")"); err != nil {
				t.Fatalf("minimal INSERT into the migrated old table: %v", err)
			}
			c := mustClaim(t, s, "w", 10, time.Minute)
			if len(c) != 1 || c[0].User != "carol" || c[0].Timestamp.IsZero() || len(c[0].UUID) != 36 {
				t.Fatalf("claim of new row on old table = %+v", c)
			}
			// The old stamp predates import_options: the migration brought the schema to the head.
			if v := alembicVersions(t, s.DB()); len(v) != 1 || v[0] != db.AlembicHead {
				t.Fatalf("alembic_version_omeroadi = %q, want [%s]", v, db.AlembicHead)
			}
		})
	}
}

// TestMigrateConcurrently: four migrations at once, from four Stores, on a fresh database.
func TestMigrateConcurrently(t *testing.T) {
	forEngines(t, func(t *testing.T, url string) {
		errs := make(chan error, 4)
		for i := 0; i < 4; i++ {
			s := open(t, url, "m")
			go func() { _, err := s.Migrate(ctx(t)); errs <- err }()
		}
		for i := 0; i < 4; i++ {
			select {
			case err := <-errs:
				if err != nil {
					t.Fatalf("concurrent Migrate: %v", err)
				}
			case <-time.After(time.Minute):
				t.Fatal("concurrent Migrate did not finish")
			}
		}
		s := open(t, url, "m")
		var n int
		files, _ := filepath.Glob(filepath.Join("migrations", s.Driver(), "*.sql"))
		if err := s.DB().QueryRowContext(ctx(t), "SELECT count(*) FROM adi_schema_migrations").Scan(&n); err != nil || n != len(files) {
			t.Fatalf("adi_schema_migrations rows = %d, %v; want %d, one per migration file", n, err, len(files))
		}
		mustCreate(t, s, newOrder())
	})
}
