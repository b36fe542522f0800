package agent

import (
	"strings"
	"testing"
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
