package order

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// Roots says where the files of an order may lie: inside the data root, and inside the group's
// roots when those are configured. Roots are compared after resolving symlinks on both sides.
type Roots struct {
	BaseDir string
	Groups  map[string][]string // group -> allowed folders; a group without an entry may use all of BaseDir
}

// File is one file of an order that passed Roots.Check.
type File struct {
	Path string // as given, cleaned
	Real string // after resolving symlinks: what the import reads
	Dir  bool
}

// ParseFiles decodes the files column: a JSON list of paths, in UTF-8 (JSON decoding would turn
// other bytes into U+FFFD silently).
func ParseFiles(raw string) ([]string, error) {
	if i := invalidUTF8(raw); i >= 0 {
		return nil, invalid("files", "is not valid UTF-8 text (byte %#x at offset %d): OMERO takes UTF-8 file names only; rename the file and fix the row", raw[i], i)
	}
	var files []string
	if err := json.Unmarshal([]byte(raw), &files); err != nil {
		return nil, invalid("files", "is not a JSON list of paths (%v): %s", err, quoteClip(raw))
	}
	if len(files) == 0 {
		return nil, invalid("files", "lists no file")
	}
	return files, nil
}

// Check checks that every file of an order of group is an absolute path that resolves inside
// the allowed roots, exists and is readable. It reads metadata and never changes a file. Problems
// with a file are *FieldError naming files[i].
func (r Roots) Check(group string, files []string) ([]File, error) {
	if len(files) == 0 {
		return nil, invalid("files", "lists no file")
	}
	roots, err := r.resolve(group)
	if err != nil {
		return nil, err
	}
	out := make([]File, 0, len(files))
	for i, f := range files {
		field := fmt.Sprintf("files[%d]", i)
		if err := checkPath(field, f); err != nil {
			return nil, err
		}
		real, dir, err := checkFile(field, f, roots)
		if err != nil {
			return nil, err
		}
		out = append(out, File{Path: filepath.Clean(f), Real: real, Dir: dir})
	}
	return out, nil
}

// resolve returns the resolved folders an order of group may read from.
func (r Roots) resolve(group string) ([]string, error) {
	base, err := filepath.EvalSymlinks(r.BaseDir)
	if err != nil {
		return nil, fmt.Errorf("resolve base_dir %q: %w", r.BaseDir, err)
	}
	gr := r.Groups[group]
	if len(gr) == 0 {
		return []string{base}, nil
	}
	var out []string
	for _, g := range gr {
		rg, err := filepath.EvalSymlinks(g)
		if err != nil {
			continue // a root that does not exist holds no file
		}
		if Within(base, rg) {
			out = append(out, rg)
		}
	}
	if len(out) == 0 {
		return nil, invalid("group_name", "group %q has no existing root inside base_dir %q (settings groups.%s.roots)", group, r.BaseDir, group)
	}
	return out, nil
}

func checkFile(field, f string, roots []string) (real string, dir bool, err error) {
	real, err = filepath.EvalSymlinks(f)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", false, invalid(field, "%s does not exist (moved or deleted?); fix the path", quoteClip(f))
		}
		return "", false, invalid(field, "%s cannot be resolved: %v", quoteClip(f), err)
	}
	inside := false
	for _, r := range roots {
		if Within(r, real) {
			inside = true
			break
		}
	}
	if !inside {
		if real != filepath.Clean(f) {
			return "", false, invalid(field, "%s resolves to %s, outside the allowed roots %s; only files below them can be imported", quoteClip(f), quoteClip(real), strings.Join(roots, ", "))
		}
		return "", false, invalid(field, "%s is outside the allowed roots %s; only files below them can be imported", quoteClip(f), strings.Join(roots, ", "))
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", false, invalid(field, "%s cannot be read: %v", quoteClip(f), err)
	}
	if fi.IsDir() {
		d, err := os.Open(real)
		if err == nil {
			_, err = d.Readdirnames(1)
			d.Close()
		}
		if err != nil && err != io.EOF {
			return "", false, invalid(field, "folder %s cannot be listed: %v; check its permissions", quoteClip(f), err)
		}
		return real, true, nil
	}
	if !fi.Mode().IsRegular() {
		return "", false, invalid(field, "%s is not a regular file or folder", quoteClip(f))
	}
	fh, err := os.Open(real)
	if err != nil {
		return "", false, invalid(field, "%s cannot be read: %v; check its permissions", quoteClip(f), err)
	}
	fh.Close()
	return real, false, nil
}

// invalidUTF8 returns the offset of the first byte of s that is not UTF-8, or -1.
func invalidUTF8(s string) int {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return i
			}
		}
	}
	return -1
}

// Within reports whether path is root or lies below it. It compares the paths as written: both
// must be clean absolute paths, and callers resolve symlinks first where they matter.
func Within(root, path string) bool {
	if root == "/" {
		return strings.HasPrefix(path, "/")
	}
	return path == root || strings.HasPrefix(path, root+"/")
}

// Below reports whether path lies strictly below root, as Within does but without root itself.
func Below(root, path string) bool {
	return path != root && Within(root, path)
}
