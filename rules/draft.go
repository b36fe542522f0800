package rules

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/omero-adi/omero-adi/order"
)

// ErrDraft is wrapped by Draft's errors.
var ErrDraft = errors.New("cannot draft order")

// Draft turns a match and the unit's files (absolute paths inside the unit) into an order draft.
func (c *Compiled) Draft(m Match, files []string) (order.Draft, error) {
	if m.Rule != c {
		return order.Draft{}, fmt.Errorf("%w: match belongs to rule %q, not %q", ErrDraft, ruleName(m.Rule), c.Name)
	}
	if len(files) == 0 {
		return order.Draft{}, fmt.Errorf("%w: rule %s: unit %s has no files", ErrDraft, c.Name, m.UnitPath)
	}
	for _, f := range files {
		if !filepath.IsAbs(f) || filepath.Clean(f) != f {
			return order.Draft{}, fmt.Errorf("%w: rule %s: file %q is not an absolute clean path", ErrDraft, c.Name, f)
		}
		if !order.Within(m.UnitPath, f) {
			return order.Draft{}, fmt.Errorf("%w: rule %s: file %q is outside the unit %s", ErrDraft, c.Name, f, m.UnitPath)
		}
	}
	d := order.Draft{
		Group:         m.Vars[varGroup],
		User:          m.Vars[varUser],
		Target:        c.dest,
		Files:         zarrFolders(files),
		Source:        c.Name,
		Description:   c.Description,
		Preprocessing: c.Preprocessing.Copy(),
	}
	if d.Group == "" || d.User == "" {
		return order.Draft{}, fmt.Errorf("%w: rule %s: match of %s lacks the group or the user", ErrDraft, c.Name, m.UnitPath)
	}
	if c.dest.Name != "" {
		name, err := expand(c.dest.Name, m.Vars)
		if err != nil {
			return order.Draft{}, fmt.Errorf("%w: rule %s: destination %q: %w", ErrDraft, c.Name, c.Destination, err)
		}
		d.Target.Name = name
	}
	if err := d.Validate(); err != nil {
		return order.Draft{}, fmt.Errorf("%w: rule %s: unit %s: %w", ErrDraft, c.Name, m.UnitPath, err)
	}
	return d, nil
}

// zarrFolders lists files with every file inside an OME-Zarr replaced by the Zarr's folder (once,
// where its first file was): an order names a Zarr, never its thousands of chunks.
func zarrFolders(files []string) []string {
	out := make([]string, 0, len(files))
	seen := map[string]bool{}
	for _, f := range files {
		if root, ok := order.ZarrRoot(f); ok {
			f = root
		}
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	return out
}

func ruleName(c *Compiled) string {
	if c == nil {
		return ""
	}
	return c.Name
}

// expand fills {dir}, {user} and {group}; an empty result is an error.
func expand(tmpl string, vars map[string]string) (string, error) {
	var b strings.Builder
	for s := tmpl; ; {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			b.WriteString(s)
			break
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return "", fmt.Errorf("unbalanced \"{\"")
		}
		b.WriteString(s[:i])
		v, ok := vars[s[i+1:i+j]]
		if !ok || v == "" {
			return "", fmt.Errorf("no value for %s", s[i:i+j+1])
		}
		b.WriteString(v)
		s = s[i+j+1:]
	}
	name := strings.TrimSpace(b.String())
	if name == "" {
		return "", fmt.Errorf("empty name")
	}
	return name, nil
}
