package omero

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/order"
)

// OME-Zarr registration goes through the omero-cli-zarr plugin (≥ 0.7; src/omero_zarr/cli.py
// import_cmd, zarr_import.py import_zarr and import_image): `omero zarr [login flags] import URI
// [--target Dataset:ID | --target-by-name NAME]` creates each Image with pixelsService.createImage
// and an ExternalInfo (entityType com.glencoesoftware.ngff:multiscales, entityId 3, lsid the
// multiscales path) through which omero-zarr-pixel-buffer on the server reads the pixels in
// place. It copies nothing and makes no Fileset, so there are no ManagedRepository links. Its
// stdout, per URI: one of "Importing: Image", "Importing: bioformats2raw.layout" or "Plate import
// not yet supported" (then nothing is created, exit 0), then per image "Created Image N" (or, with
// OME/METADATA.ome.xml, "Imported Image: N") and "lsid: PATH", then "Linked to Dataset N" or
// "Target not found".

// ErrNoZarrPlugin: the omero CLI has no zarr subcommand.
var ErrNoZarrPlugin = errors.New("the omero CLI has no zarr plugin")

// ZarrPluginAdvice is what a person does about ErrNoZarrPlugin.
const ZarrPluginAdvice = "install omero-cli-zarr (pip install omero-cli-zarr) on the agent host"

// ZarrEntityType is the ExternalInfo entityType of a registered NGFF image (zarr_import.py
// set_external_info).
const ZarrEntityType = "com.glencoesoftware.ngff:multiscales"

// RegisterRequest is one registration of an order: every Zarr into the same Dataset.
type RegisterRequest struct {
	OrderUUID string
	Target    order.Target // a Dataset, by id (--target Dataset:ID) or by name (--target-by-name NAME)
	Zarrs     []string     // absolute paths of the Zarr folders
}

// Registered is what the registration of one Zarr created.
type Registered struct {
	Path   string
	Kind   string  // what omero-cli-zarr saw: "Image", "bioformats2raw.layout" or "Plate"
	Images []int64 // in output order
	Lsids  []string
	Linked bool // "Linked to Dataset N" for every image
}

// RegisterResult lists each Zarr's registration, in request order; a Zarr after a failure is
// missing.
type RegisterResult struct {
	Zarrs []Registered
}

// Images lists every image created, in output order.
func (r RegisterResult) Images() []int64 {
	var out []int64
	for _, z := range r.Zarrs {
		out = append(out, z.Images...)
	}
	return out
}

// RegisterArgs is the `omero zarr import` line of one Zarr as argv, program first (for dry runs;
// mask the key before showing it).
func (c *Client) RegisterArgs(s *Session, req RegisterRequest, zarr string) []string {
	return append(append([]string{c.cfg.CLI, "zarr"}, c.conn(s)...), zarrImportLine(req.Target, zarr)...)
}

func zarrImportLine(t order.Target, zarr string) []string {
	line := []string{"import", zarr}
	if t.ID > 0 {
		return append(line, "--target", t.Kind+":"+strconv.FormatInt(t.ID, 10))
	}
	return append(line, "--target-by-name", t.Name)
}

func checkRegister(req RegisterRequest) error {
	if req.Target.Kind != order.Dataset {
		return fmt.Errorf("%w: target %s: a Zarr image registers into a Dataset", ErrRequest, req.Target)
	}
	return checkPaths(req.OrderUUID, req.Target, "Zarr", req.Zarrs)
}

// Register registers every Zarr of req in one `omero load` run: `login -k KEY -s HOST -p PORT`,
// then a `zarr import PATH --target …` line per Zarr (the key travels on stdin, never on argv). The
// run's stdout and stderr are kept in the order's cli.<uuid>.logs and .errs. It returns what was
// created, also with an error (the Zarrs registered before a failure). A plate ("Plate import not
// yet supported") is returned with Kind "Plate" and no images, without an error: the caller
// decides. Exit 0 with no image and no plate is ErrNoImport.
func (c *Client) Register(ctx context.Context, s *Session, req RegisterRequest) (RegisterResult, error) {
	if err := checkRegister(req); err != nil {
		return RegisterResult{}, err
	}
	if s == nil || s.Key == "" {
		return RegisterResult{}, fmt.Errorf("%w: registration without a session", ErrRequest)
	}
	if err := os.MkdirAll(c.cfg.LogDir, 0o755); err != nil {
		return RegisterResult{}, fmt.Errorf("create log_dir: %w", err)
	}
	logs, errs := c.LogFiles(req.OrderUUID)
	script := cliLine(append([]string{"login", "-k", s.Key}, c.server()...)) + "\n"
	for _, z := range req.Zarrs {
		script += cliLine(append([]string{"zarr"}, zarrImportLine(req.Target, z)...)) + "\n"
	}
	log := c.log.WithFields(logrus.Fields{"order": req.OrderUUID, "target": req.Target.String(), "zarrs": len(req.Zarrs)})
	log.Info("OMERO Zarr registration started")
	start := time.Now()
	res, attempts, outage, err := c.joined(ctx, log, func() (call, error) {
		return call{args: []string{"load"}, env: []string{"OMERO_SESSIONDIR=" + s.Dir}, stdin: strings.NewReader(script),
			timeout: c.cfg.ImportTimeout, secret: s.Key}, nil
	})
	out := RegisterResult{Zarrs: parseRegister(string(res.stdout), req.Zarrs)}
	if err != nil {
		if errors.Is(err, ErrTimeout) {
			err = fmt.Errorf("%w: the registration did not finish within %s (omero.import_timeout) and was stopped", ErrTimeout, c.cfg.ImportTimeout)
		}
		return out, err
	}
	// What the run printed is kept for people, as an import's logs are.
	_ = os.WriteFile(logs, res.stdout, 0o644)
	_ = os.WriteFile(errs, []byte(res.stderr), 0o644)
	switch {
	case outage:
		return out, fmt.Errorf("register Zarr: %w", c.unreachable(attempts, res))
	case res.code == exitBadKey:
		return out, fmt.Errorf("register Zarr: %w: the session key was rejected (the session expired or was closed)%s", ErrLogin, detail(res))
	case res.code != 0 && noZarrPlugin(res.stderr):
		return out, fmt.Errorf("%w: %s%s", ErrNoZarrPlugin, ZarrPluginAdvice, detail(res))
	case res.code != 0:
		return out, fmt.Errorf("%w: `omero zarr import` exited %d after %d of %d Zarrs%s; see %s", ErrImport, res.code,
			len(out.Zarrs), len(req.Zarrs), detail(res), errs)
	case len(out.Zarrs) != len(req.Zarrs):
		return out, fmt.Errorf("%w: `omero zarr import` reported %d of %d Zarrs; see %s", ErrImport, len(out.Zarrs), len(req.Zarrs), logs)
	}
	for _, z := range out.Zarrs {
		if len(z.Images) == 0 && z.Kind != "Plate" {
			return out, fmt.Errorf("%w: `omero zarr import %s` exited 0 without creating an image; see %s", ErrNoImport, z.Path, logs)
		}
	}
	log.WithFields(logrus.Fields{"images": len(out.Images()), "took": time.Since(start)}).Info("OMERO Zarr registration finished")
	return out, nil
}

// noZarrPlugin recognises omero-py's refusal of an unknown subcommand (argparse, exit 2): "omero:
// error: argument <subcommand>: invalid choice: 'zarr'" (cli.py Parser._check_value).
func noZarrPlugin(stderr string) bool {
	return strings.Contains(stderr, "invalid choice: 'zarr'")
}

var (
	zarrKindRE    = regexp.MustCompile(`^Importing: (Image|bioformats2raw\.layout)$`)
	zarrCreatedRE = regexp.MustCompile(`^(?:Created Image|Imported Image:) (\d+)$`)
	zarrLsidRE    = regexp.MustCompile(`^lsid: (.+)$`)
)

// parseRegister splits the output of a load run of `zarr import` lines into one Registered per
// Zarr started: each starts with its "Importing: …" or "Plate import not yet supported" line.
func parseRegister(stdout string, zarrs []string) []Registered {
	var out []Registered
	cur := func() *Registered {
		if len(out) == 0 {
			return nil
		}
		return &out[len(out)-1]
	}
	for _, line := range strings.Split(stdout, "\n") {
		line = strings.TrimSpace(line)
		var kind string
		if m := zarrKindRE.FindStringSubmatch(line); m != nil {
			kind = m[1]
		} else if line == "Plate import not yet supported" {
			kind = "Plate"
		}
		if kind != "" {
			if len(out) == len(zarrs) {
				break
			}
			out = append(out, Registered{Path: zarrs[len(out)], Kind: kind})
			continue
		}
		z := cur()
		if z == nil {
			continue
		}
		switch m := zarrCreatedRE.FindStringSubmatch(line); {
		case m != nil:
			id, _ := strconv.ParseInt(m[1], 10, 64)
			z.Images = append(z.Images, id)
		case zarrLsidRE.MatchString(line):
			z.Lsids = append(z.Lsids, zarrLsidRE.FindStringSubmatch(line)[1])
		case strings.HasPrefix(line, "Linked to Dataset "):
			z.Linked = true
		}
	}
	return out
}

// ExtInfo is an image's ExternalInfo as `obj ext-info-get Image:N FIELD` reads it.
type ExtInfo struct {
	EntityType, Lsid string
}

// ImagesPrep is what PrepareImages does in its batch.
type ImagesPrep struct {
	Images  []int64  // registered images whose ExternalInfo is read back
	NS      string   // annotation namespace
	Targets []string // what gets a MapAnnotation ("Image:N")
	// NewDataset, when set, is the name of a Dataset to create and link Unlinked to: omero-cli-zarr
	// links --target-by-name to an existing Dataset only ("Target not found").
	NewDataset string
	Unlinked   []int64
}

// PreparedImages is what PrepareImages read and created.
type PreparedImages struct {
	Prepared
	ExtInfo map[int64]ExtInfo
	Dataset int64 // the Dataset created for NewDataset; 0 when none
}

// PrepareImages is Prepare for registered images, in one batch: the MapAnnotations and their
// links, then (with NewDataset) `d = new Dataset name=NAME` and a `new DatasetImageLink
// parent@=d child=Image:N` per unlinked image, then each image's ExternalInfo (`ext-info-get
// Image:N entityType` and `… lsid`, omero-py ≥ 5.21 plugins/obj.py ExtInfoGetTxAction). The reads
// come last: a missing ExternalInfo ends the batch (346 "No ExternalInfo found") after everything
// else was made. What ran before a failure is returned with the error.
func (c *Client) PrepareImages(ctx context.Context, s *Session, p ImagesPrep) (PreparedImages, error) {
	out := PreparedImages{ExtInfo: map[int64]ExtInfo{}}
	ids := append([]int64(nil), p.Images...)
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	var extra []string
	if p.NewDataset != "" && len(p.Unlinked) > 0 {
		if strings.ContainsAny(p.NewDataset, "\x00\n\r") {
			return out, fmt.Errorf("%w: dataset name %q: must be one line", ErrRequest, p.NewDataset)
		}
		extra = append(extra, "d = new Dataset "+quote("name="+p.NewDataset))
		for _, id := range p.Unlinked {
			extra = append(extra, fmt.Sprintf("new DatasetImageLink parent@=d child=Image:%d", id))
		}
	}
	links := len(extra)
	for _, id := range append(ids, p.Unlinked...) {
		if id <= 0 {
			return out, fmt.Errorf("%w: image id %d", ErrRequest, id)
		}
	}
	for _, id := range ids {
		extra = append(extra, fmt.Sprintf("ext-info-get Image:%d entityType", id), fmt.Sprintf("ext-info-get Image:%d lsid", id))
	}
	prep, lines, err := c.prepare(ctx, s, nil, p.NS, p.Targets, extra)
	out.Prepared = prep
	if links > 0 && len(lines) >= links {
		ds, ok := strings.CutPrefix(strings.TrimSpace(lines[0]), "Dataset:")
		id, perr := strconv.ParseInt(ds, 10, 64)
		if !ok || perr != nil || id <= 0 {
			return out, fmt.Errorf("create dataset %q: %w: unexpected output %q", p.NewDataset, ErrCall, lines[0])
		}
		out.Dataset = id
	}
	if len(lines) > links {
		lines = lines[links:]
	} else {
		lines = nil
	}
	for i, id := range ids {
		if 2*i+1 >= len(lines) {
			break
		}
		out.ExtInfo[id] = ExtInfo{EntityType: strings.TrimSpace(lines[2*i]), Lsid: strings.TrimSpace(lines[2*i+1])}
	}
	return out, err
}

// ZarrPlugin reports whether the CLI has the zarr subcommand (`omero zarr --help`, exit 0) and
// the plugin's version from the omero-cli-zarr package's dist-info folder next to the CLI (see
// ZarrPluginVersion); "" when unknown.
func (c *Client) ZarrPlugin(ctx context.Context) (version string, err error) {
	res, err := c.run(ctx, call{args: []string{"zarr", "--help"}, timeout: c.cfg.CallTimeout})
	if err != nil {
		return "", err
	}
	if res.code != 0 {
		if noZarrPlugin(res.stderr) {
			return "", fmt.Errorf("%w: %s", ErrNoZarrPlugin, ZarrPluginAdvice)
		}
		return "", fmt.Errorf("%w: `omero zarr --help` exited %d%s", ErrCall, res.code, detail(res))
	}
	return c.ZarrPluginVersion(), nil
}

// ZarrPluginVersion reads the installed omero-cli-zarr version from its dist-info folder
// (omero_cli_zarr-VERSION.dist-info), found where pip or conda put it for the Python that runs the
// CLI: lib/python3*/site-packages below the CLI's bin folder's parent (a virtualenv or conda
// environment), or below the parent of the folder of the interpreter its #! line names. It
// returns "" when there is none; it reads files only.
func (c *Client) ZarrPluginVersion() string {
	cli := c.cfg.CLI
	if !filepath.IsAbs(cli) {
		// A bare name is looked up on PATH, as exec does.
		for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
			if p := filepath.Join(dir, cli); isFile(p) {
				cli = p
				break
			}
		}
	}
	prefixes := []string{filepath.Dir(filepath.Dir(cli))}
	if b := readBounded(cli, 256); len(b) > 2 && string(b[:2]) == "#!" {
		if f := strings.Fields(strings.SplitN(string(b[2:]), "\n", 2)[0]); len(f) > 0 {
			prefixes = append(prefixes, filepath.Dir(filepath.Dir(f[0])))
		}
	}
	for _, p := range prefixes {
		for _, lib := range []string{"lib", "lib64"} {
			m, _ := filepath.Glob(filepath.Join(p, lib, "python3*", "site-packages", "omero_cli_zarr-*.dist-info"))
			if len(m) > 0 {
				sort.Strings(m)
				name := filepath.Base(m[len(m)-1])
				return strings.TrimSuffix(strings.TrimPrefix(name, "omero_cli_zarr-"), ".dist-info")
			}
		}
	}
	return ""
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}
