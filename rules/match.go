package rules

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/bmatcuk/doublestar/v4"

	"github.com/omero-adi/omero-adi/order"
)

// Match says which rule claims a path and which unit the path belongs to.
type Match struct {
	Rule     *Compiled
	UnitPath string            // the file itself (unit = "file"), or the folder unit's path
	Folder   string            // the resolved rule folder (placeholders filled in)
	Vars     map[string]string // "user", "group", "dir"
	Marker   bool              // the path is the marker file of a folder unit (not a file of the unit)
}

// Match finds the rule that claims path (an absolute, clean path of a file; for a folder rule, a
// path one level below the rule folder names the folder unit itself). When no rule claims it, the
// string says why, for `rules test` and debug logs. Denied reports whether the reason is a captured
// {user} or {group} outside the allowlist; see MatchDenied.
func (s *Set) Match(path string) (Match, bool, string) {
	m, ok, why, _ := s.MatchDenied(path)
	return m, ok, why
}

// MatchDenied is Match that also reports whether the path was refused because it names a user or
// group outside a rule's allowlist (the watcher warns about those).
func (s *Set) MatchDenied(path string) (Match, bool, string, bool) {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return Match{}, false, fmt.Sprintf("%q is not an absolute clean path", path), false
	}
	var best miss
	for _, c := range s.rules {
		m, ok, ms := c.match(path)
		if ok {
			return m, true, "", false
		}
		best = best.better(ms)
	}
	why, denied := best.why, best.denied
	if why == "" {
		why = "no rule"
	}
	return Match{}, false, why, denied
}

// miss says why a rule does not claim a path. score is how deep into the rule's path template the
// path got, so that the reason of the rule that came closest is reported.
type miss struct {
	why    string
	denied bool // an allowlist refused a captured user or group
	score  int
}

func (m miss) better(o miss) miss {
	if o.why != "" && (m.why == "" || o.score > m.score) {
		return o
	}
	return m
}

// match tries one rule.
func (c *Compiled) match(path string) (Match, bool, miss) {
	if !order.Within(c.static, path) {
		return Match{}, false, miss{why: fmt.Sprintf("not below %s (rule %s)", c.static, c.Name)}
	}
	rest := strings.Split(strings.TrimPrefix(path[len(c.static):], "/"), "/")
	if path == c.static {
		rest = nil
	}
	tmpl := c.segs[c.nStatic:]
	vars, ms := c.bind(tmpl, rest)
	if ms.why != "" {
		return Match{}, false, ms
	}
	if len(rest) <= len(tmpl) {
		return Match{}, false, miss{why: fmt.Sprintf("not below the folder %s of rule %s", c.Path, c.Name), score: len(c.segs)}
	}
	reached := len(c.segs) + 1
	rel := rest[len(tmpl):]
	folder := path[:len(path)-len(strings.Join(rel, "/"))-1]
	for _, r := range rel {
		if IgnoredName(r) {
			return Match{}, false, miss{why: fmt.Sprintf("ignored name %q (hidden, temporary or .processed)", r), score: reached}
		}
	}
	relPath := strings.Join(rel, "/")
	m := Match{Rule: c, Folder: folder, Vars: vars}
	if c.Unit == UnitFolder {
		m.UnitPath = folder + "/" + rel[0]
		vars[varDir] = rel[0]
		if c.excludedDirs(rel[:1]) {
			return Match{}, false, miss{why: fmt.Sprintf("%q is excluded by rule %s", rel[0], c.Name), score: reached}
		}
		if len(rel) == 1 {
			return m, true, miss{}
		}
		if len(rel) == 2 && c.Marker != "" && rel[1] == c.Marker {
			m.Marker = true
			return m, true, miss{}
		}
	} else {
		// A Zarr's chunks are written over minutes: one order per chunk would be thousands.
		for i, r := range rel[:len(rel)-1] {
			if order.IsZarrName(r) {
				return Match{}, false, miss{why: fmt.Sprintf("inside the OME-Zarr %q: rule %s has file units; a Zarr is one unit with unit = \"folder\"",
					strings.Join(rel[:i+1], "/"), c.Name), score: reached}
			}
		}
		m.UnitPath = path
		if len(rel) > 1 {
			vars[varDir] = rel[0]
		} else {
			vars[varDir] = filepath.Base(folder)
		}
	}
	if c.excludedDirs(rel) {
		return Match{}, false, miss{why: fmt.Sprintf("%q is excluded by rule %s", relPath, c.Name), score: reached}
	}
	if !c.included(relPath) {
		return Match{}, false, miss{why: fmt.Sprintf("%q matches no include pattern of rule %s", relPath, c.Name), score: reached}
	}
	return m, true, miss{}
}

// bind matches the template segments below the static prefix (rest may be shorter) and fills
// user and group.
func (c *Compiled) bind(tmpl []seg, rest []string) (map[string]string, miss) {
	vars := map[string]string{}
	if c.User != "" {
		vars[varUser] = c.User
	}
	if c.Group != "{group}" {
		vars[varGroup] = c.Group
	}
	for i, t := range tmpl {
		if i >= len(rest) {
			break
		}
		v := rest[i]
		score := c.nStatic + i
		switch t.ph {
		case "":
			if v != t.lit {
				return nil, miss{why: fmt.Sprintf("not below the folder %s of rule %s", c.Path, c.Name), score: score}
			}
		case varUser:
			if !c.users[v] {
				return nil, miss{why: fmt.Sprintf("user %q is not in the users of rule %s", v, c.Name), denied: true, score: score}
			}
			vars[varUser] = v
		case varGroup:
			if !c.groups[v] {
				return nil, miss{why: fmt.Sprintf("group %q is not in the groups of rule %s", v, c.Name), denied: true, score: score}
			}
			vars[varGroup] = v
		}
	}
	return vars, miss{}
}

// excludedDirs reports whether the relative path rel (or one of its parents) is excluded.
func (c *Compiled) excludedDirs(rel []string) bool {
	if len(c.Exclude) == 0 {
		return false
	}
	p := ""
	for i, r := range rel {
		if i == 0 {
			p = r
		} else {
			p += "/" + r
		}
		for _, e := range c.Exclude {
			if doublestar.MatchUnvalidated(e, p) {
				return true
			}
		}
	}
	return false
}

func (c *Compiled) included(rel string) bool {
	for _, in := range c.Include {
		if doublestar.MatchUnvalidated(in, rel) {
			return true
		}
	}
	return false
}

// DirRole says what the watcher does with a directory.
type DirRole struct {
	Descend bool   // watch it and list its children: it lies on the way to, or inside, a file rule's folder
	Unit    *Match // it is a folder unit: observe it by walking, do not descend with watches
	Denied  bool   // refused because it names a user or group outside an allowlist
	Why     string // when neither Descend nor Unit: why it is ignored
}

// Dir classifies a directory (absolute, clean) for the watcher.
func (s *Set) Dir(path string) DirRole {
	var role DirRole
	var best miss
	for _, c := range s.rules {
		descend, unit, ms := c.dir(path)
		if descend {
			role.Descend = true
		}
		if unit != nil && role.Unit == nil {
			role.Unit = unit
		}
		best = best.better(ms)
	}
	if !role.Descend && role.Unit == nil {
		role.Why, role.Denied = best.why, best.denied
		if role.Why == "" {
			role.Why = "no rule"
		}
	}
	return role
}

func (c *Compiled) dir(path string) (bool, *Match, miss) {
	if order.Within(path, c.static) {
		return true, nil, miss{} // on the way to the rule folder
	}
	if !order.Within(c.static, path) {
		return false, nil, miss{}
	}
	rest := strings.Split(strings.TrimPrefix(path[len(c.static):], "/"), "/")
	tmpl := c.segs[c.nStatic:]
	if _, ms := c.bind(tmpl, rest); ms.why != "" {
		return false, nil, ms
	}
	if len(rest) <= len(tmpl) {
		return true, nil, miss{}
	}
	reached := len(c.segs) + 1
	rel := rest[len(tmpl):]
	for _, r := range rel {
		if IgnoredName(r) {
			return false, nil, miss{why: fmt.Sprintf("ignored name %q", r), score: reached}
		}
	}
	if c.excludedDirs(rel) {
		return false, nil, miss{why: fmt.Sprintf("%q is excluded by rule %s", strings.Join(rel, "/"), c.Name), score: reached}
	}
	if c.Unit == UnitFile {
		return true, nil, miss{}
	}
	if len(rel) == 1 {
		m, ok, ms := c.match(path)
		if !ok {
			return false, nil, ms
		}
		return false, &m, miss{}
	}
	return false, nil, miss{why: "inside a folder unit", score: reached}
}

// Selects reports whether a file at rel (relative to the resolved rule folder, "/"-separated) is
// part of a unit of this rule by name: no ignored name on the way, not excluded (itself or a
// parent folder), included. The watcher uses it while walking a folder unit.
func (c *Compiled) Selects(rel string) bool {
	if rel == "" || strings.HasPrefix(rel, "/") {
		return false
	}
	parts := strings.Split(rel, "/")
	for _, p := range parts {
		if IgnoredName(p) || p == ".." {
			return false
		}
	}
	return !c.excludedDirs(parts) && c.included(rel)
}
