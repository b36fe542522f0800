package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/internal/pgtest"
)

// retention --dry-run prints the plan and moves nothing; without it the file moves to the holding
// folder.
func TestRetentionCommand(t *testing.T) {
	f := newFixture(t, pgtest.SQLiteURL(t))
	hold := filepath.Join(f.data, "holding")
	text, err := os.ReadFile(f.config)
	if err != nil {
		t.Fatal(err)
	}
	rule := "\n[[rules]]\nname = \"demo\"\ngroup = \"Demo\"\npath = " + quote(filepath.Join(f.data, "demo", "{user}")) +
		"\nusers = [\"alice\"]\ninclude = [\"**/*.tif\"]\ndestination = \"Dataset:151\"\n[rules.retention]\nholding_folder = " + quote(hold) +
		"\nignored_days = 30\n"
	if err := os.WriteFile(f.config, append(text, rule...), 0o644); err != nil {
		t.Fatal(err)
	}
	old := f.file(t, "demo/alice/notes.txt")
	at := time.Now().AddDate(0, 0, -40)
	if err := os.Chtimes(old, at, at); err != nil {
		t.Fatal(err)
	}
	out, errs, code := cli(t, f.env, "--config", f.config, "retention", "--dry-run")
	if code != 0 || !strings.Contains(out, "would move "+old+" -> "+filepath.Join(hold, "demo", "demo", "alice", "notes.txt")) {
		t.Fatalf("retention --dry-run: exit %d, %q, %q", code, out, errs)
	}
	if _, err := os.Stat(old); err != nil {
		t.Fatalf("--dry-run moved the file: %v", err)
	}
	out, errs, code = cli(t, f.env, "--config", f.config, "retention")
	if code != 0 || !strings.Contains(out, "moved "+old) {
		t.Fatalf("retention: exit %d, %q, %q", code, out, errs)
	}
	if _, err := os.Stat(filepath.Join(hold, "demo", "demo", "alice", "notes.txt")); err != nil {
		t.Errorf("not in the holding folder: %v", err)
	}
}
