package order

import (
	"fmt"
	"path/filepath"
	"strings"
)

// ZarrMode says what happens to the OME-Zarr paths of an order: a rule's `zarr` key, the
// `[omero] zarr` setting (env USE_REGISTER_ZARR) for every other order.
type ZarrMode string

// Zarr modes.
const (
	// ZarrRegister registers each Zarr in place (omero zarr import): the server reads the pixels
	// from the Zarr itself, nothing is copied or linked.
	ZarrRegister ZarrMode = "register"
	// ZarrImport hands the Zarr folder to omero import like any other folder.
	ZarrImport ZarrMode = "import"
	// ZarrRefuse fails orders that name a Zarr.
	ZarrRefuse ZarrMode = "refuse"
)

// ParseZarrMode reads a zarr setting; "" is ZarrRegister, BIOMERO.importer's default.
func ParseZarrMode(s string) (ZarrMode, error) {
	switch m := ZarrMode(strings.ToLower(strings.TrimSpace(s))); m {
	case "":
		return ZarrRegister, nil
	case ZarrRegister, ZarrImport, ZarrRefuse:
		return m, nil
	}
	return "", fmt.Errorf("%q is none of register, import, refuse", s)
}

// ParseRegisterZarr reads BIOMERO.importer's USE_REGISTER_ZARR strictly: true, 1 and yes are
// ZarrRegister; false, 0 and no are ZarrImport (any case). Upstream took any non-empty string,
// "false" included, as true; here anything else is an error.
func ParseRegisterZarr(s string) (ZarrMode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "1", "yes":
		return ZarrRegister, nil
	case "false", "0", "no":
		return ZarrImport, nil
	}
	return "", fmt.Errorf("%q is none of true, false, 1, 0, yes, no", s)
}

// IsZarrName reports whether a file or folder name is an OME-Zarr's: it ends in ".zarr" (which
// covers ".ome.zarr"), in any case.
func IsZarrName(name string) bool {
	const ext = ".zarr"
	return len(name) >= len(ext) && strings.EqualFold(name[len(name)-len(ext):], ext)
}

// ZarrRoot returns the Zarr that path is or lies inside: the outermost folder on the path whose
// name ends in ".zarr". A path in no such folder returns "", false. path is clean and absolute.
func ZarrRoot(path string) (string, bool) {
	parts := strings.Split(path, "/")
	for i, p := range parts {
		if i > 0 && IsZarrName(p) {
			return filepath.Clean("/" + filepath.Join(parts[:i+1]...)), true
		}
	}
	return "", false
}

// Zarrs sorts the checked files of an order: the Zarrs they are or lie in (by their resolved
// paths, each once, in order) and the indexes of the files in no Zarr. A regular file whose name
// ends in ".zarr" is not a Zarr.
func Zarrs(files []File) (zarrs []string, others []int) {
	seen := map[string]bool{}
	for i, f := range files {
		root, ok := ZarrRoot(f.Real)
		if !ok || (root == f.Real && !f.Dir) {
			others = append(others, i)
			continue
		}
		if !seen[root] {
			seen[root] = true
			zarrs = append(zarrs, root)
		}
	}
	return zarrs, others
}
