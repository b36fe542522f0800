package rules

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/omero-adi/omero-adi/internal/fspath"
)

// ErrDraft is wrapped by Draft's errors.
var ErrDraft = errors.New("cannot draft order")

// Draft is the order a settled unit becomes; the agent turns it into db.NewOrder.
type Draft struct {
	Group           string
	User            string
	DestinationType string // "Dataset" or "Screen"
	DestinationID   string // numeric id, or "name:NAME"
	Files           []string
	Source          string // the rule name
	Description     string
	Preprocessing   *Preprocessing // a copy; nil without preprocessing
}

// Draft turns a match and the unit's files (absolute paths inside the unit) into an order draft.
func (c *Compiled) Draft(m Match, files []string) (Draft, error) {
	if m.Rule != c {
		return Draft{}, fmt.Errorf("%w: match belongs to rule %q, not %q", ErrDraft, ruleName(m.Rule), c.Name)
	}
	if len(files) == 0 {
		return Draft{}, fmt.Errorf("%w: rule %s: unit %s has no files", ErrDraft, c.Name, m.UnitPath)
	}
	for _, f := range files {
		if !filepath.IsAbs(f) || filepath.Clean(f) != f {
			return Draft{}, fmt.Errorf("%w: rule %s: file %q is not an absolute clean path", ErrDraft, c.Name, f)
		}
		if !fspath.Within(m.UnitPath, f) {
			return Draft{}, fmt.Errorf("%w: rule %s: file %q is outside the unit %s", ErrDraft, c.Name, f, m.UnitPath)
		}
	}
	d := Draft{
		Group:           m.Vars[varGroup],
		User:            m.Vars[varUser],
		DestinationType: c.destKind,
		DestinationID:   c.destID,
		Files:           append([]string(nil), files...),
		Source:          c.Name,
		Description:     c.Description,
	}
	if d.Group == "" || d.User == "" {
		return Draft{}, fmt.Errorf("%w: rule %s: match of %s lacks the group or the user", ErrDraft, c.Name, m.UnitPath)
	}
	if c.destName != "" {
		name, err := expand(c.destName, m.Vars)
		if err != nil {
			return Draft{}, fmt.Errorf("%w: rule %s: destination %q: %w", ErrDraft, c.Name, c.Destination, err)
		}
		d.DestinationID = "name:" + name
	}
	if c.Preprocessing != nil {
		pp := *c.Preprocessing
		if pp.ExtraParams != nil {
			pp.ExtraParams = make(map[string]string, len(c.Preprocessing.ExtraParams))
			for k, v := range c.Preprocessing.ExtraParams {
				pp.ExtraParams[k] = v
			}
		}
		d.Preprocessing = &pp
	}
	return d, nil
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
