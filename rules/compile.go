package rules

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/bmatcuk/doublestar/v4"

	"github.com/omero-adi/omero-adi/order"
)

// Placeholder names.
const (
	varUser  = "user"
	varGroup = "group"
	varDir   = "dir"
)

// RuleError is one validation problem: it names the rule (index and name) and the key.
type RuleError struct {
	Index int
	Name  string
	Key   string
	Msg   string
}

func (e *RuleError) Error() string {
	if e.Name == "" {
		return fmt.Sprintf("rules[%d].%s: %s", e.Index, e.Key, e.Msg)
	}
	return fmt.Sprintf("rules[%d] (%s).%s: %s", e.Index, e.Name, e.Key, e.Msg)
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *RuleError) Unwrap() error { return ErrInvalid }

// seg is one segment of a rule path template: a literal or a placeholder.
type seg struct {
	lit string // literal segment; "" for a placeholder
	ph  string // "user" or "group"
}

// Compiled is a validated rule with its parsed parts. The embedded Rule has its defaults filled in
// (Unit, Settle, Include, Preprocessing.InputFile).
type Compiled struct {
	Rule
	Index int

	segs    []seg  // path template below "/"
	nStatic int    // number of leading literal segments
	static  string // the static prefix (the folder to watch)
	users   map[string]bool
	groups  map[string]bool
	dest    order.Target // a name target's Name may hold placeholders, filled by Draft
}

// Root is a folder the watcher walks: the static prefix of one or more rule paths (the part
// before the first placeholder), with every rule whose prefix lies at or below it.
type Root struct {
	Path  string
	Rules []*Compiled
}

// Set is a validated, non-overlapping list of rules. It is immutable and safe for concurrent use.
type Set struct {
	rules []*Compiled
	roots []Root
}

// Rules returns the compiled rules in declaration order.
func (s *Set) Rules() []*Compiled { return s.rules }

// Roots returns the folders to watch; no root lies inside another.
func (s *Set) Roots() []Root { return s.roots }

// ZarrModes maps the name of every rule that sets `zarr` to its mode; the runner looks an order's
// source up in it.
func (s *Set) ZarrModes() map[string]order.ZarrMode {
	out := map[string]order.ZarrMode{}
	for _, c := range s.rules {
		if c.Zarr != "" {
			out[c.Name], _ = order.ParseZarrMode(c.Zarr)
		}
	}
	return out
}

// Compile validates every rule against the data root and the groups' allowed roots (group -> roots;
// a group without an entry is not restricted) and returns the set. All problems are reported,
// joined; each is a *RuleError naming the rule and the key and wraps ErrInvalid.
//
// Overlap policy (conservative): two rules whose path templates can name the same folder, or one of
// whose folders can lie inside the other's, are rejected unless one provably cannot claim the other's
// files: the outer rule excludes the inner folder as a whole (an exclude "<rel>/**" or "<rel>", where
// "*" may stand for a placeholder), or it excludes every include pattern of the other rule verbatim
// (relative to its own folder), or all of the outer rule's includes have a fixed depth that cannot
// reach into the inner folder (no "**", no "{...}": "*.tif" only matches direct children).
func Compile(rules []Rule, dataRoot string, groupRoots map[string][]string) (*Set, error) {
	var errs []error
	if dataRoot == "" || !filepath.IsAbs(dataRoot) {
		return nil, fmt.Errorf("compile rules: %w: data root %q is not an absolute path", ErrInvalid, dataRoot)
	}
	dataRoot = filepath.Clean(dataRoot)
	s := &Set{}
	seen := map[string]int{}
	for i, r := range rules {
		c, rerrs := compileOne(i, r, dataRoot, groupRoots)
		errs = append(errs, rerrs...)
		if r.Name != "" {
			if j, dup := seen[r.Name]; dup {
				errs = append(errs, &RuleError{i, r.Name, "name", fmt.Sprintf("duplicate of rules[%d]", j)})
			} else {
				seen[r.Name] = i
			}
		}
		if c != nil && len(rerrs) == 0 {
			s.rules = append(s.rules, c)
		}
	}
	for a := 0; a < len(s.rules); a++ {
		for b := a + 1; b < len(s.rules); b++ {
			if err := overlap(s.rules[a], s.rules[b]); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	s.roots = buildRoots(s.rules)
	return s, nil
}

// compileOne checks rule r (rules[i]) against the data root and the groups' roots and compiles
// it, one step per part of the rule; it returns every problem found.
func compileOne(i int, r Rule, dataRoot string, groupRoots map[string][]string) (*Compiled, []error) {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &RuleError{i, r.Name, key, fmt.Sprintf(format, args...)})
	}
	c := &Compiled{Rule: r, Index: i}
	checkName(r, bad)
	hasUser, hasGroup := c.compilePath(r, dataRoot, bad)
	c.compileGroup(r, hasGroup, bad)
	c.compileUser(r, hasUser, bad)
	c.compilePatterns(r, bad)
	c.compileUnit(r, bad)
	if msg := c.parseDestination(); msg != "" {
		bad("destination", "%s", msg)
	}
	checkZarr(r, bad)
	c.compilePreprocessing(r, bad)
	c.checkGroupRoots(r, groupRoots, bad)
	c.compileRetention(r, bad)
	return c, errs
}

// compileRetention checks the rule's retention table: whole days, and a clean absolute holding
// folder outside the rule's folder (moved files must not come back as new drops).
func (c *Compiled) compileRetention(r Rule, bad complain) {
	rt := r.Retention
	if rt == nil {
		return
	}
	c.Retention = &Retention{}
	*c.Retention = *rt
	for _, d := range []struct {
		key string
		n   int
	}{{"retention.ignored_days", rt.IgnoredDays}, {"retention.failed_days", rt.FailedDays}, {"retention.originals_days", rt.OriginalsDays}} {
		if d.n < 0 {
			bad(d.key, "must be 0 (off) or a number of days, got %d", d.n)
		}
	}
	h := rt.HoldingFolder
	switch {
	case !rt.Enabled():
	case h == "":
		bad("retention.holding_folder", "required when retention moves anything: the folder files are moved to")
	case !filepath.IsAbs(h) || filepath.Clean(h) != h || h == "/":
		bad("retention.holding_folder", "%q is not a clean absolute path below /", h)
	case c.static != "" && order.Within(c.static, h):
		bad("retention.holding_folder", "%q is inside the rule's folder %q: moved files would come back as drops", h, c.static)
	}
}

// Folder is the rule's watched folder: its path up to the first placeholder.
func (c *Compiled) Folder() string { return c.static }

// complain records one problem of a rule: the key and what is wrong with it.
type complain func(key, format string, args ...any)

// checkName checks that the rule has a name fit for logs and order descriptions.
func checkName(r Rule, bad complain) {
	if r.Name == "" {
		bad("name", "required")
	} else if strings.TrimSpace(r.Name) != r.Name || strings.ContainsAny(r.Name, "/\x00\n") {
		bad("name", "bad name %q (no slashes, newlines or surrounding spaces)", r.Name)
	}
}

// compilePath checks the path template (absolute, clean, inside the data root, placeholders
// {user} and {group} as whole segments, each at most once, none standing for the data root or
// above) and splits it into c's segments and static prefix. It reports which placeholders the
// path captures.
func (c *Compiled) compilePath(r Rule, dataRoot string, bad complain) (hasUser, hasGroup bool) {
	switch {
	case r.Path == "":
		bad("path", "required")
	case !filepath.IsAbs(r.Path):
		bad("path", "%q is not an absolute path", r.Path)
	case filepath.Clean(r.Path) != r.Path || strings.Contains(r.Path, "/../") || strings.HasSuffix(r.Path, "/.."):
		bad("path", "%q is not a clean path (no \"..\", \".\", double or trailing slashes)", r.Path)
	case !order.Within(dataRoot, r.Path):
		bad("path", "%q is outside the data root %q", r.Path, dataRoot)
	default:
		for _, p := range strings.Split(r.Path[1:], "/") {
			switch {
			case p == "{user}" || p == "{group}":
				ph := p[1 : len(p)-1]
				if (ph == varUser && hasUser) || (ph == varGroup && hasGroup) {
					bad("path", "%q uses %s twice", r.Path, p)
				}
				if ph == varUser {
					hasUser = true
				} else {
					hasGroup = true
				}
				c.segs = append(c.segs, seg{ph: ph})
			case strings.ContainsAny(p, "{}"):
				bad("path", "%q: placeholder %q must be {user} or {group} and a whole path segment", r.Path, p)
			default:
				c.segs = append(c.segs, seg{lit: p})
			}
		}
		for c.nStatic < len(c.segs) && c.segs[c.nStatic].ph == "" {
			c.nStatic++
		}
		c.static = "/" + joinLits(c.segs[:c.nStatic])
		if c.nStatic < len(c.segs) && !order.Within(dataRoot, c.static) {
			bad("path", "%q: a placeholder may not stand for a folder of the data root %q itself or above", r.Path, dataRoot)
		}
	}
	return hasUser, hasGroup
}

// compileGroup checks the group (a literal OMERO group, or "{group}" captured from the path with
// the allowed groups listed) and collects the allowed groups.
func (c *Compiled) compileGroup(r Rule, hasGroup bool, bad complain) {
	switch {
	case r.Group == "":
		bad("group", "required")
	case r.Group == "{group}":
		if !hasGroup && r.Path != "" {
			bad("group", "\"{group}\" needs {group} in path %q", r.Path)
		}
		if len(r.Groups) == 0 {
			bad("groups", "required when the group is captured from the path (a folder name must never become a group by itself)")
		}
	case strings.ContainsAny(r.Group, "{}"):
		bad("group", "bad group %q (a literal OMERO group or \"{group}\")", r.Group)
	default:
		if hasGroup {
			bad("path", "%q captures {group} but group is %q, not \"{group}\"", r.Path, r.Group)
		}
		if len(r.Groups) > 0 {
			bad("groups", "only used with group = \"{group}\"")
		}
	}
	c.groups = map[string]bool{}
	for _, g := range r.Groups {
		if !validSegment(g) {
			bad("groups", "bad group name %q", g)
		}
		c.groups[g] = true
	}
}

// compileUser checks the user (a literal OMERO user, or captured from the path as {user} with
// the allowed users listed) and collects the allowed users.
func (c *Compiled) compileUser(r Rule, hasUser bool, bad complain) {
	switch {
	case hasUser && r.User != "":
		bad("user", "%q set, but path %q also captures {user}: use one of the two", r.User, r.Path)
	case !hasUser && r.User == "" && r.Path != "":
		bad("user", "required: capture {user} in path or set user")
	case r.User != "" && (!validSegment(r.User) || strings.ContainsAny(r.User, "{}")):
		bad("user", "bad user name %q", r.User)
	}
	if hasUser && len(r.Users) == 0 {
		bad("users", "required when {user} is captured from the path (a folder name must never become a user by itself)")
	}
	if !hasUser && len(r.Users) > 0 && r.Path != "" {
		bad("users", "only used when path captures {user}")
	}
	c.users = map[string]bool{}
	for _, u := range r.Users {
		if !validSegment(u) || u == "*" {
			bad("users", "bad user name %q", u)
		}
		c.users[u] = true
	}
}

// compilePatterns checks the include and exclude patterns; no include means every file ("**").
func (c *Compiled) compilePatterns(r Rule, bad complain) {
	if len(r.Include) == 0 {
		c.Include = []string{"**"}
	}
	for _, p := range r.Include {
		if msg := checkPattern(p); msg != "" {
			bad("include", "%s %q", msg, p)
		}
	}
	for _, p := range r.Exclude {
		if msg := checkPattern(p); msg != "" {
			bad("exclude", "%s %q", msg, p)
		}
	}
}

// compileUnit checks the unit (file by default, or folder), the settle time (DefaultSettle when
// unset) and the marker, which only a folder unit may have.
func (c *Compiled) compileUnit(r Rule, bad complain) {
	switch r.Unit {
	case "":
		c.Unit = UnitFile
	case UnitFile, UnitFolder:
	default:
		bad("unit", "unknown unit %q (file or folder)", r.Unit)
	}
	switch {
	case r.Settle < 0:
		bad("settle", "negative duration %q", r.Settle)
	case r.Settle == 0:
		c.Settle = DefaultSettle
	}
	if r.Marker != "" {
		if c.Unit != UnitFolder {
			bad("marker", "%q: a marker only completes folder units (unit = \"folder\")", r.Marker)
		}
		if !validSegment(r.Marker) {
			bad("marker", "bad file name %q", r.Marker)
		}
	}
}

// checkZarr checks the rule's zarr mode; empty leaves the [omero] zarr setting in charge.
func checkZarr(r Rule, bad complain) {
	if r.Zarr != "" {
		if _, err := order.ParseZarrMode(r.Zarr); err != nil {
			bad("zarr", "%v", err)
		}
	}
}

// compilePreprocessing copies the rule's preprocessing step, with the default input file, and
// checks it as an order's step is checked.
func (c *Compiled) compilePreprocessing(r Rule, bad complain) {
	if pp := r.Preprocessing; pp != nil {
		c.Preprocessing = pp.Copy()
		if c.Preprocessing.InputFile == "" {
			c.Preprocessing.InputFile = order.DefaultInputFile
		}
		if err := c.Preprocessing.Check(); err != nil {
			fe := fieldError(err)
			bad(fe.Field, "%s", fe.Msg)
		}
	}
}

// checkGroupRoots checks that the watched folder lies inside one of the roots of its group (of
// each allowed group, for "{group}"); a group without roots is not restricted.
func (c *Compiled) checkGroupRoots(r Rule, groupRoots map[string][]string, bad complain) {
	if c.static != "" && r.Group != "" {
		groups := []string{r.Group}
		if r.Group == "{group}" {
			groups = r.Groups
		}
		for _, g := range groups {
			roots, ok := groupRoots[g]
			if !ok || len(roots) == 0 {
				continue
			}
			folder := c.static
			if r.Group == "{group}" {
				folder = c.fillGroup(g)
			}
			inside := false
			for _, root := range roots {
				if filepath.IsAbs(root) && order.Within(filepath.Clean(root), folder) {
					inside = true
					break
				}
			}
			if !inside {
				bad("path", "%q: folder %q is outside the roots of group %q %q", r.Path, folder, g, roots)
			}
		}
	}
}

func (c *Compiled) fillGroup(g string) string {
	var b strings.Builder
	for _, s := range c.segs {
		if s.ph == varUser {
			break
		}
		b.WriteByte('/')
		if s.ph == varGroup {
			b.WriteString(g)
		} else {
			b.WriteString(s.lit)
		}
	}
	return b.String()
}

// parseDestination parses the destination with order.ParseDestination; a name may hold the
// placeholders {dir}, {user} and {group}.
func (c *Compiled) parseDestination() string {
	t, err := order.ParseDestination(c.Destination)
	if err != nil {
		return fieldError(err).Msg
	}
	for s := t.Name; ; {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			if strings.IndexByte(s, '}') >= 0 {
				return fmt.Sprintf("unbalanced \"}\" in %q", c.Destination)
			}
			break
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return fmt.Sprintf("unbalanced \"{\" in %q", c.Destination)
		}
		switch ph := s[i+1 : i+j]; ph {
		case varDir, varUser, varGroup:
		default:
			return fmt.Sprintf("unknown placeholder {%s} in %q ({dir}, {user} or {group})", ph, c.Destination)
		}
		s = s[i+j+1:]
	}
	c.dest = t
	return ""
}

// fieldError returns the *order.FieldError of err (package order returns nothing else).
func fieldError(err error) *order.FieldError {
	var fe *order.FieldError
	if !errors.As(err, &fe) {
		fe = &order.FieldError{Msg: err.Error()}
	}
	return fe
}

func checkPattern(p string) string {
	switch {
	case p == "":
		return "empty pattern"
	case strings.HasPrefix(p, "/"):
		return "pattern must be relative to the rule folder:"
	case !doublestar.ValidatePattern(p):
		return "bad pattern"
	}
	for _, s := range strings.Split(p, "/") {
		if s == ".." || s == "." {
			return "pattern may not contain \".\" or \"..\" segments:"
		}
	}
	return ""
}

// validSegment: a usable single path segment / account name.
func validSegment(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\x00") && strings.TrimSpace(s) == s
}

func joinLits(ss []seg) string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = s.lit
	}
	return strings.Join(parts, "/")
}

// overlap reports an error when rules a and b could claim the same file (see Compile).
func overlap(a, b *Compiled) error {
	outer, inner := a, b
	if len(b.segs) < len(a.segs) {
		outer, inner = b, a
	}
	n := len(outer.segs)
	for i := 0; i < n; i++ {
		if !canMeet(outer, outer.segs[i], inner, inner.segs[i]) {
			return nil // the folders can never meet
		}
	}
	// rel: inner folder relative to the outer folder, placeholders as "*"
	rel := make([]string, 0, len(inner.segs)-n)
	for _, s := range inner.segs[n:] {
		if s.ph != "" {
			rel = append(rel, "*")
		} else {
			rel = append(rel, s.lit)
		}
	}
	if separated(outer, inner, rel) || (len(rel) == 0 && separated(inner, outer, nil)) {
		return nil
	}
	where := "the same folder"
	if len(rel) > 0 {
		where = fmt.Sprintf("a folder inside rules[%d] (%s)'s folder", outer.Index, outer.Name)
	}
	other := outer
	if other == b {
		other = a
	}
	return &RuleError{b.Index, b.Name, "path", fmt.Sprintf(
		"overlaps rules[%d] (%s): %q and %q can name %s; separate them with excludes",
		other.Index, other.Name, a.Path, b.Path, where)}
}

// canMeet reports whether template segment x of rule a and y of rule b can name the same folder:
// a placeholder only takes the values of its allowlist.
func canMeet(a *Compiled, x seg, b *Compiled, y seg) bool {
	values := func(c *Compiled, s seg) map[string]bool {
		if s.ph == varUser {
			return c.users
		}
		if s.ph == varGroup {
			return c.groups
		}
		return map[string]bool{s.lit: true}
	}
	vx, vy := values(a, x), values(b, y)
	for v := range vx {
		if vy[v] {
			return true
		}
	}
	return false
}

// separated reports whether the outer rule provably claims no file of the inner rule, whose folder
// is outer's folder + rel ("*" segments stand for placeholders).
func separated(outer, inner *Compiled, rel []string) bool {
	// 1. an exclude of the whole inner folder
	for _, e := range outer.Exclude {
		ps := strings.Split(e, "/")
		if ps[len(ps)-1] == "**" {
			ps = ps[:len(ps)-1]
		}
		if len(rel) > 0 && len(ps) == len(rel) {
			ok := true
			for i := range ps {
				if ps[i] != "*" && (ps[i] != rel[i] || strings.ContainsAny(ps[i], "*?[{\\")) {
					ok = false
					break
				}
			}
			if ok {
				return true
			}
		}
	}
	// 2. every include of inner is excluded verbatim by outer
	prefix := strings.Join(rel, "/")
	all := true
	for _, inc := range inner.Include {
		want := inc
		if prefix != "" {
			want = prefix + "/" + inc
		}
		found := false
		for _, e := range outer.Exclude {
			if e == want {
				found = true
				break
			}
		}
		if !found {
			all = false
			break
		}
	}
	if all {
		return true
	}
	// 3. outer's includes cannot reach below depth len(rel)
	if len(rel) == 0 {
		return false
	}
	for _, inc := range outer.Include {
		if strings.Contains(inc, "**") || strings.ContainsAny(inc, "{}") {
			return false
		}
		if strings.Count(inc, "/")+1 > len(rel) {
			return false
		}
	}
	return true
}

func buildRoots(rs []*Compiled) []Root {
	byPrefix := map[string][]*Compiled{}
	var prefixes []string
	for _, c := range rs {
		if _, ok := byPrefix[c.static]; !ok {
			prefixes = append(prefixes, c.static)
		}
		byPrefix[c.static] = append(byPrefix[c.static], c)
	}
	sort.Strings(prefixes)
	var roots []Root
	for _, p := range prefixes {
		placed := false
		for i := range roots {
			if order.Within(roots[i].Path, p) {
				roots[i].Rules = append(roots[i].Rules, byPrefix[p]...)
				placed = true
				break
			}
		}
		if !placed {
			roots = append(roots, Root{Path: p, Rules: append([]*Compiled(nil), byPrefix[p]...)})
		}
	}
	return roots
}
