// Package rules holds the drop-folder watch rules: their TOML form, their validation against the
// data root and the groups' allowed roots, matching a path to the rule that claims it, and turning
// a settled unit into an order draft. It touches neither the filesystem (except LoadDir, which reads
// rule files) nor the database.
//
// A rule's path is a template below the data root, e.g. "/data/demo/{user}/dropbox". A placeholder
// is a whole path segment and captures exactly one segment: {user} (needs the allowlist `users`) and
// {group} (only when the rule's group is "{group}", and then needs the allowlist `groups`). A rule
// names its OMERO user either by capturing {user} or with the literal key `user`, never both.
//
// Include and exclude patterns are doublestar patterns relative to the resolved rule folder
// (e.g. "/data/demo/alice/dropbox"); excludes are matched against the file's relative path and each
// of its parent folders, so "tmp" or "**/tmp" exclude whole folders. An empty include means "**".
// With unit = "folder" each direct subfolder of the rule folder is one unit, made of the files below
// it that the patterns select (patterns still count from the rule folder: "*/**/*.tif").
//
// Destinations: "Dataset:ID", "Screen:ID", or "Dataset:name:NAME" / "Screen:name:NAME" (a container
// found or created by name), where NAME may use {dir} (the unit's first folder below the rule folder:
// the folder unit's name, or for a file the first folder of its relative path; a file directly in
// the rule folder gets the rule folder's own name), {user} and {group}.
//
// OME-Zarr: a file-unit rule claims no file inside a folder whose name ends in ".zarr" (its chunks
// would make one order each); with unit = "folder" a Zarr is (or lies in) a unit, and the unit's
// order names the Zarr's folder instead of the files below it. The rule's `zarr` key says what the
// runner does with it.
//
// Hidden names (leading "."; this covers ".processed" and rsync's ".name.XXXXXX"), "*.part",
// "*.tmp" and "~$*" are never part of a unit, at any depth.
package rules

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/settings"
)

// DefaultSettle is the quiet period of a rule that does not set `settle`.
const DefaultSettle = 60 * time.Second

// Unit kinds.
const (
	UnitFile   = "file"
	UnitFolder = "folder"
)

// ErrInvalid is wrapped by every validation error of Compile, Decode and LoadDir.
var ErrInvalid = errors.New("invalid watch rule")

// Rule is one `[[rules]]` table as written in the settings file or a rules.d file.
type Rule struct {
	Name          string               `toml:"name"`
	Group         string               `toml:"group"`  // OMERO group, or "{group}" captured from the path
	Path          string               `toml:"path"`   // folder template below the data root
	Users         []string             `toml:"users"`  // allowlist of a captured {user}
	Groups        []string             `toml:"groups"` // allowlist of a captured {group}
	User          string               `toml:"user"`   // literal OMERO user, when the path captures none
	Include       []string             `toml:"include"`
	Exclude       []string             `toml:"exclude"`
	Unit          string               `toml:"unit"`   // "file" (default) or "folder"
	Settle        time.Duration        `toml:"settle"` // 0: DefaultSettle
	Marker        string               `toml:"marker"` // folder units: a file name whose appearance completes the unit
	Destination   string               `toml:"destination"`
	Description   string               `toml:"description"` // optional text copied into the orders
	Preprocessing *order.Preprocessing `toml:"preprocessing"`
	Retention     *Retention           `toml:"retention"` // nil: nothing of this rule is ever moved
	// Zarr is what the rule's orders do with OME-Zarr folders: "register", "import" or "refuse";
	// "" leaves it to the [omero] zarr setting. The runner reads it by the order's source (the rule name).
	Zarr string `toml:"zarr"`
}

// Retention is a rule's [rules.retention] table: which files of its folder the agent may move,
// after how many days, into HoldingFolder (never deleted; never a file an OMERO link points at;
// see package retention). A count of 0 days turns that kind off; all are off by default.
type Retention struct {
	HoldingFolder string `toml:"holding_folder"` // absolute; outside the rule's folder
	IgnoredDays   int    `toml:"ignored_days"`   // files no rule claims, unchanged this long
	FailedDays    int    `toml:"failed_days"`    // files of the rule's orders that failed this long ago
	OriginalsDays int    `toml:"originals_days"` // originals of preprocessed orders, completed this long ago, whose converted files OMERO links to
}

// Enabled reports whether any kind of move is on.
func (r *Retention) Enabled() bool {
	return r != nil && (r.IgnoredDays > 0 || r.FailedDays > 0 || r.OriginalsDays > 0)
}

// file is the shape of a rules.d file and of Decode's input.
type file struct {
	Rules []Rule `toml:"rules"`
}

// Decode reads `[[rules]]` tables from TOML text. Unknown keys are an error naming the key.
// It does not validate the rules: Compile does.
func Decode(data string) ([]Rule, error) {
	var f file
	if err := settings.Decode(data, &f); err != nil {
		return nil, fmt.Errorf("decode rules: %w: %w", ErrInvalid, err)
	}
	return f.Rules, nil
}

// LoadDir reads every *.toml file of dir (in name order) and returns their rules in that order.
// A missing dir is an error that wraps fs.ErrNotExist, so that callers treating the folder as
// optional can check errors.Is(err, fs.ErrNotExist).
func LoadDir(dir string) ([]Rule, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read rules folder: %w", err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if e.Type().IsRegular() || e.Type()&fs.ModeSymlink != 0 {
			if strings.HasSuffix(e.Name(), ".toml") && !strings.HasPrefix(e.Name(), ".") {
				names = append(names, e.Name())
			}
		}
	}
	sort.Strings(names)
	var all []Rule
	for _, n := range names {
		p := filepath.Join(dir, n)
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read rules file: %w", err)
		}
		rs, err := Decode(string(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		all = append(all, rs...)
	}
	return all, nil
}

// IgnoredName reports whether a file or folder name is never part of a unit: hidden names
// (including ".processed" and rsync's ".name.XXXXXX"), "*.part", "*.tmp" and "~$*".
func IgnoredName(name string) bool {
	if name == "" || name[0] == '.' {
		return true
	}
	if strings.HasPrefix(name, "~$") {
		return true
	}
	return hasSuffixFold(name, ".part") || hasSuffixFold(name, ".tmp")
}

func hasSuffixFold(s, suffix string) bool {
	return len(s) >= len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix)
}
