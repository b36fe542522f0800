package db_test

import (
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/omero-adi/omero-adi/db"
)

// TestHandWrittenSQL runs the exact SQL of orders-db.md and checks the store sees it right.
func TestHandWrittenSQL(t *testing.T) {
	forEngines(t, func(t *testing.T, url string) {
		s := setup(t, url)
		notify := s.Notify()
		waitSignal(t, notify, "the listener started") // the start signal; later ones are real
		raw := s.DB()
		plain := uuid.NewString()

		// The minimal order, uuid given.
		if _, err := raw.ExecContext(ctx(t), `INSERT INTO imports (group_name, user_name, destination_id, destination_type, stage, uuid, files)
VALUES ('Demo', 'alice', '151', 'Dataset', 'Import Pending',
        '`+plain+`', '["/data/demo/alice/plate1.tif"]');`); err != nil {
			t.Fatalf("minimal INSERT: %v", err)
		}
		waitSignal(t, notify, "a raw INSERT of a pending order")

		// With preprocessing: RETURNING id, then the imports row using it; uuid left to the default.
		var ppID int64
		if err := raw.QueryRowContext(ctx(t), `INSERT INTO imports_preprocessing (container, input_file, output_folder, alt_output_folder, extra_params)
VALUES ('cellularimagingcf/convertleica-docker:v1.2.0', '{Files}', '/data', '/out', '{"saveoption":"single"}')
RETURNING id;`).Scan(&ppID); err != nil {
			t.Fatalf("preprocessing INSERT: %v", err)
		}
		if _, err := raw.ExecContext(ctx(t), `INSERT INTO imports (group_name, user_name, destination_id, destination_type, stage, files, preprocessing_id)
VALUES ('Demo', 'bob', 'name:plates', 'Screen', 'Import Pending', '["/data/demo/bob/x.lif"]', $1)`, ppID); err != nil {
			t.Fatalf("INSERT with preprocessing_id: %v", err)
		}

		list, err := s.List(ctx(t), db.Filter{})
		if err != nil || len(list) != 2 {
			t.Fatalf("List = %d orders, %v; want 2", len(list), err)
		}
		withPP := list[0] // newest first
		if withPP.User != "bob" || len(withPP.UUID) != 36 || withPP.Source != db.SourceSQL || withPP.Attempt != 0 ||
			withPP.Timestamp.IsZero() || withPP.Preprocessing == nil || withPP.Preprocessing.ID != ppID ||
			withPP.Preprocessing.ExtraParams["saveoption"] != "single" || withPP.Preprocessing.InputFile != "{Files}" {
			t.Fatalf("order with preprocessing = %+v (preprocessing %+v)", withPP, withPP.Preprocessing)
		}
		if _, err := uuid.Parse(withPP.UUID); err != nil {
			t.Fatalf("default uuid %q: %v", withPP.UUID, err)
		}
		got, err := s.Get(ctx(t), plain)
		if err != nil || got.Files != `["/data/demo/alice/plate1.tif"]` || got.Stage != db.StagePending || got.Source != db.SourceSQL {
			t.Fatalf("Get minimal = %+v, %v", got, err)
		}
		if f, err := s.List(ctx(t), db.Filter{User: "alice", Stage: db.StagePending}); err != nil || len(f) != 1 || f[0].UUID != plain {
			t.Fatalf("List(alice, pending) = %v, %v", f, err)
		}

		claimed := mustClaim(t, s, "w", 10, time.Minute)
		if len(claimed) != 2 || claimed[0].UUID != plain || claimed[1].Preprocessing == nil {
			t.Fatalf("claimed %+v", claimed)
		}
		if err := s.Finish(ctx(t), claimed[0].Lease(), db.StageFailed, "broken"); err != nil {
			t.Fatalf("Finish: %v", err)
		}

		// The documented retry, picked up live.
		drain(notify)
		if _, err := raw.ExecContext(ctx(t), `UPDATE imports SET stage = 'Import Pending' WHERE uuid = '`+plain+`';`); err != nil {
			t.Fatalf("retry UPDATE: %v", err)
		}
		waitSignal(t, notify, "the retry UPDATE")
		again := mustClaim(t, s, "w", 10, time.Minute)
		if len(again) != 1 || again[0].UUID != plain || again[0].Attempt != 2 {
			t.Fatalf("claim after retry = %+v", again)
		}
	})
}

// TestRetryUpdateOfRunningOrder: a person's retry of an order that still runs drops the old lease,
// so the old worker is fenced out and the new claim owns it.
func TestRetryUpdateOfRunningOrder(t *testing.T) {
	forEngines(t, func(t *testing.T, url string) {
		s := setup(t, url)
		o := mustCreate(t, s, newOrder())
		first := mustClaim(t, s, "old", 1, time.Hour)[0]
		if _, err := s.DB().ExecContext(ctx(t), `UPDATE imports SET stage = 'Import Pending' WHERE uuid = '`+o.UUID+`'`); err != nil {
			t.Fatalf("retry UPDATE: %v", err)
		}
		got, _ := s.Get(ctx(t), o.UUID)
		if got.LeaseOwner != "" || got.LeaseExpires != nil {
			t.Fatalf("lease not cleared by the retry UPDATE: %+v", got)
		}
		second := mustClaim(t, s, "new", 1, time.Hour)
		if len(second) != 1 || second[0].Attempt != 2 {
			t.Fatalf("claim after retry = %+v", second)
		}
		if _, err := s.Heartbeat(ctx(t), first.Lease(), time.Hour); err == nil {
			t.Fatalf("old worker's heartbeat succeeded")
		}
		if err := s.Finish(ctx(t), second[0].Lease(), db.StageCompleted, ""); err != nil {
			t.Fatalf("Finish: %v", err)
		}
	})
}

// TestStageChangedByHand: a person's UPDATE (not the agent) gets a fresh stage time and, on
// PostgreSQL, a history row naming the database user.
func TestStageChangedByHand(t *testing.T) {
	forEngines(t, func(t *testing.T, url string) {
		s := setup(t, url)
		o := mustCreate(t, s, newOrder())
		c := mustClaim(t, s, "w", 1, time.Minute)[0]
		if err := s.Finish(ctx(t), c.Lease(), db.StageFailed, "boom"); err != nil {
			t.Fatalf("Finish: %v", err)
		}
		// An old stage time, so that a fresh one is recognisable whatever the clock resolution.
		if _, err := s.DB().ExecContext(ctx(t), `UPDATE imports SET timestamp = '2020-01-01 00:00:00.000' WHERE uuid = '`+o.UUID+`'`); err != nil {
			t.Fatal(err)
		}
		failed, _ := s.Get(ctx(t), o.UUID)
		// A separate connection, as psql would be (on PostgreSQL without the agent's application_name).
		driver, dsn, err := db.ParseURL(url)
		if err != nil {
			t.Fatal(err)
		}
		if driver == db.DriverPostgres {
			driver = "pgx"
		}
		person, err := sql.Open(driver, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer person.Close()
		if _, err := person.ExecContext(ctx(t), `UPDATE imports SET stage = 'Import Pending' WHERE uuid = '`+o.UUID+`'`); err != nil {
			t.Fatalf("retry UPDATE: %v", err)
		}
		got, _ := s.Get(ctx(t), o.UUID)
		if got.Stage != db.StagePending || failed.Timestamp.Year() != 2020 || time.Since(got.Timestamp) > time.Minute {
			t.Fatalf("after the UPDATE: stage %q, timestamp %v (was %v)", got.Stage, got.Timestamp, failed.Timestamp)
		}
		if s.Driver() != db.DriverPostgres {
			return
		}
		hist, _ := s.History(ctx(t), o.UUID)
		last := hist[len(hist)-1]
		if last.Stage != db.StagePending || last.Worker != "sql:postgres" {
			t.Fatalf("last event = %+v, want the hand-made change by sql:postgres", last)
		}
	})
}

func TestOpenErrorsHidePassword(t *testing.T) {
	tests := []struct{ name, url, errHas string }{
		{"bad scheme", "mysql://adi:hunter2@db/adi", "unsupported scheme"},
		{"unreachable server", "postgres://adi:hunter2@127.0.0.1:1/adi?connect_timeout=2", "connect to database postgres://adi:***@127.0.0.1:1/adi"},
		{"sqlite directory missing", "sqlite:////nonexistent-dir/sub/adi.db", "sqlite:////nonexistent-dir/sub/adi.db"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := db.Open(ctx(t), tc.url, db.Options{Logger: testLogger()})
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) succeeded", tc.url)
			}
			if !strings.Contains(err.Error(), tc.errHas) || strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("Open error %q: want it to contain %q and no password", err, tc.errHas)
			}
		})
	}
}
