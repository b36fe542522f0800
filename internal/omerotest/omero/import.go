package main

import (
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/omero-adi/omero-adi/internal/omerotest/world"
)

var importSpecs = append(append([]optSpec{}, loginSpecs...),
	optSpec{names: []string{"--transfer"}, dest: "transfer", value: true, eqOnly: true,
		choices: []string{"ln_s", "ln", "cp", "upload"}},
	optSpec{names: []string{"--output"}, dest: "output", value: true, choices: []string{"ids", "legacy", "yaml"}},
	optSpec{names: []string{"--file"}, dest: "file", value: true, optional: true},
	optSpec{names: []string{"--errs"}, dest: "errs", value: true, optional: true},
	optSpec{names: []string{"--logprefix"}, dest: "logprefix", value: true, optional: true},
	optSpec{names: []string{"--parallel-upload"}, dest: "parallel_upload", value: true, isInt: true},
	optSpec{names: []string{"--parallel-fileset"}, dest: "parallel_fileset", value: true, isInt: true},
	optSpec{names: []string{"--skip"}, dest: "skip", value: true,
		choices: []string{"all", "checksum", "minmax", "thumbnails", "upgrade"}},
	optSpec{names: []string{"--depth"}, dest: "depth", value: true, isInt: true},
	optSpec{names: []string{"-d"}, dest: "d", value: true},
	optSpec{names: []string{"-r"}, dest: "r", value: true},
	optSpec{names: []string{"-T", "--target"}, dest: "target", value: true},
	optSpec{names: []string{"-n", "--name"}, dest: "name", value: true},
	optSpec{names: []string{"-x", "--description"}, dest: "description", value: true},
	optSpec{names: []string{"-c"}, dest: "continue"},
)

// candidate is one fileset to import: its files, the folder they are kept relative to, its name.
type candidate struct {
	files []string
	root  string
	name  string
}

// target is where an import goes.
type importTarget struct {
	kind    string // Dataset, Screen or "" (orphaned)
	id      int64
	name    string // -T …:name:NAME
	created bool   // the name target did not exist: this import created it
}

func cmdImport(statePath string, args []string) error {
	p, err := parseArgs("omero import", importSpecs, args)
	if err != nil {
		return err
	}
	tgt, err := parseImportTarget(p)
	if err != nil {
		return err
	}
	depth := 4
	if p.get("depth") != "" {
		depth, _ = strconv.Atoi(p.get("depth"))
	}
	// Login happens first in the Python wrapper, before the Java importer runs.
	var sess world.Session
	if err := withSession(statePath, p, connOpts{}, func(_ *world.State, s *world.Session) error {
		sess = *s
		return nil
	}); err != nil {
		return err
	}

	out, errw, closeLogs, err := openLogs(p)
	if err != nil {
		return err
	}
	defer closeLogs()
	logf := func(level, logger, format string, a ...any) {
		// The logback pattern of the CLI's logback-cli.xml: %date %-5level [%40.40logger{39}] (%10.10thread) %msg%n
		fmt.Fprintf(errw, "%s %-5s [%40.40s] (%10.10s) %s\n", time.Now().Format("2006-01-02 15:04:05,000"), level, logger, "main", fmt.Sprintf(format, a...))
	}
	start := time.Now()
	summary := func(files, filesets, plates, images, errs int) {
		fmt.Fprint(errw, importSummary(files, filesets, plates, images, errs, time.Since(start)))
	}

	if len(p.pos) == 0 {
		return die(1, "usage: importer-cli [OPTION]... [path [path ...]]... (no path given)")
	}
	paths := make([]string, 0, len(p.pos))
	for _, raw := range p.pos {
		abs, err := filepath.Abs(raw)
		if err != nil {
			return die(1, "cannot resolve %s: %v", raw, err)
		}
		if _, err := os.Stat(abs); err != nil {
			logf("ERROR", loggerCLI, "File not found: %s", abs)
			summary(0, 0, 0, 0, 1)
			return die(1, "")
		}
		paths = append(paths, abs)
	}

	rec := world.Import{
		Paths: paths, Transfer: p.get("transfer"), Skip: p.all("skip"), Depth: depth,
		Argv: append([]string(nil), args...),
	}
	rec.ParallelUpload, _ = strconv.Atoi(p.get("parallel_upload"))
	rec.ParallelFileset, _ = strconv.Atoi(p.get("parallel_fileset"))
	if rec.Transfer == "" {
		rec.Transfer = "upload"
	}

	// Resolve the target inside the session's group and apply the switches that end early.
	var fail world.Failure
	var userName string
	var userID int64
	err = world.Update(statePath, func(st *world.State) error {
		fail = st.Failure
		u := st.UserByID(sess.UserID)
		g := st.GroupByID(sess.GroupID)
		userName, userID = u.Name, u.ID
		rec.User, rec.Group = u.Name, g.Name
		if err := resolveTarget(st, &tgt, &sess, g); err != nil {
			logf("ERROR", loggerCLI, "%s", err.Error())
			summary(0, 0, 0, 0, 1)
			return die(2, "")
		}
		if tgt.kind != "" {
			rec.Target = fmt.Sprintf("%s:%d", tgt.kind, tgt.id)
		}
		return nil
	})
	if err != nil {
		return err
	}

	repo := os.Getenv("OMERO_DOUBLE_MANAGED_REPO")
	if rec.Transfer == "ln_s" {
		if err := checkRepoWritable(repo); err != nil {
			// The importer logs the cause, then the exception's stack trace: the hint sits well above
			// the end of the --errs file.
			logf("ERROR", loggerCLI, "Check failed: %v. You likely do not have access to the ManagedRepository for in-place import.", err)
			fmt.Fprintln(errw, "java.lang.RuntimeException: in-place import check failed")
			for i := 0; i < 60; i++ {
				fmt.Fprintf(errw, "\tat ome.formats.importer.transfers.double.Frame%d.call(Frame%d.java:%d)\n", i, i, 100+i)
			}
			summary(0, 0, 0, 0, 1)
			return die(2, "")
		}
	} else if repo == "" {
		return errors.New("OMERO_DOUBLE_MANAGED_REPO is not set")
	}

	if fail.Hang {
		return hang(statePath)
	}
	var found []candidate
	for _, pth := range paths {
		found = append(found, findCandidates(pth, depth)...)
	}
	// ImportCandidates: a file that fails while candidates are scanned is logged by the error
	// handler, counted as an error and dropped; the run goes on (and ends 0 if nothing else fails).
	var cands []candidate
	var scanned []int // each candidate's number among those found
	errs, total := 0, 0
	for i, c := range found {
		total += len(c.files)
		if fail.NoImports || fail.ScanFails(i) {
			errs++
			logf("ERROR", loggerErrors, "FILE_EXCEPTION: %s", c.files[0])
			fmt.Fprintf(errw, "loci.formats.FormatException: the double was told to fail file %d at scan time\n\tat loci.formats.FormatReader.setId(FormatReader.java:1)\n", i)
			continue
		}
		cands = append(cands, c)
		scanned = append(scanned, i)
	}
	logf("INFO", loggerCandidates, "%d file(s) parsed into %d group(s) with %d call(s) to setId in 1ms. (2ms total) [0 unknowns]", total, len(cands), len(found))
	if len(cands) == 0 {
		if errs > 0 {
			// CommandLineImporter.start: no candidates after errors ends 0, with the summary.
			fmt.Fprintln(errw, "No imports due to errors!")
			summary(0, 0, 0, 0, errs)
			rec.ExitCode = 0
			return saveImport(statePath, rec)
		}
		logf("ERROR", loggerCLI, "No imports found")
		rec.ExitCode = 1
		if err := saveImport(statePath, rec); err != nil {
			return err
		}
		return die(1, "No imports found")
	}

	// ImportLibrary.importCandidates: a failing fileset ends the run with exit 2 (the filesets
	// after it are never tried), unless -c, which goes on and ends 0; the summary counts it.
	files, images, nplates, done := 0, 0, 0, 0
	for k, c := range cands {
		if fail.ImportFails(scanned[k]) || (fail.FailImport && k >= fail.FailImportAfter) {
			errs++
			logf("ERROR", loggerErrors, "INTERNAL_EXCEPTION: %s", c.files[0])
			fmt.Fprintf(errw, "java.lang.RuntimeException: Failure response on import!\nCategory: ::omero::grid::ImportRequest\nName: the double was told to fail file %d\n", scanned[k])
			logf("ERROR", loggerLibrary, "Error on import")
			if !p.has("continue") {
				logf("INFO", loggerLibrary, "Exiting on error")
				summary(files, done, nplates, images, errs)
				rec.ExitCode = 2
				if err := saveImport(statePath, rec); err != nil {
					return err
				}
				return die(2, "")
			}
			logf("INFO", loggerLibrary, "Continuing after error")
			continue
		}
		if fail.ImportDelay > 0 {
			time.Sleep(fail.ImportDelay)
		}
		logf("INFO", loggerMonitor, "FILESET_UPLOAD_PREPARATION")
		var fs world.Fileset
		var imgs, plates []int64
		err := world.Update(statePath, func(st *world.State) error {
			t := tgt
			if t.created && done > 0 && done < rec.ParallelFileset {
				// The importer resolves a name target per fileset: the first --parallel-fileset
				// filesets run at once, each misses the dataset the others are creating and
				// creates its own of that name.
				t.id = newContainer(st, t.kind, t.name, sess.GroupID, sess.UserID)
			}
			var err error
			fs, imgs, plates, err = createFileset(st, c, repo, rec.Transfer, userName, userID, sess.GroupID, t)
			return err
		})
		if err != nil {
			errs++
			logf("ERROR", loggerLibrary, "Error on import: %v", err)
			summary(files, done, nplates, images, errs)
			rec.ExitCode = 2
			if err := saveImport(statePath, rec); err != nil {
				return err
			}
			return die(2, "")
		}
		done++
		files += len(c.files)
		images += len(imgs)
		nplates += len(plates)
		rec.Filesets = append(rec.Filesets, fs.ID)
		rec.Prefixes = append(rec.Prefixes, fs.TemplatePrefix)
		rec.Images = append(rec.Images, imgs...)
		rec.Plates = append(rec.Plates, plates...)
		writeResult(out, p.get("output"), fs.ID, imgs, plates)
		logf("INFO", loggerMonitor, "IMPORT_DONE")
	}
	summary(files, done, nplates, images, errs)
	return saveImport(statePath, rec)
}

// Loggers of the Java importer whose lines the double writes.
const (
	loggerCLI        = "o.f.importer.cli.CommandLineImporter" // as logback abbreviates it to 39 characters
	loggerCandidates = "ome.formats.importer.ImportCandidates"
	loggerErrors     = "ome.formats.importer.cli.ErrorHandler"
	loggerLibrary    = "ome.formats.importer.ImportLibrary"
	loggerMonitor    = "o.f.importer.cli.LoggingImportMonitor"
)

// importSummary is the closing summary as LoggingImportMonitor.ImportSummary.report prints it:
// each count singular when it is 1, the plates only when some were created, the time as
// DurationFormatUtils.formatDurationHMS writes it (H:mm:ss.SSS).
func importSummary(files, filesets, plates, images, errs int, took time.Duration) string {
	count := func(n int, name string) string {
		if n != 1 {
			name += "s"
		}
		return fmt.Sprintf("%d %s", n, name)
	}
	created := count(filesets, "fileset")
	if plates != 0 {
		created += ", " + count(plates, "plate")
	}
	return fmt.Sprintf("\n==> Summary\n%s uploaded, %s created, %s imported, %s in %s\n",
		count(files, "file"), created, count(images, "image"), count(errs, "error"), fmtDuration(took))
}

func parseImportTarget(p *parsed) (importTarget, error) {
	var t importTarget
	n := 0
	for _, k := range []string{"d", "r", "target"} {
		if p.has(k) {
			n++
		}
	}
	if n > 1 {
		return t, die(1, "Only one of -d, -r and -T may be given")
	}
	parseID := func(flag, v string) (int64, error) {
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil || id <= 0 {
			return 0, die(1, "Invalid %s value: %s", flag, v)
		}
		return id, nil
	}
	var err error
	switch {
	case p.has("d"):
		t.kind = "Dataset"
		t.id, err = parseID("-d", p.get("d"))
	case p.has("r"):
		t.kind = "Screen"
		t.id, err = parseID("-r", p.get("r"))
	case p.has("target"):
		v := p.get("target")
		parts := strings.SplitN(v, ":", 3)
		if len(parts) < 2 || (parts[0] != "Dataset" && parts[0] != "Screen") {
			return t, die(1, "Invalid target: %s (use Dataset:ID, Dataset:name:NAME, Screen:ID or Screen:name:NAME)", v)
		}
		t.kind = parts[0]
		switch {
		case len(parts) == 2:
			t.id, err = parseID("-T", parts[1])
		case parts[1] == "id":
			t.id, err = parseID("-T", parts[2])
		case parts[1] == "name" && parts[2] != "":
			t.name = parts[2]
		default:
			return t, die(1, "Invalid target: %s (use Dataset:ID, Dataset:name:NAME, Screen:ID or Screen:name:NAME)", v)
		}
	}
	return t, err
}

// newContainer creates a Dataset or Screen and returns its id.
func newContainer(st *world.State, kind, name string, gid, uid int64) int64 {
	c := world.Container{ID: st.NewID(), Name: name, GroupID: gid, OwnerID: uid}
	if kind == "Screen" {
		st.Screens = append(st.Screens, c)
	} else {
		st.Datasets = append(st.Datasets, c)
	}
	return c.ID
}

func resolveTarget(st *world.State, t *importTarget, s *world.Session, g *world.Group) error {
	if t.kind == "" {
		return nil
	}
	list := &st.Datasets
	if t.kind == "Screen" {
		list = &st.Screens
	}
	if t.name != "" {
		var found *world.Container
		for i := range *list {
			c := &(*list)[i]
			if c.Name == t.name && c.GroupID == s.GroupID && (found == nil || c.ID > found.ID) {
				found = c
			}
		}
		if found == nil {
			t.id, t.created = newContainer(st, t.kind, t.name, s.GroupID, s.UserID), true
			return nil
		}
		t.id = found.ID
		return nil
	}
	for _, c := range *list {
		if c.ID == t.id {
			if c.GroupID != s.GroupID {
				return fmt.Errorf("%s:%d is not in the current group %s (id=%d): SecurityViolation", t.kind, t.id, g.Name, g.ID)
			}
			return nil
		}
	}
	return fmt.Errorf("%s:%d not found: the target does not exist", t.kind, t.id)
}

func openLogs(p *parsed) (out, errw io.Writer, closeAll func(), err error) {
	out, errw = os.Stdout, os.Stderr
	var files []*os.File
	closeAll = func() {
		for _, f := range files {
			_ = f.Close()
		}
	}
	open := func(name string) (*os.File, error) {
		if pre := p.get("logprefix"); pre != "" {
			name = filepath.Join(pre, name)
		}
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			return nil, err
		}
		f, err := os.Create(name)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
		return f, nil
	}
	if v := p.get("file"); v != "" {
		f, err := open(v)
		if err != nil {
			closeAll()
			return nil, nil, nil, die(1, "cannot open --file %s: %v", v, err)
		}
		out = f
	}
	if v := p.get("errs"); v != "" {
		f, err := open(v)
		if err != nil {
			closeAll()
			return nil, nil, nil, die(1, "cannot open --errs %s: %v", v, err)
		}
		errw = f
	}
	return out, errw, closeAll, nil
}

func fmtDuration(d time.Duration) string {
	ms := d.Milliseconds()
	return fmt.Sprintf("%d:%02d:%02d.%03d", ms/3600000, ms/60000%60, ms/1000%60, ms%1000)
}

func checkRepoWritable(repo string) error {
	if repo == "" {
		return errors.New("no ManagedRepository configured")
	}
	fi, err := os.Stat(repo)
	if err != nil {
		return fmt.Errorf("cannot see %s: %v", repo, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", repo)
	}
	f, err := os.CreateTemp(repo, ".check-*")
	if err != nil {
		return fmt.Errorf("cannot create a file in %s: %v", repo, err)
	}
	_ = f.Close()
	return os.Remove(f.Name())
}

// hang starts a child in the same process group, records both pids and sleeps until killed.
func hang(statePath string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	child := exec.Command(self, "__hang")
	if err := child.Start(); err != nil {
		return err
	}
	if err := world.Update(statePath, func(st *world.State) error {
		st.HangPIDs = append(st.HangPIDs, os.Getpid(), child.Process.Pid)
		return nil
	}); err != nil {
		return err
	}
	_ = child.Wait()
	time.Sleep(time.Duration(1<<62 - 1))
	return nil
}

// saveImport records the import in the journal (no lock needed: see world.Append).
func saveImport(statePath string, rec world.Import) error {
	return world.Append(statePath, nil, []world.Import{rec})
}

func isZarr(dir string) bool {
	if strings.HasSuffix(dir, ".zarr") {
		return true
	}
	for _, n := range []string{".zattrs", "zarr.json"} {
		if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
			return true
		}
	}
	return false
}

func allFiles(dir string) []string {
	var files []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	sort.Strings(files)
	return files
}

// findCandidates groups what is below path into filesets (see the package documentation).
func findCandidates(path string, depth int) []candidate {
	fi, err := os.Stat(path)
	if err != nil {
		return nil
	}
	if !fi.IsDir() {
		return []candidate{{files: []string{path}, root: filepath.Dir(path), name: filepath.Base(path)}}
	}
	if isZarr(path) {
		if files := allFiles(path); len(files) > 0 {
			return []candidate{{files: files, root: filepath.Dir(path), name: filepath.Base(path)}}
		}
		return nil
	}
	var out []candidate
	var walk func(dir string, level int)
	walk = func(dir string, level int) {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				continue
			}
			p := filepath.Join(dir, e.Name())
			st, err := os.Stat(p)
			if err != nil {
				continue
			}
			switch {
			case !st.IsDir():
				out = append(out, candidate{files: []string{p}, root: dir, name: e.Name()})
			case isZarr(p):
				if files := allFiles(p); len(files) > 0 {
					out = append(out, candidate{files: files, root: dir, name: e.Name()})
				}
			case level < depth:
				walk(p, level+1)
			}
		}
	}
	walk(path, 1)
	return out
}

var seriesRE = regexp.MustCompile(`__series_(\d+)`)

func createFileset(st *world.State, c candidate, repo, transfer, user string, uid, gid int64, t importTarget) (world.Fileset, []int64, []int64, error) {
	now := time.Now()
	var prefix string
	for {
		prefix = fmt.Sprintf("%s_%d/%s/%s/%s/", user, uid, now.Format("2006-01"), now.Format("02"), now.Format("15-04-05.000"))
		taken := false
		for _, f := range st.Filesets {
			taken = taken || f.TemplatePrefix == prefix
		}
		if _, err := os.Lstat(filepath.Join(repo, prefix)); err == nil {
			taken = true
		}
		if !taken {
			break
		}
		now = now.Add(time.Millisecond)
	}
	fs := world.Fileset{ID: st.NewID(), GroupID: gid, OwnerID: uid, TemplatePrefix: prefix, Transfer: transferClass[transfer]}
	for _, f := range c.files {
		rel, err := filepath.Rel(c.root, f)
		if err != nil {
			return fs, nil, nil, err
		}
		dst := filepath.Join(repo, prefix, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fs, nil, nil, err
		}
		switch transfer {
		case "ln_s":
			err = os.Symlink(f, dst)
		case "ln":
			err = os.Link(f, dst)
		default:
			err = copyFile(f, dst)
		}
		if err != nil {
			return fs, nil, nil, err
		}
		size, hash, err := sha1File(f)
		if err != nil {
			return fs, nil, nil, err
		}
		fs.ClientPaths = append(fs.ClientPaths, f)
		fs.RepoPaths = append(fs.RepoPaths, prefix+filepath.ToSlash(rel))
		fs.Sizes, fs.Hashes = append(fs.Sizes, size), append(fs.Hashes, hash)
	}
	st.Filesets = append(st.Filesets, fs)
	n := 1
	if m := seriesRE.FindStringSubmatch(c.name); m != nil {
		n, _ = strconv.Atoi(m[1])
		n = max(1, min(n, 1000))
	}
	var plateID int64
	var plates []int64
	if t.kind == "Screen" {
		plateID = st.NewID()
		st.Plates = append(st.Plates, world.Plate{ID: plateID, Name: c.name, FilesetID: fs.ID, GroupID: gid, ScreenID: t.id})
		plates = []int64{plateID}
	}
	var imgs []int64
	for k := 0; k < n; k++ {
		name := c.name
		if n > 1 {
			name = fmt.Sprintf("%s [%d]", c.name, k)
		}
		img := world.Image{ID: st.NewID(), Name: name, FilesetID: fs.ID, GroupID: gid, PlateID: plateID}
		if t.kind == "Dataset" {
			img.DatasetID = t.id
		}
		st.Images = append(st.Images, img)
		imgs = append(imgs, img.ID)
	}
	return fs, imgs, plates, nil
}

// transferClass is the class the importer names in a fileset's file-transfer annotation
// (ome/omero-blitz ImportContainer.fillData records it for every transfer but the upload).
var transferClass = map[string]string{
	"ln_s": "ome.formats.importer.transfers.SymlinkFileTransfer",
	"ln":   "ome.formats.importer.transfers.HardlinkFileTransfer",
}

// sha1File is the size and SHA-1 (hex) of a file: the OriginalFile size and hash the importer
// sends for it (hasher SHA1-160, the default checksum algorithm).
func sha1File(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha1.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

func joinIDs(ids []int64, sep string) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.FormatInt(id, 10)
	}
	return strings.Join(s, sep)
}

// writeResult prints one fileset the way the Java importer does (LoggingImportMonitor
// outputYamlResults): with --output yaml a document "- Fileset: N" and then one line per class of
// the other objects, in no fixed order (plates list their Plate first here), else one line.
func writeResult(w io.Writer, output string, fs int64, imgs, plates []int64) {
	if output == "yaml" {
		if len(plates) > 0 {
			fmt.Fprintf(w, "---\n- Fileset: %d\n  Plate: [%s]\n  Image: [%s]\n", fs, joinIDs(plates, ","), joinIDs(imgs, ","))
		} else {
			fmt.Fprintf(w, "---\n- Fileset: %d\n  Image: [%s]\n", fs, joinIDs(imgs, ","))
		}
		return
	}
	if len(plates) > 0 {
		fmt.Fprintf(w, "Plate:%s\n", joinIDs(plates, ","))
		return
	}
	fmt.Fprintf(w, "Image:%s\n", joinIDs(imgs, ","))
}
