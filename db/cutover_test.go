package db_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/db"
)

// The Python service (BIOMERO.importer) as these tests play it: its SQLAlchemy create_all tables
// (ingest_tracker.py, IngestionTracking and Preprocessing), its alembic version table, and its rows
// written through a connection of its own (on PostgreSQL not marked as the agent's).

// pythonSchema is what create_all of BIOMERO.importer 1.4 makes, with the alembic stamp; without
// options it is the schema before 92e8f9e637a1 (no import_options column).
func pythonSchema(engine string, options bool, stamp string) string {
	opt := ""
	if options {
		opt = "import_options TEXT, "
	}
	ddl := map[string]string{
		"postgres": `
CREATE TABLE imports_preprocessing (id SERIAL NOT NULL, container VARCHAR NOT NULL, input_file VARCHAR NOT NULL,
  output_folder VARCHAR NOT NULL, alt_output_folder VARCHAR, extra_params JSON, PRIMARY KEY (id));
CREATE TABLE imports (id SERIAL NOT NULL, group_name VARCHAR NOT NULL, user_name VARCHAR NOT NULL,
  destination_id VARCHAR NOT NULL, destination_type VARCHAR NOT NULL, stage VARCHAR NOT NULL, uuid VARCHAR(36) NOT NULL,
  timestamp TIMESTAMP WITH TIME ZONE, files TEXT NOT NULL, file_names TEXT, ` + opt + `description TEXT,
  preprocessing_id INTEGER, PRIMARY KEY (id), FOREIGN KEY(preprocessing_id) REFERENCES imports_preprocessing (id));`,
		"sqlite": `
CREATE TABLE imports_preprocessing (id INTEGER NOT NULL, container VARCHAR NOT NULL, input_file VARCHAR NOT NULL,
  output_folder VARCHAR NOT NULL, alt_output_folder VARCHAR, extra_params JSON, PRIMARY KEY (id));
CREATE TABLE imports (id INTEGER NOT NULL, group_name VARCHAR NOT NULL, user_name VARCHAR NOT NULL,
  destination_id VARCHAR NOT NULL, destination_type VARCHAR NOT NULL, stage VARCHAR NOT NULL, uuid VARCHAR(36) NOT NULL,
  timestamp DATETIME, files TEXT NOT NULL, file_names TEXT, ` + opt + `description TEXT,
  preprocessing_id INTEGER, PRIMARY KEY (id), FOREIGN KEY(preprocessing_id) REFERENCES imports_preprocessing (id));`,
	}[engine]
	ddl += `
CREATE INDEX ix_imports_user_name ON imports (user_name);
CREATE INDEX ix_imports_uuid ON imports (uuid);
CREATE INDEX imports_ix_uuid_timestamp ON imports (uuid, timestamp);
CREATE TABLE alembic_version_omeroadi (version_num VARCHAR(32) NOT NULL,
  CONSTRAINT alembic_version_omeroadi_pkc PRIMARY KEY (version_num));`
	if stamp != "" {
		ddl += `INSERT INTO alembic_version_omeroadi (version_num) VALUES ('` + stamp + `');`
	}
	return ddl
}

// python opens a connection of the Python service (or of psql) to the database at url.
func python(t *testing.T, url string) *sql.DB {
	t.Helper()
	driver, dsn, err := db.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	if driver == db.DriverPostgres {
		driver = "pgx"
	}
	c, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// pyRow is one row the way IngestTracker.db_log_ingestion_event writes it (all model columns;
// import_options is json.dumps(options) or NULL for empty options). at is an SQL expression.
type pyRow struct {
	uuid, stage, at string
	description     any // nil for NULL
	options         any // nil for NULL
}

func pyInsert(t *testing.T, c *sql.DB, rows ...pyRow) {
	t.Helper()
	for _, r := range rows {
		_, err := c.ExecContext(ctx(t), `INSERT INTO imports (group_name, user_name, destination_id, destination_type,
			stage, uuid, timestamp, files, file_names, import_options, description, preprocessing_id)
			VALUES ('Demo', 'alice', '151', 'Dataset', $1, $2, `+r.at+`, '["/data/demo/a.tif"]', '["a.tif"]', $3, $4, NULL)`,
			r.stage, r.uuid, r.options, r.description)
		if err != nil {
			t.Fatalf("Python INSERT %s %s: %v", r.uuid, r.stage, err)
		}
	}
}

// pyNow and pyAgo are the stage times the Python service writes (func.now()), now and d ago.
func pyNow(engine string) string { return pyAgo(engine, 0) }

func pyAgo(engine string, d time.Duration) string {
	if engine == "postgres" {
		return fmt.Sprintf("(now() - interval '%d seconds')", int(d.Seconds()))
	}
	return fmt.Sprintf("datetime('now', '-%d seconds')", int(d.Seconds()))
}

func alembicVersions(t *testing.T, q interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}) []string {
	t.Helper()
	rs, err := q.QueryContext(ctx(t), `SELECT version_num FROM alembic_version_omeroadi ORDER BY version_num`)
	if err != nil {
		t.Fatalf("read alembic_version_omeroadi: %v", err)
	}
	defer rs.Close()
	var out []string
	for rs.Next() {
		var v string
		if err := rs.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

// row is one imports row as stored.
type row struct {
	stage, description string
	at                 string
}

func rowsOf(t *testing.T, s *db.Store, uuid string) []row {
	t.Helper()
	rs, err := s.DB().QueryContext(ctx(t), `SELECT stage, COALESCE(description, ''), CAST(timestamp AS TEXT) FROM imports
		WHERE uuid = $1 ORDER BY id`, uuid)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	var out []row
	for rs.Next() {
		var r row
		if err := rs.Scan(&r.stage, &r.description, &r.at); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func stagesOf(rows []row) string {
	s := make([]string, len(rows))
	for i, r := range rows {
		s[i] = strings.TrimPrefix(r.stage, "Import ")
	}
	return strings.Join(s, ",")
}

// logOf returns the stages of uuid in imports_log, in id order, and checks the ids increase.
func logOf(t *testing.T, s *db.Store, uuid string) string {
	t.Helper()
	rs, err := s.DB().QueryContext(ctx(t), `SELECT id, stage, timestamp, user_name, files FROM imports_log
		WHERE uuid = $1 ORDER BY id`, uuid)
	if err != nil {
		t.Fatalf("read imports_log: %v", err)
	}
	defer rs.Close()
	var stages []string
	for rs.Next() {
		var (
			id          int64
			stage       string
			at          any
			user, files string
		)
		if err := rs.Scan(&id, &stage, &at, &user, &files); err != nil {
			t.Fatal(err)
		}
		if at == nil || user != "alice" || files == "" {
			t.Fatalf("imports_log row %d of %s: timestamp %v, user %q, files %q", id, uuid, at, user, files)
		}
		stages = append(stages, strings.TrimPrefix(stage, "Import "))
	}
	return strings.Join(stages, ",")
}

func historyOf(t *testing.T, s *db.Store, uuid string) []db.Event {
	t.Helper()
	h, err := s.History(ctx(t), uuid)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func eventStages(h []db.Event) string {
	s := make([]string, len(h))
	for i, e := range h {
		s[i] = strings.TrimPrefix(e.Stage, "Import ")
	}
	return strings.Join(s, ",")
}

// TestAlembicStamp: omero-adi and the Python service start on each other's database.
func TestAlembicStamp(t *testing.T) {
	tests := []struct {
		name    string
		schema  func(engine string) string // "" for a fresh database
		want    string
		options bool // import_options existed before
	}{
		{"fresh database", nil, db.AlembicHead, false},
		{"before import_options (78d3d6d84aec)", func(e string) string { return pythonSchema(e, false, "78d3d6d84aec") }, db.AlembicHead, false},
		{"1.4 (92e8f9e637a1)", func(e string) string { return pythonSchema(e, true, "92e8f9e637a1") }, db.AlembicHead, true},
		{"newer revision kept", func(e string) string { return pythonSchema(e, true, "0f1e2d3c4b5a") }, "0f1e2d3c4b5a", true},
		{"empty version table of a failed run", func(e string) string { return pythonSchema(e, false, "") }, db.AlembicHead, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			forEngines(t, func(t *testing.T, url string) {
				engine := map[bool]string{true: "postgres", false: "sqlite"}[strings.HasPrefix(url, "postgres")]
				py := python(t, url)
				if tc.schema != nil {
					if _, err := py.ExecContext(ctx(t), tc.schema(engine)); err != nil {
						t.Fatalf("Python schema: %v", err)
					}
				}
				s := setup(t, url)
				if v := alembicVersions(t, s.DB()); len(v) != 1 || v[0] != tc.want {
					t.Fatalf("alembic_version_omeroadi = %q, want [%s]", v, tc.want)
				}
				if _, err := s.Migrate(ctx(t)); err != nil { // again: nothing changes
					t.Fatal(err)
				}
				if v := alembicVersions(t, s.DB()); len(v) != 1 || v[0] != tc.want {
					t.Fatalf("after a second Migrate alembic_version_omeroadi = %q, want [%s]", v, tc.want)
				}
				// The Python service's startup: alembic finds its head (nothing to upgrade), create_all
				// finds the tables, and its model's INSERT (every column, import_options too) works.
				id := "44444444-4444-4444-8444-444444444444"
				pyInsert(t, py, pyRow{uuid: id, stage: db.StagePending, at: pyNow(engine),
					options: `{"schema": 1, "platePixelSource": "source", "plateLabelName": null}`})
				c := mustClaim(t, s, "w", 10, time.Minute)
				if len(c) != 1 || c[0].UUID != id || c[0].ImportOptions != `{"schema": 1, "platePixelSource": "source", "plateLabelName": null}` {
					t.Fatalf("claim of the Python service's order = %+v", c)
				}
			})
		})
	}
}

// TestRetryOfPythonEraOrder: the documented retry UPDATE on an order with rows Pending, Started,
// Failed changes only the newest row; one run follows; the failure text stays in the history.
func TestRetryOfPythonEraOrder(t *testing.T) {
	forEngines(t, func(t *testing.T, url string) {
		engine := map[bool]string{true: "postgres", false: "sqlite"}[strings.HasPrefix(url, "postgres")]
		py := python(t, url)
		if _, err := py.ExecContext(ctx(t), pythonSchema(engine, true, "92e8f9e637a1")); err != nil {
			t.Fatal(err)
		}
		const id = "55555555-5555-4555-8555-555555555555"
		pyInsert(t, py,
			pyRow{uuid: id, stage: db.StagePending, at: "'2026-11-01 10:00:00'"},
			pyRow{uuid: id, stage: db.StageStarted, at: "'2026-11-01 10:00:05'"},
			pyRow{uuid: id, stage: db.StageFailed, at: "'2026-11-01 10:01:00'", description: "omero import failed: no such file"})
		s := setup(t, url)
		before := rowsOf(t, s, id)

		if _, err := py.ExecContext(ctx(t), `UPDATE imports SET stage = 'Import Pending' WHERE uuid = '`+id+`'`); err != nil {
			t.Fatalf("retry UPDATE: %v", err)
		}
		after := rowsOf(t, s, id)
		if stagesOf(after) != "Pending,Started,Pending" || after[0] != before[0] || after[1] != before[1] {
			t.Fatalf("rows after the retry UPDATE = %+v (before %+v): older rows must stay as they were", after, before)
		}
		c := mustClaim(t, s, "w", 10, time.Minute)
		if len(c) != 1 || c[0].UUID != id {
			t.Fatalf("claim after retry = %+v, want the one order", c)
		}
		if more := mustClaim(t, s, "w2", 10, time.Minute); len(more) != 0 {
			t.Fatalf("a second run of the retried order: %+v", more)
		}
		if err := s.Finish(ctx(t), c[0].Lease(), db.StageCompleted, ""); err != nil {
			t.Fatal(err)
		}
		final := rowsOf(t, s, id)
		if stagesOf(final) != "Pending,Started,Completed" || final[0] != before[0] || final[1] != before[1] {
			t.Fatalf("rows after the run = %+v, want Pending, Started (unchanged), Completed", final)
		}
		h := historyOf(t, s, id)
		if eventStages(h) != "Pending,Started,Failed,Pending,Started,Completed" {
			t.Fatalf("history stages = %s (%+v)", eventStages(h), h)
		}
		if h[2].Description != "omero import failed: no such file" || h[2].At.Format("15:04:05") != "10:01:00" {
			t.Fatalf("the old failure is not in the history: %+v", h[2])
		}
		if got := logOf(t, s, id); got != "Pending,Started,Failed,Pending,Started,Completed" {
			t.Fatalf("imports_log stages = %s", got)
		}
	})
}

// TestLegacyPendingAtFirstMigration: an old pending order is failed, a recent one imported, and
// orders created after the migration are never affected.
func TestLegacyPendingAtFirstMigration(t *testing.T) {
	forEngines(t, func(t *testing.T, url string) {
		engine := map[bool]string{true: "postgres", false: "sqlite"}[strings.HasPrefix(url, "postgres")]
		py := python(t, url)
		if _, err := py.ExecContext(ctx(t), pythonSchema(engine, true, "92e8f9e637a1")); err != nil {
			t.Fatal(err)
		}
		const (
			old     = "66666666-6666-4666-8666-666666666661"
			recent  = "66666666-6666-4666-8666-666666666662"
			dangled = "66666666-6666-4666-8666-666666666663"
		)
		pyInsert(t, py,
			pyRow{uuid: old, stage: db.StagePending, at: pyAgo(engine, 30*24*time.Hour)},
			pyRow{uuid: recent, stage: db.StagePending, at: pyAgo(engine, time.Hour)},
			// finalize_dangling_orders_and_get_last_id appended a Failed copy of an old pending order.
			pyRow{uuid: dangled, stage: db.StagePending, at: pyAgo(engine, 40*24*time.Hour)},
			pyRow{uuid: dangled, stage: db.StageFailed, at: pyAgo(engine, 39*24*time.Hour)})

		s := open(t, url, "test-host")
		rep, err := s.Migrate(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.LegacyFailed) != 1 || rep.LegacyFailed[0].UUID != old || time.Since(rep.LegacyFailed[0].Since) < 29*24*time.Hour {
			t.Fatalf("LegacyFailed = %+v, want only %s", rep.LegacyFailed, old)
		}
		o, err := s.Get(ctx(t), old)
		if err != nil || o.Stage != db.StageFailed || !strings.Contains(o.Description, "legacy_pending_max_age (240h0m0s)") ||
			!strings.Contains(o.Description, "UPDATE imports SET stage = 'Import Pending' WHERE uuid = '"+old+"';") {
			t.Fatalf("old legacy order = %+v, %v", o, err)
		}
		c := mustClaim(t, s, "w", 10, time.Minute)
		if len(c) != 1 || c[0].UUID != recent {
			t.Fatalf("claimed %+v, want only the recent legacy order %s", c, recent)
		}
		// Later migrations change nothing, even for an order that has been pending since.
		pyInsert(t, py, pyRow{uuid: "66666666-6666-4666-8666-666666666664", stage: db.StagePending, at: pyAgo(engine, 30*24*time.Hour)})
		if rep, err := s.Migrate(ctx(t)); err != nil || len(rep.LegacyFailed) != 0 || len(rep.Applied) != 0 {
			t.Fatalf("second Migrate = %+v, %v", rep, err)
		}
		// The retry command of the description works.
		if _, err := py.ExecContext(ctx(t), `UPDATE imports SET stage = 'Import Pending' WHERE uuid = '`+old+`';`); err != nil {
			t.Fatal(err)
		}
		c = mustClaim(t, s, "w", 10, time.Minute)
		if len(c) != 2 {
			t.Fatalf("claimed %d orders after the retry, want the retried one and the one inserted after the migration", len(c))
		}
	})
}

// TestRowsAppendedByAnotherWriter: the Python service appends one row per stage to a database with
// the agent's triggers; each stage is in the history and in imports_log once.
func TestRowsAppendedByAnotherWriter(t *testing.T) {
	forEngines(t, func(t *testing.T, url string) {
		engine := map[bool]string{true: "postgres", false: "sqlite"}[strings.HasPrefix(url, "postgres")]
		s := setup(t, url)
		py := python(t, url)
		const (
			done    = "77777777-7777-4777-8777-777777777771"
			dangled = "77777777-7777-4777-8777-777777777772"
		)
		pyInsert(t, py,
			pyRow{uuid: done, stage: db.StagePending, at: pyNow(engine)},
			pyRow{uuid: done, stage: db.StageStarted, at: pyNow(engine)},
			pyRow{uuid: done, stage: db.StageCompleted, at: pyNow(engine)},
			pyRow{uuid: dangled, stage: db.StagePending, at: pyNow(engine)},
			pyRow{uuid: dangled, stage: db.StageFailed, at: pyNow(engine), description: "dangling order finalized at startup"})
		if c := mustClaim(t, s, "w", 10, time.Minute); len(c) != 0 {
			t.Fatalf("claimed %+v: the newest rows are final", c)
		}
		if h := historyOf(t, s, done); eventStages(h) != "Pending,Started,Completed" {
			t.Fatalf("history of %s = %s (%+v)", done, eventStages(h), h)
		}
		h := historyOf(t, s, dangled)
		if eventStages(h) != "Pending,Failed" || h[1].Description != "dangling order finalized at startup" {
			t.Fatalf("history of %s = %+v", dangled, h)
		}
		if got := logOf(t, s, done); got != "Pending,Started,Completed" {
			t.Fatalf("imports_log of %s = %s", done, got)
		}
		if got := logOf(t, s, dangled); got != "Pending,Failed" {
			t.Fatalf("imports_log of %s = %s", dangled, got)
		}
	})
}

// TestImportsLog: an agent's order that went Pending → Started → Completed is three rows of
// imports_log, in order, with the order's columns; events that change no stage are left out.
func TestImportsLog(t *testing.T) {
	forEngines(t, func(t *testing.T, url string) {
		s := setup(t, url)
		o := mustCreate(t, s, newOrder())
		c := mustClaim(t, s, "w", 1, time.Minute)[0]
		if err := s.AddEvent(ctx(t), o.UUID, db.StageStarted, "annotation failed: no session"); err != nil {
			t.Fatal(err)
		}
		if err := s.Finish(ctx(t), c.Lease(), db.StageCompleted, ""); err != nil {
			t.Fatal(err)
		}
		if got := logOf(t, s, o.UUID); got != "Pending,Started,Completed" {
			t.Fatalf("imports_log = %s", got)
		}
		var pending, started, completed int
		err := s.DB().QueryRowContext(ctx(t), `SELECT
			count(CASE WHEN stage = 'Import Pending' THEN 1 END),
			count(CASE WHEN stage = 'Import Started' THEN 1 END),
			count(CASE WHEN stage = 'Import Completed' THEN 1 END) FROM imports_log WHERE uuid = $1`, o.UUID).
			Scan(&pending, &started, &completed)
		if err != nil || pending != 1 || started != 1 || completed != 1 {
			t.Fatalf("dashboard counts = %d, %d, %d, %v", pending, started, completed, err)
		}
	})
}

// TestImportOptionsColumn: import_options as the 1.4 model writes it is kept intact.
func TestImportOptionsColumn(t *testing.T) {
	forEngines(t, func(t *testing.T, url string) {
		engine := map[bool]string{true: "postgres", false: "sqlite"}[strings.HasPrefix(url, "postgres")]
		s := setup(t, url)
		py := python(t, url)
		values := []any{nil, `{}`, `{"schema": 1, "platePixelSource": "source", "plateLabelName": null}`,
			`{"schema": 2, "registration": {"schema": 1}, "operations": []}`, `{not json`}
		for i, v := range values {
			pyInsert(t, py, pyRow{uuid: fmt.Sprintf("88888888-8888-4888-8888-88888888888%d", i), stage: db.StagePending,
				at: pyNow(engine), options: v})
		}
		for i, v := range values {
			o, err := s.Get(ctx(t), fmt.Sprintf("88888888-8888-4888-8888-88888888888%d", i))
			if err != nil {
				t.Fatal(err)
			}
			want, _ := v.(string)
			if o.ImportOptions != want || o.HasImportOptions != (v != nil) {
				t.Fatalf("order %d: ImportOptions %q (set %v), want %v", i, o.ImportOptions, o.HasImportOptions, v)
			}
		}
	})
}
