package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/omero-adi/omero-adi/internal/omerotest/world"
)

// The zarr subcommand imitates the omero-cli-zarr plugin (ome/omero-cli-zarr ≥ 0.7): the parser of
// src/omero_zarr/cli.py ZarrControl._configure (login flags on `zarr` itself, then `import URI
// [--endpoint E] [--name N] [--nosignrequest] [--target T] [--target-by-name N] [--wait S]`) and
// import_cmd, and src/omero_zarr/zarr_import.py import_zarr, import_image, set_external_info and
// link_to_target, with what they print. Choices of the double:
//   - A Zarr group is a folder holding ".zattrs" (Zarr v2) or "zarr.json" (v3, its "attributes");
//     attributes under "ome" are used instead of the top level, as load_attrs does. A URI with
//     neither fails as zarr's open_group does: a GroupNotFoundError traceback, exit 1.
//   - Series of a bioformats2raw.layout 3 Zarr are the subgroups 0, 1, … that exist; with
//     OME/METADATA.ome.xml each is "Imported Image: N" (full_import), else "Created Image N".
//   - State.ZarrRoots, when set, are the folders the server (omero-zarr-pixel-buffer) can read:
//     an image registered from elsewhere is created all the same, as the plugin checks nothing,
//     and is marked PixelsUnreadable.
//   - Failure.NoZarrPlugin makes `zarr` an unknown subcommand, as omero-py's parser refuses it
//     (cli.py Parser._check_value, argparse's error: usage on stderr, exit 2).

var zarrSpecs = append(append([]optSpec{}, loginSpecs...), optSpec{names: []string{"--output"}, dest: "output", value: true})

var zarrImportSpecs = []optSpec{
	{names: []string{"--endpoint"}, dest: "endpoint", value: true},
	{names: []string{"--name"}, dest: "name", value: true},
	{names: []string{"--nosignrequest"}, dest: "nosignrequest"},
	{names: []string{"--target"}, dest: "target", value: true},
	{names: []string{"--target-by-name"}, dest: "target_by_name", value: true},
	{names: []string{"--wait"}, dest: "wait", value: true, isInt: true},
}

func cmdZarr(statePath string, args []string) error {
	noPlugin := false
	if err := world.View(statePath, func(st *world.State) { noPlugin = st.Failure.NoZarrPlugin }); err != nil {
		return err
	}
	if noPlugin {
		return die(2, "usage: %s [-h] <subcommand> ...\n%s: error: argument <subcommand>: invalid choice: 'zarr'\n\nchoose from:\n\tadmin, config, fs, group, hql, import, load, login, logout, obj, sessions, user, version",
			os.Args[0], os.Args[0])
	}
	sub := -1
	for i, a := range args {
		if a == "-h" || a == "--help" {
			fmt.Println("usage: omero zarr [-h] ... {polygons,masks,export,import} ...")
			return nil
		}
		if !strings.HasPrefix(a, "-") && (i == 0 || !takesValue(zarrSpecs, args[i-1])) {
			sub = i
			break
		}
	}
	if sub < 0 {
		return usageError("omero zarr", "the following arguments are required: subcommand")
	}
	if args[sub] != "import" {
		return usageError("omero zarr", fmt.Sprintf("argument subcommand: invalid choice: '%s'", args[sub]))
	}
	p, err := parseArgs("omero zarr", zarrSpecs, args[:sub])
	if err != nil {
		return err
	}
	ip, err := parseArgs("omero zarr import", zarrImportSpecs, args[sub+1:])
	if err != nil {
		return err
	}
	if len(ip.pos) != 1 {
		return usageError("omero zarr import", "the following arguments are required: uri")
	}
	return zarrImport(statePath, p, ip, ip.pos[0])
}

func takesValue(specs []optSpec, a string) bool {
	for _, s := range specs {
		for _, n := range s.names {
			if n == a {
				return s.value
			}
		}
	}
	return false
}

// zarrGroup reads the attributes of the group at dir (load_attrs); ok is false without one.
func zarrGroup(dir string) (map[string]any, bool) {
	var attrs map[string]any
	if b, err := os.ReadFile(filepath.Join(dir, ".zattrs")); err == nil {
		if json.Unmarshal(b, &attrs) != nil {
			return nil, false
		}
	} else if b, err := os.ReadFile(filepath.Join(dir, "zarr.json")); err == nil {
		var meta struct {
			NodeType   string         `json:"node_type"`
			Attributes map[string]any `json:"attributes"`
		}
		if json.Unmarshal(b, &meta) != nil || meta.NodeType != "group" {
			return nil, false
		}
		attrs = meta.Attributes
	} else {
		return nil, false
	}
	if ome, ok := attrs["ome"].(map[string]any); ok {
		attrs = ome
	}
	if attrs == nil {
		attrs = map[string]any{}
	}
	return attrs, true
}

func traceback(kind, msg string) error {
	return die(1, "Traceback (most recent call last):\n  File \"omero_zarr/zarr_import.py\", line 1, in import_zarr\n%s: %s", kind, msg)
}

// zarrImport is import_zarr: it reads the Zarr, creates the images (each with its ExternalInfo)
// and links them to the target, printing as the plugin does.
func zarrImport(statePath string, p, ip *parsed, uri string) error {
	path := uri
	if !filepath.IsAbs(uri) {
		path, _ = filepath.Abs(uri)
	}
	attrs, ok := zarrGroup(path)
	if !ok {
		return traceback("zarr.errors.GroupNotFoundError", fmt.Sprintf("No group found in store LocalStore('file://%s') at path ''", path))
	}
	type series struct {
		check      string // "Checking for series: i", printed before the image
		lsid, name string
		imported   bool // OME/METADATA.ome.xml: "Imported Image:"
	}
	var head, tail []string
	var todo []series
	base := filepath.Base(strings.TrimRight(uri, "/"))
	name := ip.get("name")
	switch {
	case attrs["plate"] != nil:
		fmt.Println("Plate import not yet supported")
		return nil
	case attrs["bioformats2raw.layout"] == float64(3):
		head = append(head, "Importing: bioformats2raw.layout")
		xml := isFile(filepath.Join(path, "OME", "METADATA.ome.xml"))
		if xml {
			head = append(head, "Importing OME/METADATA.ome.xml")
		} else {
			head = append(head, "OME/METADATA.ome.xml Not Found")
		}
		for i := 0; ; i++ {
			check := ""
			if !xml {
				check = fmt.Sprintf("Checking for series: %d", i)
			}
			sa, ok := zarrGroup(filepath.Join(path, strconv.Itoa(i)))
			if !ok {
				if check != "" {
					tail = append(tail, check)
				}
				break
			}
			if sa["multiscales"] == nil {
				return traceback("KeyError", "'multiscales'")
			}
			n := fmt.Sprintf("%s [%d]", base, i)
			if s, ok := sa["name"].(string); ok {
				n = s
			}
			if name != "" {
				n = name
			}
			todo = append(todo, series{check: check, lsid: lsidOf(uri, strconv.Itoa(i)), name: n, imported: xml})
		}
	default:
		head = append(head, "Importing: Image")
		if attrs["multiscales"] == nil {
			return traceback("KeyError", "'multiscales'")
		}
		n := base
		if name != "" {
			n = name
		} else if s, ok := attrs["name"].(string); ok {
			n = s
		}
		todo = append(todo, series{lsid: lsidOf(uri, ""), name: n})
	}
	out := head
	err := withSession(statePath, p, connOpts{}, func(st *world.State, s *world.Session) error {
		var created []int64
		for _, sr := range todo {
			img := world.Image{ID: st.NewID(), Name: sr.name, GroupID: s.GroupID,
				ExtInfo:          &world.ExtInfo{EntityID: 3, EntityType: "com.glencoesoftware.ngff:multiscales", Lsid: sr.lsid},
				PixelsUnreadable: !readable(st.ZarrRoots, sr.lsid)}
			st.Images = append(st.Images, img)
			created = append(created, img.ID)
			if sr.check != "" {
				out = append(out, sr.check)
			}
			if sr.imported {
				out = append(out, "lsid: "+sr.lsid, fmt.Sprintf("Imported Image: %d", img.ID))
			} else {
				out = append(out, "lsid: "+sr.lsid, fmt.Sprintf("Created Image %d", img.ID))
			}
		}
		out = append(out, tail...)
		if ip.get("target") == "" && ip.get("target_by_name") == "" {
			return nil
		}
		ds, err := zarrTarget(st, s, ip)
		if err != nil {
			return err
		}
		for _, id := range created {
			if ds == nil {
				out = append(out, "Target not found")
				continue
			}
			for i := range st.Images {
				if st.Images[i].ID == id {
					st.Images[i].DatasetID = ds.ID
				}
			}
			out = append(out, fmt.Sprintf("Linked to Dataset %d", ds.ID))
		}
		return nil
	})
	for _, l := range out {
		fmt.Println(l)
	}
	return err
}

// zarrTarget is link_to_target for an image: --target "Dataset:ID", "Screen:ID" or "ID" names a
// Dataset by the number after the colon whatever the kind; --target-by-name the newest Dataset of
// that name. The session's group is searched; nil means "Target not found".
func zarrTarget(st *world.State, s *world.Session, ip *parsed) (*world.Container, error) {
	if t := ip.get("target"); t != "" {
		idText := t
		if _, after, ok := strings.Cut(t, ":"); ok {
			idText = after
		}
		id, err := strconv.ParseInt(idText, 10, 64)
		if err != nil {
			return nil, traceback("ValueError", fmt.Sprintf("invalid literal for int() with base 10: '%s'", idText))
		}
		for i := range st.Datasets {
			if d := &st.Datasets[i]; d.ID == id && d.GroupID == s.GroupID {
				return d, nil
			}
		}
		return nil, nil
	}
	var found *world.Container
	for i := range st.Datasets {
		if d := &st.Datasets[i]; d.Name == ip.get("target_by_name") && d.GroupID == s.GroupID && (found == nil || d.ID > found.ID) {
			found = d
		}
	}
	return found, nil
}

// lsidOf is set_external_info's lsid of a local URI: the path, with the series appended; a URI
// that does not start with "/" is taken for S3 (format_s3_uri with the default endpoint).
func lsidOf(uri, series string) string {
	if series != "" {
		uri = strings.TrimRight(uri, "/") + "/" + series
	}
	if strings.HasPrefix(uri, "/") {
		return uri
	}
	return "://s3.us-east-1.amazonaws.com/" + uri
}

func readable(roots []string, lsid string) bool {
	if len(roots) == 0 {
		return true
	}
	for _, r := range roots {
		if lsid == r || strings.HasPrefix(lsid, strings.TrimRight(r, "/")+"/") {
			return true
		}
	}
	return false
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}
