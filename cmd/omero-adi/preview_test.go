package main

import (
	"os"
	"strings"
	"testing"

	"github.com/omero-adi/omero-adi/internal/pgtest"
)

// orders preview prints the exact login, preprocessing and import commands of any order and
// changes nothing: the order stays pending with the same history, no session folder is made.
func TestOrdersPreview(t *testing.T) {
	for _, eng := range []struct {
		name string
		url  func(testing.TB) string
	}{{"sqlite", pgtest.SQLiteURL}, {"postgres", pgtest.URL}} {
		t.Run(eng.name, func(t *testing.T) {
			f := newFixture(t, eng.url(t))
			file := f.file(t, "demo/alice/a.tif")
			out, errs, code := cli(t, f.env, "--config", f.config, "orders", "create", "--group", "Demo", "--user", "alice",
				"--dataset", "151", file, "--container", "example/conv:1", "--param", "saveoption=single")
			if code != 0 {
				t.Fatalf("create: exit %d: %s", code, errs)
			}
			uuid := strings.TrimSpace(out)
			before, _, _ := cli(t, f.env, "--config", f.config, "orders", "show", uuid, "--json")

			out, errs, code = cli(t, f.env, "--config", f.config, "orders", "preview", uuid)
			if code != 0 {
				t.Fatalf("preview: exit %d: %s%s", code, out, errs)
			}
			// In this order: the order, the login with its stdin, the container, the import.
			at := 0
			for _, want := range []string{
				uuid, "Import Pending", `"alice"`, `"Demo"`,
				"OMERO_PASSWORD=… omero load <<'EOF'\n'login' '--sudo' 'root' '-s' 'localhost' '-p' '4064' '-u' 'alice' '-g' 'Demo'\n'sessions' 'key'\nEOF\n",
				"podman run --rm", "docker.io/example/conv:1", "--inputfile /data/a.tif", "--saveoption single", "--outputfolder /data",
				"\nomero import -s localhost -p 4064 -k SESSION-KEY --transfer=ln_s", "-d 151", "results in the local temp folder}",
			} {
				i := strings.Index(out[at:], want)
				if i < 0 {
					t.Fatalf("preview lacks %q after byte %d:\n%s", want, at, out)
				}
				at += i + len(want)
			}
			if after, _, _ := cli(t, f.env, "--config", f.config, "orders", "show", uuid, "--json"); after != before {
				t.Errorf("preview changed the order:\n%s\nwas\n%s", after, before)
			}
			if _, _, code = cli(t, f.env, "--config", f.config, "orders", "preview", "no-such-uuid"); code != 2 {
				t.Errorf("preview of an unknown uuid: exit %d, want 2", code)
			}
			// An order the runner would refuse says why, after naming it.
			if err := os.Remove(file); err != nil {
				t.Fatal(err)
			}
			out, errs, code = cli(t, f.env, "--config", f.config, "orders", "preview", uuid)
			if code != 1 || !strings.Contains(out, uuid) || !strings.Contains(errs, "preview order "+uuid) {
				t.Errorf("preview of an order whose file is gone: exit %d\n%s%s", code, out, errs)
			}
		})
	}
}
