package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/pgtest"
	"github.com/omero-adi/omero-adi/rules"
)

// One destination gets one verdict: a watch rule (`config check`), `orders create` and a row
// written by hand in SQL and run by the runner accept and reject the same destinations. The
// double holds Datasets 151 and 152 and Screen 201; a name target is found or created.
func TestDestinationOneVerdict(t *testing.T) {
	cases := []struct {
		dest string
		ok   bool
	}{
		{"Dataset:151", true},
		{"Dataset:name:x", true},
		{"Screen:201", true},
		{"Screen:name:x", true},
		{"screen:201", true},
		{"Dataset:name:plates 2024", true},
		{"Project:1", false},
		{"Dataset:0", false},
		{"Dataset:-1", false},
		{"Dataset:+5", false},
		{"Dataset:1.5", false},
		{"Dataset:abc", false},
		{"Dataset:name:", false},
		{"Screen:name: ", false},
		{"Dataset:99999999999999999999", false},
	}
	w := newWorld(t, pgtest.SQLiteURL(t))
	settings := w.settings("verdict", "")
	env := map[string]string{"INGEST_TRACKING_DB_URL": w.url, "OMERO_PASSWORD": "omero"}
	for _, kv := range w.double.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	file := filepath.Join(w.data, "a.tif")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	rows := make([]string, len(cases))
	for i, c := range cases {
		kind, id, _ := strings.Cut(c.dest, ":")

		// a watch rule
		_, err := rules.Compile([]rules.Rule{{Name: "r", Group: "Demo", Path: "/data/demo/in", User: "alice",
			Destination: c.dest}}, "/data", nil)
		if (err == nil) != c.ok {
			t.Errorf("%s: rule: %v, want ok=%v", c.dest, err, c.ok)
		}
		if err != nil && !strings.Contains(err.Error(), ".destination:") {
			t.Errorf("%s: rule error %v does not name the destination", c.dest, err)
		}

		// orders create (there is no flag for a kind that is neither Dataset nor Screen)
		_, errs, code := cli(t, env, "--config", settings, "orders", "create", "--group", "Demo", "--user", "alice",
			"--"+strings.ToLower(kind), id, file)
		if (code == 0) != c.ok {
			t.Errorf("%s: orders create: exit %d (%s), want ok=%v", c.dest, code, errs, c.ok)
		}
		if code != 0 && code != 2 {
			t.Errorf("%s: orders create: exit %d, want 2 for bad input", c.dest, code)
		}

		// a row written by hand
		rows[i] = uuid.NewString()
		_, err = w.store.DB().Exec(w.store.DB().Rebind(`INSERT INTO imports (group_name, user_name, destination_id,
			destination_type, stage, uuid, files) VALUES ('Demo', 'alice', ?, ?, 'Import Pending', ?, ?)`),
			id, kind, rows[i], `["`+file+`"]`)
		if err != nil {
			t.Fatal(err)
		}
	}

	// The runner drains every order: the rows and the orders that orders create wrote.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	var out bytes.Buffer
	go func() {
		defer wg.Done()
		_ = run(ctx, []string{"--config", settings, "run", "--role", "runner"}, &out, &out, func(k string) string { return env[k] })
	}()
	defer func() { cancel(); wg.Wait() }()
	final := w.waitStages(rows, time.Minute, db.StageCompleted, db.StageFailed)
	for i, c := range cases {
		o := final[rows[i]]
		if (o.Stage == db.StageCompleted) != c.ok {
			t.Errorf("%s: SQL row ended %s (%s), want ok=%v", c.dest, o.Stage, o.Description, c.ok)
		}
		if !c.ok && !strings.Contains(o.Description, "destination_") {
			t.Errorf("%s: description %q does not name the destination column", c.dest, o.Description)
		}
	}
	list, err := w.store.List(context.Background(), db.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var created []string
	for _, o := range list {
		if o.Source == db.SourceCLI {
			created = append(created, o.UUID)
		}
	}
	for _, o := range w.waitStages(created, time.Minute, db.StageCompleted, db.StageFailed) {
		if o.Stage != db.StageCompleted {
			t.Errorf("order %s (%s:%s) from orders create ended %s: %s", o.UUID, o.DestinationType, o.DestinationID, o.Stage, o.Description)
		}
	}
}
