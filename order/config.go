package order

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"

	"github.com/omero-adi/omero-adi/settings"
)

// Config is the data-root policy of the settings file: the top-level key base_dir and the
// [groups.NAME] tables. Roots turns it into the Roots every order is checked against.
type Config struct {
	// BaseDir is the data root: every file of every order must resolve inside it.
	BaseDir string `toml:"base_dir"`
	// Groups narrows the folders of some groups' orders ([groups.NAME] roots).
	Groups map[string]GroupConfig `toml:"groups"`
}

// GroupConfig is one [groups.NAME] table.
type GroupConfig struct {
	// Roots are the folders (below BaseDir) that the group's orders may name files in.
	Roots []string `toml:"roots"`
}

// DefaultConfig returns the defaults: data below /data, no group narrowed.
func DefaultConfig() Config { return Config{BaseDir: "/data"} }

// Validate checks that base_dir and every group root are absolute, and that each group root
// lies inside base_dir.
func (c Config) Validate() error {
	var p settings.Problems
	if !filepath.IsAbs(c.BaseDir) {
		p.Add("base_dir", "must be an absolute path, got %q", c.BaseDir)
	}
	for _, g := range slices.Sorted(maps.Keys(c.Groups)) {
		for i, r := range c.Groups[g].Roots {
			key := fmt.Sprintf("groups.%s.roots[%d]", g, i)
			switch {
			case !filepath.IsAbs(r):
				p.Add(key, "must be an absolute path, got %q", r)
			case filepath.IsAbs(c.BaseDir) && !Within(filepath.Clean(c.BaseDir), filepath.Clean(r)):
				p.Add(key, "%q is outside base_dir %q", r, c.BaseDir)
			}
		}
	}
	return p.Err()
}

// Roots returns the policy as Roots.
func (c Config) Roots() Roots {
	groups := make(map[string][]string, len(c.Groups))
	for g, gc := range c.Groups {
		if len(gc.Roots) > 0 {
			groups[g] = gc.Roots
		}
	}
	return Roots{BaseDir: c.BaseDir, Groups: groups}
}
