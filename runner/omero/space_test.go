package omero

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/omero-adi/omero-adi/internal/testenv"
	"github.com/omero-adi/omero-adi/order"
)

// On a full log_dir the importer could not record the ids of what it imported, so the order would
// see nothing while the images reached OMERO: the import does not start, and says why.
func TestFullLogDirImportsNothing(t *testing.T) {
	testenv.Root(t, "mounts a small tmpfs")
	logDir := filepath.Join(t.TempDir(), "log")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", logDir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", logDir).Run() })
	filler, err := os.Create(filepath.Join(logDir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = filler.Write(make([]byte, 4<<20)) // stops at ENOSPC
	filler.Close()

	f := setup(t, func(c *Config) { c.LogDir = logDir })
	s := f.login(t, "order-full")
	data := files(t, "a.tif")
	_, err = f.c.Import(context.Background(), s, ImportRequest{OrderUUID: "order-full", Target: order.Target{Kind: "Dataset", ID: 151}, Paths: []string{data}})
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
