package omero

import (
	"path/filepath"
	"strings"
)

// clientPathChars are the characters the importer replaces in each component of a client path
// (ome/omero-blitz FilePathRestrictionInstance WINDOWS_REQUIRED and UNIX_REQUIRED, which
// ImportContainer.fillData applies through ClientFilePathTransformer and MakePathComponentSafe).
var clientPathChars = strings.NewReplacer(`"`, `'`, `*`, `x`, `:`, `;`, `<`, `[`, `>`, `]`, `?`, `%`, `\`, `!`, `|`, `!`)

// unsafeNames are the Windows device names a component may not be; "NAME." may not begin one.
var unsafeNames = func() map[string]bool {
	m := map[string]bool{"AUX": true, "CLOCK$": true, "CON": true, "NUL": true, "PRN": true}
	for n := '1'; n <= '9'; n++ {
		m["COM"+string(n)], m["LPT"+string(n)] = true, true
	}
	return m
}()

// ClientPath is the absolute path as the importer records it in FilesetEntry.clientPath, with the
// leading "/" put back: each component made portable as MakePathComponentSafe.apply does (a
// device name gets "_" appended, a component starting with one and "." or with "$" gets "_"
// prepended, control characters become "_", and `"*:<>?\|` become `'x;[]%!!`).
func ClientPath(path string) string {
	parts := strings.Split(strings.TrimPrefix(filepath.Clean(path), "/"), "/")
	for i, p := range parts {
		uc := strings.ToUpper(p)
		if unsafeNames[uc] {
			p += "_"
		}
		if dot := strings.IndexByte(uc, '.'); strings.HasPrefix(uc, "$") || (dot > 0 && unsafeNames[uc[:dot]]) {
			p = "_" + p
		}
		p = strings.Map(func(r rune) rune {
			if r < 0x20 {
				return '_'
			}
			return r
		}, p)
		parts[i] = clientPathChars.Replace(p)
	}
	return "/" + strings.Join(parts, "/")
}
