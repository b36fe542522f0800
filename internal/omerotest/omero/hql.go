package main

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/omero-adi/omero-adi/internal/omerotest/world"
)

var prefixQueryRE = regexp.MustCompile(`(?is)^\s*select\s+distinct\s+fs\.templatePrefix\s+from\s+Image\s+(?:as\s+)?i\s+join\s+i\.fileset\s+(?:as\s+)?fs\s+where\s+i\.id\s+in\s*\(([\d\s,]*)\)\s*$`)

// cmdHQL answers the one query shape omero-cli.md documents: the templatePrefixes of images.
func cmdHQL(statePath string, args []string) error {
	specs := append(append([]optSpec{}, loginSpecs...),
		optSpec{names: []string{"--limit"}, dest: "limit", value: true, isInt: true},
		optSpec{names: []string{"--offset"}, dest: "offset", value: true, isInt: true},
		optSpec{names: []string{"--style"}, dest: "style", value: true, choices: []string{"csv", "plain", "sql", "json"}},
		optSpec{names: []string{"--all"}, dest: "all"},
	)
	p, err := parseArgs("omero hql", specs, args)
	if err != nil {
		return err
	}
	if len(p.pos) != 1 {
		return usageError("omero hql", "give exactly one query")
	}
	m := prefixQueryRE.FindStringSubmatch(p.pos[0])
	if m == nil {
		return die(1, "the OMERO double answers only: select distinct fs.templatePrefix from Image i join i.fileset fs where i.id in (…)")
	}
	if p.get("style") != "plain" {
		return die(1, "the OMERO double prints only --style plain")
	}
	limit := 25
	if p.get("limit") != "" {
		limit, _ = strconv.Atoi(p.get("limit"))
	}
	ids := map[int64]bool{}
	for _, f := range strings.Split(m[1], ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		id, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return die(1, "QueryException: bad id %s", f)
		}
		ids[id] = true
	}
	return readSession(statePath, p, func(st *world.State, s *world.Session) error {
		fsIDs := map[int64]bool{}
		for _, img := range st.Images {
			if ids[img.ID] && img.GroupID == s.GroupID {
				fsIDs[img.FilesetID] = true
			}
		}
		seen := map[string]bool{}
		var prefixes []string
		for _, f := range st.Filesets {
			if fsIDs[f.ID] && !seen[f.TemplatePrefix] {
				seen[f.TemplatePrefix] = true
				prefixes = append(prefixes, f.TemplatePrefix)
			}
		}
		sort.Strings(prefixes)
		if len(prefixes) > limit {
			prefixes = prefixes[:limit]
		}
		if len(prefixes) == 0 {
			fmt.Println()
			return nil
		}
		for i, pr := range prefixes {
			fmt.Printf("%d,%s\n", i, pr)
		}
		return nil
	})
}
