package omero

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/internal/omerotest"
	"github.com/omero-adi/omero-adi/internal/testenv"
	"github.com/omero-adi/omero-adi/order"
)

// On a full log_dir the importer could not record the ids of what it imported, so the order would
// see nothing while the images reached OMERO: the import does not start, and says why.
func TestFullLogDirImportsNothing(t *testing.T) {
	logDir := smallTmpfs(t)
	fill(t, logDir)

	f := setup(t, func(c *Config) { c.LogDir = logDir })
	s := f.login(t, "order-full")
	data := files(t, "a.tif")
	_, err := f.c.Import(context.Background(), s, ImportRequest{OrderUUID: "order-full", Target: order.Target{Kind: "Dataset", ID: 151}, Paths: []string{data}})
	if !errors.Is(err, ErrCall) || !strings.Contains(err.Error(), "log_dir cannot take") || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("import on a full log_dir: %v", err)
	}
	st := f.d.State(t)
	if len(st.Imports) != 0 || len(st.Filesets) != 0 {
		t.Errorf("the import ran: %d imports, %d filesets", len(st.Imports), len(st.Filesets))
	}
	// With room again it imports.
	if err := os.Remove(filepath.Join(logDir, "filler")); err != nil {
		t.Fatal(err)
	}
	res, err := f.c.Import(context.Background(), s, ImportRequest{OrderUUID: "order-full", Target: order.Target{Kind: "Dataset", ID: 151}, Paths: []string{data}})
	if err != nil || len(res.Filesets) != 1 {
		t.Fatalf("import with room: %+v, %v", res, err)
	}
}

// When log_dir fills up while an import runs, the importer cannot record the ids of what it
// imported and still exits 0: the order must not read that as "created nothing", since the
// images are in OMERO and a retry would import them twice.
func TestLogDirFullDuringImportSaysImagesMayBeInOMERO(t *testing.T) {
	logDir := smallTmpfs(t)
	f := setup(t, func(c *Config) { c.LogDir = logDir })
	f.d.SetFailure(t, omerotest.Failure{ImportDelay: 2 * time.Second})
	s := f.login(t, "order-filled")
	data := files(t, "a.tif")
	type outcome struct {
		res ImportResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := f.c.Import(context.Background(), s, ImportRequest{OrderUUID: "order-filled", Target: order.Target{Kind: "Dataset", ID: 151}, Paths: []string{data}})
		done <- outcome{res, err}
	}()
	// Fill log_dir once the import has started (its --file log exists), before its fileset ends.
	logs, _ := f.c.LogFiles("order-filled")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(logs); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the import never created its --file log")
		}
		time.Sleep(20 * time.Millisecond)
	}
	fill(t, logDir)
	var o outcome
	select {
	case o = <-done:
	case <-time.After(time.Minute):
		t.Fatal("import did not return")
	}
	st := f.d.State(t)
	if len(st.Filesets) != 1 {
		t.Fatalf("the double holds %d filesets, want the 1 imported while log_dir filled up", len(st.Filesets))
	}
	if o.err == nil {
		if len(o.res.Filesets) != 1 {
			t.Fatalf("import succeeded with %+v, want its fileset", o.res)
		}
		return // the ids were written before the disk filled: nothing was lost
	}
	if errors.Is(o.err, ErrNoImport) || !strings.Contains(o.err.Error(), "may be in OMERO") {
		t.Fatalf("import on a log_dir that filled up: %v, want an error saying the images may be in OMERO", o.err)
	}
	t.Log(o.err)
}

// smallTmpfs mounts a 1 MiB tmpfs for the test's log_dir.
func smallTmpfs(t *testing.T) string {
	t.Helper()
	testenv.Root(t, "mounts a small tmpfs")
	dir := filepath.Join(t.TempDir(), "log")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	return dir
}

// fill writes dir's filesystem full with a file named filler.
func fill(t *testing.T, dir string) {
	t.Helper()
	filler, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = filler.Write(make([]byte, 4<<20)) // stops at ENOSPC
	_ = filler.Close()
}
