package order

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
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

// ZarrOrder is what PlanZarrs decides on: an order's checked files and target, whether it has a
// preprocessing step, its zarr mode (and the setting that chose it, for the description: "rule
// \"x\"", "omero.zarr"), and the registering tool as descriptions name it ("omero-cli-zarr 0.8.0").
type ZarrOrder struct {
	Files         []File
	Target        Target
	Preprocessing bool
	Mode          ZarrMode
	Setting, Tool string
}

// PlanZarrs decides, per path, what an order does with its OME-Zarr folders: it returns the Zarrs
// to register (nil: none, or mode import — the order imports as usual), or a *FieldError when the
// order cannot run: the mode refuses Zarrs; Zarrs are mixed with other files (two tools for one
// order would exceed its CLI starts and could leave half an order in OMERO: separate orders);
// the order has preprocessing; the target is a Screen (images register into Datasets); a Zarr
// has no .zattrs or zarr.json, or is a plate (the tool registers images only). It reads each
// Zarr's top attributes (see ZarrKind) and never changes a file.
func PlanZarrs(o ZarrOrder) ([]string, error) {
	zarrs, others := Zarrs(o.Files)
	switch {
	case len(zarrs) == 0 || o.Mode == ZarrImport:
		return nil, nil
	case o.Mode == ZarrRefuse:
		return nil, invalid("files", "%s is an OME-Zarr, and this agent refuses Zarr orders (zarr = %q, %s); register or import it with another rule or agent",
			zarrs[0], o.Mode, o.Setting)
	case len(others) > 0:
		i := others[0]
		return nil, invalid("files", "the order mixes the OME-Zarr %s, which is registered in place (omero zarr import), with files[%d] %q, which would be imported (omero import); "+
			"put the Zarrs and the other files in separate orders, or set zarr = \"import\" to import everything", zarrs[0], i, o.Files[i].Path)
	case o.Preprocessing:
		return nil, invalid("preprocessing_id", "%s is an OME-Zarr, which is registered as it is, without preprocessing; drop the preprocessing, or set zarr = \"import\"", zarrs[0])
	case o.Target.Kind != Dataset:
		return nil, invalid("destination_type", "%s is an OME-Zarr image, which registers into a Dataset, not a %s (%s does not register plates); give a Dataset",
			zarrs[0], o.Target.Kind, o.Tool)
	}
	for _, z := range zarrs {
		kind, err := ZarrKind(z)
		if err != nil {
			return nil, invalid("files", "%s cannot be registered: %v", z, err)
		}
		if kind == "plate" {
			return nil, invalid("files", "%s is an OME-Zarr plate (HCS): plates are not supported by %s, which registers images only "+
				"(it prints \"Plate import not yet supported\" and creates nothing); import the plate another way, e.g. with zarr = \"import\" where the importer has a Zarr reader",
				z, o.Tool)
		}
	}
	return zarrs, nil
}

// ZarrKind reads the top attributes of the Zarr at dir (.zattrs, or zarr.json's attributes; NGFF
// 0.5 nests them under "ome"), as omero-cli-zarr's load_attrs does: "plate" for an HCS plate,
// else "image". A folder with neither file is no Zarr group, an error.
func ZarrKind(dir string) (string, error) {
	var attrs map[string]json.RawMessage
	b, err := os.ReadFile(filepath.Join(dir, ".zattrs"))
	if errors.Is(err, os.ErrNotExist) {
		b, err = os.ReadFile(filepath.Join(dir, "zarr.json"))
		if err == nil {
			var meta struct {
				Attributes map[string]json.RawMessage `json:"attributes"`
			}
			if err := json.Unmarshal(b, &meta); err != nil {
				return "", fmt.Errorf("its zarr.json is not JSON: %v", err)
			}
			attrs = meta.Attributes
		}
	} else if err == nil {
		if err := json.Unmarshal(b, &attrs); err != nil {
			return "", fmt.Errorf("its .zattrs is not JSON: %v", err)
		}
	}
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", errors.New("it has neither .zattrs (Zarr v2) nor zarr.json (Zarr v3) at its top, so it is no OME-Zarr group; name the Zarr's top folder")
	case err != nil:
		return "", err
	}
	if ome, ok := attrs["ome"]; ok {
		var nested map[string]json.RawMessage
		if json.Unmarshal(ome, &nested) == nil {
			attrs = nested
		}
	}
	if _, ok := attrs["plate"]; ok {
		return "plate", nil
	}
	return "image", nil
}
