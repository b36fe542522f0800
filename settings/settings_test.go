package settings

import (
	"errors"
	"strings"
	"testing"
	"time"
)

type inner struct {
	Wait time.Duration `toml:"wait"`
	N    int           `toml:"n"`
}

type top struct {
	Lease  time.Duration            `toml:"lease"`
	Count  int                      `toml:"count"`
	Table  inner                    `toml:"table"`
	Byname map[string]inner         `toml:"byname"`
	List   []inner                  `toml:"list"`
	Raw    map[string]time.Duration `toml:"raw"`
	Hidden time.Duration            `toml:"-"`
	embedded
}

type embedded struct {
	Grace time.Duration `toml:"grace"`
}

func TestDecode(t *testing.T) {
	cases := []struct {
		name, text, want string // want "" decodes
	}{
		{"strings", "lease = \"30s\"\ncount = 30\n[table]\nwait = \"1m\"\nn = 2\n", ""},
		{"top-level number", "lease = 60\n", `lease: write a duration as a string such as "30s", not a number`},
		{"float", "lease = 1.5\n", `last key "lease"`},
		{"embedded number", "grace = 5\n", "grace: write a duration"},
		{"table number", "[table]\nwait = 5\n", "table.wait: write a duration"},
		{"map of tables", "[byname.x]\nwait = 5\n", "byname.x.wait: write a duration"},
		{"array of tables", "[[list]]\nwait = \"1s\"\n[[list]]\nwait = 2\n", "list.wait: write a duration"},
		{"map of durations", "[raw]\na = 3\n", "raw.a: write a duration"},
		{"plain integers stay", "count = 5\n[table]\nn = 5\n", ""},
		{"unknown key", "leese = \"1s\"\n", `unknown key "leese"`},
		{"unknown nested key", "[table]\nwiat = \"1s\"\n", `unknown key "table.wiat"`},
		{"hidden field is no key", "Hidden = \"1s\"\n", `unknown key "Hidden"`},
		{"bad duration", "lease = \"soon\"\n", "soon"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var v top
			err := Decode(c.text, &v)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("Decode: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("Decode = %v, want an error containing %q", err, c.want)
			}
		})
	}
	var v top
	if err := Decode("lease = \"30s\"\ngrace = \"2s\"\n[table]\nwait = \"1m\"\n", &v); err != nil || v.Lease != 30*time.Second || v.Grace != 2*time.Second || v.Table.Wait != time.Minute {
		t.Fatalf("Decode = %+v, %v", v, err)
	}
}

func TestProblems(t *testing.T) {
	var none Problems
	if none.Err() != nil || none.ErrIn("ctx") != nil {
		t.Fatal("no problems must be no error")
	}
	var comp Problems
	comp.Add("port", "must be a port number, got %d", 70000)
	comp.Add("env[1]", "bad")
	var all Problems
	all.Add("max_workers", "must be at least 1, got %d", 0)
	all.Include("omero", comp.Err())
	all.Include("", errors.New("rules[0] (r).include: bad pattern"))
	all.Include("watch", nil)
	all.Positive("lease", time.Second, "60s") // positive: no problem
	all.Positive("lease", 0, "60s")
	err := all.ErrIn("invalid settings")
	want := `invalid settings: max_workers: must be at least 1, got 0; omero.port: must be a port number, got 70000; omero.env[1]: bad; rules[0] (r).include: bad pattern; lease: must be a positive duration such as "60s", got "0s"`
	if err == nil || err.Error() != want {
		t.Fatalf("got  %v\nwant %s", err, want)
	}
	if !errors.Is(err, ErrSettings) || !errors.Is(Errorf("k", "x"), ErrSettings) {
		t.Error("settings errors must match ErrSettings")
	}
	if got := Prefix("preprocessing", Errorf("local.\"img\"", "empty")).Error(); got != `preprocessing.local."img": empty` {
		t.Errorf("Prefix = %q", got)
	}
	if got := Prefix("groups", Errorf("[x]", "bad")).Error(); got != "groups[x]: bad" {
		t.Errorf("Prefix of an index = %q", got)
	}
}
