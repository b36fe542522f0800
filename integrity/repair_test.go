package integrity

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/internal/omerotest"
	"github.com/omero-adi/omero-adi/internal/pgtest"
	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/runner/omero"
	"github.com/omero-adi/omero-adi/runner/redirect"
)

// omeroFixture imports through the OMERO double, so that OMERO holds each file's SHA-1.
type omeroFixture struct {
	*fixture
	client *omero.Client
	double *omerotest.Double
}

func setupOMERO(t *testing.T) *omeroFixture {
	t.Helper()
	d := omerotest.New(t)
	base := t.TempDir()
	f := setupIn(t, pgtest.SQLiteURL, filepath.Join(base, "data"), d.ManagedRepo)
	cfg := omero.DefaultConfig()
	cfg.CLI, cfg.Port, cfg.AdminPassword, cfg.Env = d.Bin, d.Port, omerotest.AdminPassword, d.Env()
	cfg.ManagedRepository, cfg.LogDir, cfg.SessionRoot = d.ManagedRepo, filepath.Join(base, "log"), filepath.Join(base, "sessions")
	cfg.CallTimeout, cfg.ConnectRetries, cfg.ConnectBackoff = 20*time.Second, 1, 10*time.Millisecond
	c, err := omero.New(cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	return &omeroFixture{fixture: f, client: c, double: d}
}

// imported imports path (a file or folder) as alice in place and records the order's links.
func (f *omeroFixture) imported(uuid, path string) string {
	f.t.Helper()
	ctx := context.Background()
	s, err := f.client.Login(ctx, uuid, "alice", "Demo")
	if err != nil {
		f.t.Fatal(err)
	}
	defer f.client.Close(ctx, s)
	res, err := f.client.Import(ctx, s, omero.ImportRequest{OrderUUID: uuid, Target: order.Target{Kind: "Dataset", ID: 151}, Paths: []string{path}})
	if err != nil || len(res.Filesets) != 1 {
		f.t.Fatalf("import: %+v, %v", res, err)
	}
	var prefix string
	for _, fs := range f.double.State(f.t).Filesets {
		if fs.ID == res.Filesets[0].ID {
			prefix = fs.TemplatePrefix
		}
	}
	found, err := redirect.Links(f.repo, prefix)
	if err != nil {
		f.t.Fatal(err)
	}
	return f.complete(found, res.Filesets[0].ID)
}

// A same-size overwrite that kept the file's time is found only by its SHA-1; a moved file is
// re-pointed only when OMERO's SHA-1 proves it is the same file; --dry-run changes nothing.
func TestHashAndRepair(t *testing.T) {
	f := setupOMERO(t)
	ctx := context.Background()
	sneaky := f.file("demo/h/h.tif", "original pixels")
	hashed := f.imported("o-hash", sneaky)
	movedFile := f.file("demo/m/m.tif", "pixels that move")
	moved := f.imported("o-move", movedFile)
	forged := f.file("demo/f/f.tif", "pixels forged on")
	fake := f.imported("o-forged", forged)

	fi, _ := os.Stat(sneaky)
	mustDo(t, os.WriteFile(sneaky, []byte("ORIGINAL PIXELS"), 0o644))
	mustDo(t, os.Chtimes(sneaky, fi.ModTime(), fi.ModTime()))
	newHome := filepath.Join(f.data, "demo/archive/m.tif")
	mkdirRename(t, movedFile, newHome)
	mustDo(t, os.Remove(forged))
	impostor := f.file("demo/other/f.tif", "PIXELS FORGED ON") // same name and size, other content

	c := f.checker(Deps{OMERO: f.client})
	if _, got := f.check(c, Options{}); len(got) != 2 {
		t.Fatalf("without hashing: %d broken, want the moved and the forged order: %+v", len(got), got)
	}
	rep, got := f.check(c, Options{Hash: HashAll, MaxCLIStarts: 100})
	if d := got[hashed].Damage; len(d) != 1 || d[0].Kind != Replaced || !strings.Contains(d[0].Detail, "SHA-1") {
		t.Errorf("same-size overwrite with its time kept: %+v, want replaced (SHA-1)", got[hashed])
	}
	if rep.Hashed == 0 || rep.CLIStarts == 0 || rep.CLIStarts > 100 {
		t.Errorf("report %+v: want files hashed with some CLI starts", rep)
	}
	if _, got := f.check(c, Options{Hash: HashAll, MaxCLIStarts: 0}); len(got) != 2 {
		t.Errorf("with no CLI budget: %d broken, want 2 (nothing hashed)", len(got))
	}

	links := func(uuid string) string {
		ls, err := f.store.Links(ctx, uuid)
		if err != nil || len(ls) != 1 {
			t.Fatalf("links of %s: %+v, %v", uuid, ls, err)
		}
		now, err := redirect.ReadLink(ls[0].Path)
		if err != nil {
			t.Fatal(err)
		}
		return now
	}
	rep, _ = f.check(c, Options{Repair: true, DryRun: true, MaxCLIStarts: 100})
	if len(rep.Repairs) != 2 || links(moved) != movedFile {
		t.Fatalf("dry run: repairs %+v, link of the moved order -> %s; want two listed, nothing changed", rep.Repairs, links(moved))
	}
	for _, r := range rep.Repairs {
		if r.Done {
			t.Errorf("dry run did %+v", r)
		}
	}
	rep, got = f.check(c, Options{Repair: true, MaxCLIStarts: 100})
	var done, refused int
	for _, r := range rep.Repairs {
		switch {
		case r.Done && r.UUID == moved && r.To == newHome:
			done++
		case !r.Done && r.UUID == fake && r.To == impostor && strings.Contains(r.Refused, "SHA-1 differs"):
			refused++
		default:
			t.Errorf("unexpected repair %+v", r)
		}
	}
	if done != 1 || refused != 1 {
		t.Fatalf("repairs %+v: want the moved file re-pointed and the impostor refused", rep.Repairs)
	}
	if links(moved) != newHome || links(fake) != forged {
		t.Errorf("links now -> %s and %s; want %s and %s (unchanged)", links(moved), links(fake), newHome, forged)
	}
	if _, ok := got[moved]; ok {
		t.Errorf("repaired order still broken: %+v", got[moved])
	}
	if d := got[fake].Damage; len(d) != 1 || d[0].Kind != Moved || d[0].MovedTo != impostor {
		t.Errorf("forged order: %+v, want still moved (to the impostor, unproven)", got[fake])
	}
	if _, got := f.check(c, Options{}); len(got) != 1 {
		t.Errorf("after the repair a plain check finds %d broken, want only the forged order: %+v", len(got), got)
	}
}

// --all-filesets checks the links of filesets no order of this agent made, within the CLI
// budget, and lists where every server link points.
func TestAllFilesets(t *testing.T) {
	f := setupOMERO(t)
	ctx := context.Background()
	s, err := f.client.Login(ctx, "other-importer", "alice", "Demo")
	if err != nil {
		t.Fatal(err)
	}
	keep, lose := f.file("demo/x/keep.tif", "kept"), f.file("demo/x/lose.tif", "lost")
	if _, err := f.client.Import(ctx, s, omero.ImportRequest{OrderUUID: "other-importer", Target: order.Target{Kind: "Dataset", ID: 151}, Paths: []string{keep, lose}}); err != nil {
		t.Fatal(err)
	}
	f.client.Close(ctx, s)
	c := f.checker(Deps{OMERO: f.client, AdminUser: omerotest.AdminUser})
	targets, complete, err := c.ServerTargets(ctx, 10)
	if err != nil || !complete || len(targets) != 2 || targets[0] != keep || targets[1] != lose {
		t.Fatalf("ServerTargets = %v, %v, %v; want both files", targets, complete, err)
	}
	mustDo(t, os.Remove(lose))
	var got []ServerDamage
	rep, err := c.Check(ctx, Options{AllFilesets: true, MaxCLIStarts: 10, FoundServer: func(d ServerDamage) { got = append(got, d) }}, nil)
	if err != nil || !rep.ServerComplete || rep.ServerFiles != 2 || rep.ServerBroken != 1 || len(got) != 1 || got[0].Kind != Deleted || got[0].Target != lose {
		t.Fatalf("check with --all-filesets: %+v, %v, %+v; want lose.tif deleted", rep, err, got)
	}
	if !strings.Contains(got[0].Line(), "lose.tif deleted") {
		t.Errorf("line %q", got[0].Line())
	}
	rep, err = c.Check(ctx, Options{AllFilesets: true, MaxCLIStarts: 2}, nil)
	if err != nil || rep.ServerComplete || rep.ServerFiles != 0 {
		t.Errorf("with 2 CLI starts: %+v, %v; want nothing read, incomplete", rep, err)
	}
}
