package order

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/omero-adi/omero-adi/settings"
)

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string // "" valid
	}{
		{"defaults", DefaultConfig(), ""},
		{"group roots inside", Config{BaseDir: "/data", Groups: map[string]GroupConfig{"Demo": {Roots: []string{"/data/demo", "/data"}}}}, ""},
		{"relative base", Config{BaseDir: "data"}, `base_dir: must be an absolute path, got "data"`},
		{"relative root", Config{BaseDir: "/data", Groups: map[string]GroupConfig{"Demo": {Roots: []string{"demo"}}}}, `groups.Demo.roots[0]: must be an absolute path, got "demo"`},
		{"root outside", Config{BaseDir: "/data", Groups: map[string]GroupConfig{"B": {Roots: []string{"/data/b", "/database"}}}}, `groups.B.roots[1]: "/database" is outside base_dir "/data"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.Validate()
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, settings.ErrSettings)):
				t.Fatalf("Validate = %v, want a settings error containing %q", err, c.want)
			}
		})
	}
	r := Config{BaseDir: "/data", Groups: map[string]GroupConfig{"A": {Roots: []string{"/data/a"}}, "Open": {}}}.Roots()
	if want := (Roots{BaseDir: "/data", Groups: map[string][]string{"A": {"/data/a"}}}); !reflect.DeepEqual(r, want) {
		t.Errorf("Roots = %+v, want %+v (a group without roots may use all of base_dir)", r, want)
	}
}
