package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/omero-adi/omero-adi/internal/omerotest/world"
)

var objCommands = []string{"new", "update", "null", "map-get", "map-set", "get", "list-get", "ext-info-get"}

// txCmd is one obj action: "[DEST = ] action Class[:id] field=value …".
type txCmd struct {
	dest string
	args []string
}

var (
	varRE   = regexp.MustCompile(`^\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s(.*)$`)
	fieldRE = regexp.MustCompile(`^([a-zA-Z][a-zA-Z0-9]*)(@)?=(.*)`)
	proxyRE = regexp.MustCompile(`^([A-Za-z]+):(\d+)$`)
)

func cmdObj(statePath string, args []string) error {
	specs := append(append([]optSpec{}, loginSpecs...), optSpec{names: []string{"--file"}, dest: "file", value: true})
	p, err := parseArgs("omero obj", specs, args)
	if err != nil {
		return err
	}
	var cmds []txCmd
	if len(p.pos) == 0 {
		path := p.get("file")
		if path == "" {
			return die(100, "No command provided")
		}
		var r io.Reader
		if path == "-" {
			r = os.Stdin
		} else {
			f, err := os.Open(path)
			if err != nil {
				return die(337, "Cannot read file")
			}
			defer func() { _ = f.Close() }()
			r = f
		}
		lines, err := readLines(r)
		if err != nil {
			return die(337, "Cannot read file")
		}
		for _, line := range lines {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			var c txCmd
			if m := varRE.FindStringSubmatch(line); m != nil {
				c.dest, line = m[1], m[2]
			}
			words, err := shlexSplit(line)
			if err != nil {
				return die(1, "ValueError: %v", err)
			}
			if len(words) == 0 {
				return die(1, "IndexError: list index out of range")
			}
			if !contains(objCommands, words[0]) {
				return die(100, "Unknown command: %s", strings.Join(words, " "))
			}
			c.args = words
			cmds = append(cmds, c)
		}
	} else {
		if !contains(objCommands, p.pos[0]) {
			return usageError("omero obj", fmt.Sprintf("argument command: invalid choice: '%s'", p.pos[0]))
		}
		if p.get("file") != "" {
			fmt.Fprintf(os.Stderr, "Ignoring %s\n", p.get("file"))
		}
		cmds = append(cmds, txCmd{args: p.pos})
	}
	// Every action joins the session and commits on its own, as the real CLI does: the batch runs
	// under one lock of the state, and an action that fails changes nothing (runAction checks
	// everything before it changes the state) and ends the batch; what ran before stays.
	readOnly := true
	for _, c := range cmds {
		readOnly = readOnly && (c.args[0] == "get" || c.args[0] == "map-get" || c.args[0] == "ext-info-get")
	}
	vars := map[string]string{}
	var rows []string
	var result error
	batch := func(st *world.State) {
		for _, c := range cmds {
			s, err := connect(st, p, sessionDir(p), connOpts{})
			if err != nil {
				result = err
				return
			}
			out, err := runAction(st, s, c, vars, rows)
			if err != nil {
				result = err
				return
			}
			rows = append(rows, out)
			if c.dest != "" {
				vars[c.dest] = out
			}
		}
	}
	if err := update(statePath, p, readOnly, batch); err != nil {
		return err
	}
	for _, out := range rows {
		fmt.Println(out)
	}
	return result
}

// readLines splits like Python's universal newlines: \n, \r\n and \r all end a line.
func readLines(r io.Reader) ([]string, error) {
	b, err := io.ReadAll(bufio.NewReader(r))
	if err != nil {
		return nil, err
	}
	s := strings.ReplaceAll(string(b), "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	return strings.Split(s, "\n"), nil
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// field is one "name=value" or "name@=ref" argument, with its value resolved.
type field struct{ name, value string }

func parseFields(args []string, vars map[string]string, rows []string) ([]field, error) {
	var out []field
	for _, a := range args {
		m := fieldRE.FindStringSubmatch(a)
		if m == nil {
			return nil, die(1, "Exception: Unparseable argument: %s", a)
		}
		v := m[3]
		if i := strings.IndexByte(v, '\n'); i >= 0 {
			v = v[:i] // Python's "." does not match a newline
		}
		if m[2] == "@" {
			switch {
			case regexp.MustCompile(`^\d+$`).MatchString(v):
				n, _ := strconv.Atoi(v)
				if n >= len(rows) {
					return nil, die(1, "IndexError: list index out of range")
				}
				v = rows[n]
			case regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9]*$`).MatchString(v):
				r, ok := vars[v]
				if !ok {
					return nil, die(1, "KeyError: '%s'", v)
				}
				v = r
			default:
				return nil, die(1, "Exception: Invalid reference: %s", v)
			}
		}
		out = append(out, field{m[1], v})
	}
	return out, nil
}

// objGroup returns the group of an object, and whether it exists.
func objGroup(st *world.State, kind string, id int64) (int64, bool) {
	switch kind {
	case "Image":
		return groupOf(st.Images, id, func(x world.Image) (int64, int64) { return x.ID, x.GroupID })
	case "Plate":
		return groupOf(st.Plates, id, func(x world.Plate) (int64, int64) { return x.ID, x.GroupID })
	case "Fileset":
		return groupOf(st.Filesets, id, func(x world.Fileset) (int64, int64) { return x.ID, x.GroupID })
	case "MapAnnotation":
		return groupOf(st.Annotations, id, func(x world.Annotation) (int64, int64) { return x.ID, x.GroupID })
	case "Dataset":
		return groupOf(st.Datasets, id, func(x world.Container) (int64, int64) { return x.ID, x.GroupID })
	case "Screen":
		return groupOf(st.Screens, id, func(x world.Container) (int64, int64) { return x.ID, x.GroupID })
	}
	return 0, false
}

// groupOf finds the object with id in xs and returns its group.
func groupOf[T any](xs []T, id int64, idGroup func(T) (int64, int64)) (int64, bool) {
	for _, x := range xs {
		if xid, gid := idGroup(x); xid == id {
			return gid, true
		}
	}
	return 0, false
}

var knownClasses = []string{"Image", "Plate", "Fileset", "MapAnnotation", "Dataset", "Screen",
	"ImageAnnotationLink", "PlateAnnotationLink", "DatasetImageLink"}

func runAction(st *world.State, s *world.Session, c txCmd, vars map[string]string, rows []string) (string, error) {
	action := c.args[0]
	if len(c.args) < 2 {
		return "", die(102, "No object argument provided. Use e.g. 'Image:123'")
	}
	kind, idText, _ := strings.Cut(c.args[1], ":")
	if !contains(knownClasses, kind) {
		return "", die(102, "No class named '%sI'", kind)
	}
	var id int64
	if idText != "" {
		n, err := strconv.ParseInt(idText, 10, 64)
		if err == nil {
			id = n
		}
	}
	if st.Failure.FailObj {
		return "", die(336, "Failed to update %s - SecurityViolation: the double was told to refuse obj calls", c.args[1])
	}
	if action == "new" {
		return objNew(st, s, kind, c.args[2:], vars, rows)
	}
	if id == 0 {
		return "", die(334, "No id given for %s. Use e.g. '%s:123'", kind, kind)
	}
	gid, ok := objGroup(st, kind, id)
	if !ok {
		return "", die(334, "No object found: %s:%d", kind, id)
	}
	proxy := fmt.Sprintf("%s:%d", kind, id)
	inGroup := gid == s.GroupID
	switch action {
	case "update":
		fields, err := parseFields(c.args[2:], vars, rows)
		if err != nil {
			return "", err
		}
		if !inGroup {
			return "", die(336, "Failed to update %s - SecurityViolation: object is in another group", proxy)
		}
		for _, f := range fields {
			if f.name != "name" || (kind != "Image" && kind != "Plate") {
				return "", die(1, "AttributeError: '%sI' object has no attribute 'set%s'", kind, capitalize(f.name))
			}
		}
		for _, f := range fields {
			setName(st, kind, id, f.value)
		}
		return proxy, nil
	case "map-set":
		if kind != "MapAnnotation" {
			return "", die(1, "AttributeError: '%sI' object has no attribute 'mapValue'", kind)
		}
		if n := len(c.args); n != 4 && n != 5 {
			return "", die(335, "usage: map-set OBJ FIELD KEY [VALUE]")
		}
		if c.args[2] != "mapValue" {
			return "", die(1, "AttributeError: 'MapAnnotationI' object has no attribute '%s'", c.args[2])
		}
		if !inGroup {
			return "", die(336, "Failed to update %s - SecurityViolation: object is in another group", proxy)
		}
		a := annotation(st, id)
		key := c.args[3]
		if len(c.args) == 4 {
			kept := a.Values[:0]
			for _, kv := range a.Values {
				if kv[0] != key {
					kept = append(kept, kv)
				}
			}
			a.Values = kept
			return proxy, nil
		}
		for i := range a.Values {
			if a.Values[i][0] == key {
				a.Values[i][1] = c.args[4]
				return proxy, nil
			}
		}
		a.Values = append(a.Values, [2]string{key, c.args[4]})
		return proxy, nil
	case "get":
		if n := len(c.args); n != 2 && n != 3 {
			return "", die(335, "usage: get OBJ [FIELD]")
		}
		if !inGroup {
			return "", die(334, "No object found: %s", proxy)
		}
		if len(c.args) == 2 {
			return "id=" + idText, nil
		}
		return getField(st, kind, id, c.args[2])
	case "map-get":
		if len(c.args) != 4 || kind != "MapAnnotation" || c.args[2] != "mapValue" {
			return "", die(335, "usage: map-get OBJ FIELD KEY")
		}
		if !inGroup {
			return "", die(334, "No object found: %s", proxy)
		}
		for _, kv := range annotation(st, id).Values {
			if kv[0] == c.args[3] {
				return kv[1], nil
			}
		}
		return "None", nil
	case "ext-info-get":
		return extInfoGet(st, kind, id, c.args)
	default:
		return "", die(100, "Unknown command: %s (not supported by the double)", action)
	}
}

// extInfoGet is omero-py ≥ 5.21 plugins/obj.py ExtInfoGetTxAction: the object is read in any
// group (omero.group -1); without an ExternalInfo it dies 346; with FIELD it prints that field,
// else every field as "name=value" lines (and, as ctx.out adds a newline, an empty line).
func extInfoGet(st *world.State, kind string, id int64, args []string) (string, error) {
	var info *world.ExtInfo
	if kind == "Image" {
		for _, img := range st.Images {
			if img.ID == id {
				info = img.ExtInfo
			}
		}
	}
	if info == nil {
		return "", die(346, "No ExternalInfo found: %s:%d", kind, id)
	}
	fields := []string{"id", "entityId", "entityType", "lsid", "uuid"}
	values := map[string]string{"id": strconv.FormatInt(id, 10), "entityId": strconv.FormatInt(info.EntityID, 10),
		"entityType": info.EntityType, "lsid": info.Lsid, "uuid": ""}
	if len(args) == 3 {
		if !contains(fields, args[2]) {
			return "", die(335, "usage: ext-info-get OBJ [%s]", strings.Join(fields, "|"))
		}
		return values[args[2]], nil
	}
	var b strings.Builder
	for _, f := range fields {
		b.WriteString(f + "=" + values[f] + "\n")
	}
	return b.String(), nil
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func annotation(st *world.State, id int64) *world.Annotation {
	for i := range st.Annotations {
		if st.Annotations[i].ID == id {
			return &st.Annotations[i]
		}
	}
	return nil
}

func setName(st *world.State, kind string, id int64, name string) {
	switch kind {
	case "Image":
		for i := range st.Images {
			if st.Images[i].ID == id {
				st.Images[i].Name = name
			}
		}
	case "Plate":
		for i := range st.Plates {
			if st.Plates[i].ID == id {
				st.Plates[i].Name = name
			}
		}
	}
}

func getField(st *world.State, kind string, id int64, name string) (string, error) {
	unknown := die(336, "Unknown field '%s' for %s:%d", name, kind, id)
	switch kind {
	case "Fileset":
		for _, f := range st.Filesets {
			if f.ID == id && name == "templatePrefix" {
				return f.TemplatePrefix, nil
			}
		}
	case "Image":
		for _, x := range st.Images {
			if x.ID == id {
				switch name {
				case "name":
					return x.Name, nil
				case "fileset":
					return fmt.Sprintf("Fileset:%d", x.FilesetID), nil
				}
			}
		}
	case "Plate":
		for _, x := range st.Plates {
			if x.ID == id && name == "name" {
				return x.Name, nil
			}
		}
	case "MapAnnotation":
		a := annotation(st, id)
		switch name {
		case "ns":
			return a.NS, nil
		case "mapValue":
			parts := make([]string, len(a.Values))
			for i, kv := range a.Values {
				parts[i] = "(" + kv[0] + "," + kv[1] + ")"
			}
			return strings.Join(parts, ","), nil
		}
	}
	return "", unknown
}

func objNew(st *world.State, s *world.Session, kind string, args []string, vars map[string]string, rows []string) (string, error) {
	fields, err := parseFields(args, vars, rows)
	if err != nil {
		return "", err
	}
	values := map[string]string{}
	switch kind {
	case "MapAnnotation":
		for _, f := range fields {
			if f.name != "ns" && f.name != "name" && f.name != "description" {
				return "", die(1, "AttributeError: 'MapAnnotationI' object has no attribute 'set%s'", capitalize(f.name))
			}
			values[f.name] = f.value
		}
		a := world.Annotation{ID: st.NewID(), NS: values["ns"], GroupID: s.GroupID, Values: [][2]string{}}
		st.Annotations = append(st.Annotations, a)
		return fmt.Sprintf("MapAnnotation:%d", a.ID), nil
	case "ImageAnnotationLink", "PlateAnnotationLink":
		parentKind := strings.TrimSuffix(kind, "AnnotationLink")
		for _, f := range fields {
			if f.name != "parent" && f.name != "child" {
				return "", die(1, "AttributeError: '%sI' object has no attribute 'set%s'", kind, capitalize(f.name))
			}
			values[f.name] = f.value
		}
		var missing []string
		for _, n := range []string{"parent", "child"} {
			if _, ok := values[n]; !ok {
				missing = append(missing, n)
			}
		}
		if len(missing) > 0 {
			return "", die(103, "required arguments: %s", strings.Join(missing, ", "))
		}
		pm := proxyRE.FindStringSubmatch(values["parent"])
		cm := proxyRE.FindStringSubmatch(values["child"])
		if pm == nil || pm[1] != parentKind {
			return "", die(333, "ClientError: parent must be a %s, not %q", parentKind, values["parent"])
		}
		if cm == nil || cm[1] != "MapAnnotation" {
			return "", die(333, "ClientError: child must be an annotation such as MapAnnotation:1, not %q", values["child"])
		}
		for _, pc := range [][]string{pm, cm} {
			id, _ := strconv.ParseInt(pc[2], 10, 64)
			gid, ok := objGroup(st, pc[1], id)
			if !ok {
				return "", die(336, "Failed to create %s - ValidationException: %s:%d does not exist", kind, pc[1], id)
			}
			if gid != s.GroupID {
				return "", die(336, "Failed to create %s - SecurityViolation: %s:%d is in another group", kind, pc[1], id)
			}
		}
		for _, l := range st.Links {
			if l.Kind == kind && l.Parent == values["parent"] && l.Child == values["child"] {
				return "", die(336, "Failed to create %s - ValidationException: duplicate link", kind)
			}
		}
		l := world.Link{ID: st.NewID(), Kind: kind, Parent: values["parent"], Child: values["child"], GroupID: s.GroupID}
		st.Links = append(st.Links, l)
		return fmt.Sprintf("%s:%d", kind, l.ID), nil
	case "Dataset":
		for _, f := range fields {
			if f.name != "name" && f.name != "description" {
				return "", die(1, "AttributeError: 'DatasetI' object has no attribute 'set%s'", capitalize(f.name))
			}
			values[f.name] = f.value
		}
		if values["name"] == "" {
			return "", die(336, "Failed to create Dataset - ValidationException: name is required")
		}
		d := world.Container{ID: st.NewID(), Name: values["name"], GroupID: s.GroupID, OwnerID: s.UserID}
		st.Datasets = append(st.Datasets, d)
		return fmt.Sprintf("Dataset:%d", d.ID), nil
	case "DatasetImageLink":
		// An Image is in one Dataset in the double's world (Image.DatasetID).
		for _, f := range fields {
			if f.name != "parent" && f.name != "child" {
				return "", die(1, "AttributeError: 'DatasetImageLinkI' object has no attribute 'set%s'", capitalize(f.name))
			}
			values[f.name] = f.value
		}
		pm, cm := proxyRE.FindStringSubmatch(values["parent"]), proxyRE.FindStringSubmatch(values["child"])
		if pm == nil || pm[1] != "Dataset" || cm == nil || cm[1] != "Image" {
			return "", die(333, "ClientError: want parent=Dataset:ID child=Image:ID, not %q, %q", values["parent"], values["child"])
		}
		did, _ := strconv.ParseInt(pm[2], 10, 64)
		iid, _ := strconv.ParseInt(cm[2], 10, 64)
		for _, pc := range []struct {
			kind string
			id   int64
		}{{"Dataset", did}, {"Image", iid}} {
			gid, ok := objGroup(st, pc.kind, pc.id)
			if !ok {
				return "", die(336, "Failed to create %s - ValidationException: %s:%d does not exist", kind, pc.kind, pc.id)
			}
			if gid != s.GroupID {
				return "", die(336, "Failed to create %s - SecurityViolation: %s:%d is in another group", kind, pc.kind, pc.id)
			}
		}
		for i := range st.Images {
			if st.Images[i].ID == iid {
				if st.Images[i].DatasetID == did {
					return "", die(336, "Failed to create %s - ValidationException: duplicate link", kind)
				}
				st.Images[i].DatasetID = did
			}
		}
		id := st.NewID()
		return fmt.Sprintf("%s:%d", kind, id), nil
	default:
		return "", die(103, "required arguments: the double cannot create a %s", kind)
	}
}

// shlexSplit splits a line like Python's shlex.split (POSIX mode, no comments).
func shlexSplit(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	const (
		plain = iota
		single
		double
	)
	state := plain
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch state {
		case single:
			if r == '\'' {
				state = plain
			} else {
				cur.WriteRune(r)
			}
		case double:
			switch {
			case r == '"':
				state = plain
			case r == '\\' && i+1 < len(rs) && (rs[i+1] == '"' || rs[i+1] == '\\'):
				i++
				cur.WriteRune(rs[i])
			case r == '\\' && i+1 >= len(rs):
				//lint:ignore ST1005 Python's shlex raises these very words, and the CLI prints them
				return nil, errors.New("No escaped character")
			default:
				cur.WriteRune(r)
			}
		default:
			switch {
			case r == ' ' || r == '\t' || r == '\n' || r == '\r':
				if inWord {
					words = append(words, cur.String())
					cur.Reset()
					inWord = false
				}
			case r == '\'':
				state, inWord = single, true
			case r == '"':
				state, inWord = double, true
			case r == '\\':
				if i+1 >= len(rs) {
					//lint:ignore ST1005 Python's shlex raises these very words, and the CLI prints them
					return nil, errors.New("No escaped character")
				}
				i++
				cur.WriteRune(rs[i])
				inWord = true
			default:
				cur.WriteRune(r)
				inWord = true
			}
		}
	}
	if state != plain {
		//lint:ignore ST1005 Python's shlex raises these very words, and the CLI prints them
		return nil, errors.New("No closing quotation")
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
