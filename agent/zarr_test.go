package agent

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/omerotest"
	"github.com/omero-adi/omero-adi/internal/pgtest"
	"github.com/omero-adi/omero-adi/rules"
)

// USE_REGISTER_ZARR (BIOMERO.importer's switch) sets omero.zarr, read strictly: upstream took any
// non-empty value, "false" included, as on.
func TestZarrSettings(t *testing.T) {
	cases := []struct {
		name, file, env string
		want            string // omero.zarr after the environment
		err             string // in the error; "" when valid
	}{
		{name: "default registers", want: "register"},
		{name: "file", file: "import", want: "import"},
		{name: "env true", env: "true", want: "register"},
		{name: "env false imports", file: "refuse", env: "false", want: "import"},
		{name: "env 1", env: "1", want: "register"},
		{name: "env no", env: "No", want: "import"},
		{name: "env bad", env: "off", err: `env USE_REGISTER_ZARR: "off" is none of true, false, 1, 0, yes, no`},
		{name: "file bad", file: "link", err: `omero.zarr: must be register, import or refuse, got "link"`},
		{name: "file empty", file: "-", err: `omero.zarr: must be register, import or refuse, got ""`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := Defaults()
			switch c.file {
			case "":
			case "-":
				cfg.Omero.Zarr = ""
			default:
				cfg.Omero.Zarr = c.file
			}
			err := cfg.applyEnv(func(k string) string {
				if k == "USE_REGISTER_ZARR" {
					return c.env
				}
				return ""
			})
			if err == nil {
				err = cfg.Validate()
			}
			switch {
			case c.err != "":
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
			case err != nil:
				t.Fatal(err)
			case cfg.Omero.Zarr != c.want:
				t.Errorf("omero.zarr = %q, want %q", cfg.Omero.Zarr, c.want)
			}
		})
	}
}

// An OME-Zarr written chunk by chunk into a folder rule's folder settles once: one order naming
// the Zarr's folder (not its chunks), which a dry run registers.
func TestZarrFolderBecomesOneOrder(t *testing.T) {
	cfg, data := testConfig(t, pgtest.SQLiteURL(t))
	in := filepath.Join(data, "demo/zarrs")
	if err := os.MkdirAll(in, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg.Rules = append(cfg.Rules, rules.Rule{
		Name: "zarrs", Group: "Demo", Path: in, User: "alice", Unit: rules.UnitFolder, Include: []string{"*/**"},
		Settle: time.Second, Destination: "Dataset:151", Zarr: "register",
	})
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	store := startAgent(t, cfg, RoleAll)
	zarr := omerotest.WriteZarr(t, filepath.Join(in, "run1.ome.zarr"), omerotest.ZarrImage)
	// The writer adds chunks for a while, each well within the settle period of the last.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < 20; i++ {
		<-tick.C
		for j := 0; j < 10; j++ {
			p := filepath.Join(zarr, "0", strconv.Itoa(i), strconv.Itoa(j))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("chunk"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	o := waitOrders(t, store, 1, 15*time.Second)[0]
	if files, _ := o.FileList(); len(files) != 1 || files[0] != zarr || o.Source != "zarrs" {
		t.Errorf("order from %s of %q, want rule zarrs with [%q]", o.Source, o.Files, zarr)
	}
	deadline := time.Now().Add(10 * time.Second)
	for o.Stage != db.StageCompleted && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		o, _ = store.Get(context.Background(), o.UUID)
	}
	if o.Stage != db.StageCompleted || !strings.Contains(o.Description, "zarr -s localhost") || !strings.Contains(o.Description, "import "+zarr+" --target Dataset:151") {
		t.Errorf("order %s: %q %q, want a dry run of the registration", o.UUID, o.Stage, o.Description)
	}
	time.Sleep(2 * time.Second) // two more settle periods: still one order
	if orders := waitOrders(t, store, 1, time.Second); len(orders) != 1 {
		t.Errorf("%d orders, want 1", len(orders))
	}
}
