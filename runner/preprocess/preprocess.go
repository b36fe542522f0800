// Package preprocess runs an order's preprocessing container (podman, or a local command mapped to
// the image) on each file of the order, following the container convention of preprocessing.md,
// and maps the results the container reports back to host paths.
//
// Layout on the host, for an order <order> and a file <dir>/<name>:
//
//	<dir>/.processed/<order>/      mounted at <output_folder>/.processed (the container's outputs)
//	<LocalTmpRoot>/<run>/<k>/      mounted at <alt_output_folder>, one <k> per distinct <dir>
//
// The container sees exactly the paths of the convention (<output_folder>/<name>,
// <output_folder>/.processed, <alt_output_folder>), so existing containers keep working. The
// per-order subfolder below .processed is this agent's addition: the container decides the names
// of its outputs, so two orders on files of one folder (or a re-import of a file whose earlier
// results OMERO still links to) would otherwise overwrite each other's results on the share.
// Within one order, two files whose results land on the same path fail the order (ErrCollision).
// A retry of the same order reuses <dir>/.processed/<order>: the container overwrites its own
// earlier outputs there.
package preprocess

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/retry"
	"github.com/omero-adi/omero-adi/runner/child"
	"github.com/omero-adi/omero-adi/runner/redirect"
	"github.com/omero-adi/omero-adi/settings"
)

const (
	// DefaultProcessedFolder is the folder beside the originals where converted files go (the
	// convention; processed_folder, env PROCESSED_DATA_FOLDER of the old service).
	DefaultProcessedFolder = ".processed"
	// OrderLabel labels every container with the order's uuid (podman ps --filter label=…).
	OrderLabel = "omero-adi.order"
)

// Sentinel errors, checked with errors.Is. Failures of a run come as *Error wrapping one of them.
var (
	ErrConfig    = errors.New("invalid preprocessing settings")
	ErrSpec      = errors.New("invalid preprocessing")
	ErrStart     = errors.New("preprocessing could not start")
	ErrExit      = errors.New("preprocessing container failed")
	ErrNoOutput  = errors.New("preprocessing container printed no results")
	ErrBadOutput = errors.New("preprocessing container output is not a valid JSON list of results")
	ErrOutside   = errors.New("preprocessing result lies outside the mounted folders")
	ErrMissing   = errors.New("preprocessing result is missing")
	ErrTimeout   = errors.New("preprocessing timed out")
	ErrCollision = errors.New("preprocessing results collide")
	ErrUnsafe    = errors.New("preprocessing output folder is unsafe")
)

// Spec is what one order asks for: its preprocessing step, its uuid and its log.
type Spec struct {
	OrderUUID string
	order.Preprocessing
	LogPath string // the order's preprocessing log: container stdout+stderr are appended; "" for none
}

// Output is one result the container reported, mapped to host paths.
type Output struct {
	Input     string      // the original host file
	Name      string      // result "name" (the base name of full_path when the container gave none)
	Processed string      // host path below <file's folder>/.processed/<order> (from full_path)
	Alt       string      // host path below the temp folder (from alt_path); "" without alt_output_folder
	KeyValues [][2]string // keyvalues flattened in order (list of objects or one object)
	// ProcessedDir is the host folder the container saw as <output_folder>/.processed, i.e.
	// <file's folder>/.processed/<order> (look there for a metadata.csv the container wrote).
	ProcessedDir string
}

// Result is everything one Run produced.
type Result struct {
	Outputs []Output
	// TempDir is <LocalTmpRoot>/<run>, "" without alt_output_folder. The caller deletes it (with
	// Runner.RemoveTemp) once every ManagedRepository link into it has been redirected.
	TempDir string
	// Redirects maps each temp subfolder to the .processed folder holding the same files, as
	// redirect.Redirect takes it; nil without alt_output_folder.
	Redirects map[string]string
}

// Runner runs preprocessing. It holds no resources; it is safe for concurrent Runs.
type Runner struct {
	cfg   Config
	local map[string][]string // keyed by ImageName
	log   *logrus.Entry
}

var envKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)

// New validates cfg and starts nothing.
func New(cfg Config, log *logrus.Entry) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, settings.Prefix("preprocessing", err))
	}
	// Owned and checked elsewhere; New only insists that the agent filled them in.
	if cfg.LocalTmpRoot == "" || cfg.ProcessedFolder == "" {
		return nil, fmt.Errorf("%w: LocalTmpRoot (omero.local_tmp_root) and ProcessedFolder (processed_folder) must be set", ErrConfig)
	}
	for i, e := range cfg.Env {
		if !envKey.MatchString(e) {
			return nil, fmt.Errorf("%w: preprocessing env[%d] %q: want KEY=VALUE", ErrConfig, i, e)
		}
	}
	local := make(map[string][]string, len(cfg.Local))
	for image, argv := range cfg.Local {
		local[ImageName(image)] = append([]string(nil), argv...)
	}
	cfg.Local = nil
	cfg.ExtraArgs = append([]string(nil), cfg.ExtraArgs...)
	cfg.Env = append([]string(nil), cfg.Env...)
	if log == nil {
		log = logrus.NewEntry(logrus.StandardLogger())
	}
	return &Runner{cfg: cfg, local: local, log: log.WithField("component", "preprocess")}, nil
}

// ImageName gives a registry-less image name the docker.io/ prefix, as the old service did;
// names that start with a registry host (a dot or port in the first part, or localhost) are kept.
func ImageName(container string) string {
	first, _, ok := strings.Cut(container, "/")
	if ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return container
	}
	return "docker.io/" + container
}

// RemoveTemp deletes a temp folder made by Run, refusing anything not below LocalTmpRoot.
func (r *Runner) RemoveTemp(tmpDir string) error {
	return redirect.RemoveTemp(r.cfg.LocalTmpRoot, tmpDir)
}

var orderRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

func (s Spec) validate() error {
	if !orderRE.MatchString(s.OrderUUID) || strings.Contains(s.OrderUUID, "..") {
		return fmt.Errorf("%w: order uuid %q: want letters, digits, '.', '_' or '-'", ErrSpec, s.OrderUUID)
	}
	if err := s.Check(); err != nil {
		return fmt.Errorf("%w: %w", ErrSpec, err)
	}
	return nil
}

// plan is one file's run.
type plan struct {
	n         int
	file      string // host path of the original
	dir       string // host folder of the file
	processed string // host <dir>/.processed/<order>
	tmp       string // host temp subfolder, "" without alt
	name      string // container name (podman)
	local     []string
}

// mount maps a container folder to a host folder (identical for local commands).
type mount struct{ host, ctr string }

func (r *Runner) argv(spec Spec, p plan) (argv []string, processed, alt mount) {
	base := filepath.Base(p.file)
	if p.local != nil {
		processed = mount{p.processed, p.processed}
		alt = mount{p.tmp, p.tmp}
		argv = append([]string(nil), p.local...)
		argv = append(argv, r.args(spec, p.file, processed.ctr, alt.ctr)...)
		return argv, processed, alt
	}
	out := spec.OutputFolder
	processed = mount{p.processed, path.Join(out, r.cfg.ProcessedFolder)}
	argv = []string{r.cfg.Runtime, "run", "--rm", "--name", p.name, "--label", OrderLabel + "=" + spec.OrderUUID}
	if r.cfg.UsernsMode != "" {
		argv = append(argv, "--userns="+r.cfg.UsernsMode)
	}
	argv = append(argv, r.cfg.ExtraArgs...)
	argv = append(argv, "-v", p.dir+":"+out, "-v", processed.host+":"+processed.ctr)
	if spec.AltOutputFolder != "" {
		alt = mount{p.tmp, spec.AltOutputFolder}
		argv = append(argv, "-v", alt.host+":"+alt.ctr)
	}
	argv = append(argv, ImageName(spec.Container))
	argv = append(argv, r.args(spec, path.Join(out, base), processed.ctr, alt.ctr)...)
	return argv, processed, alt
}

// args are the container's arguments: --inputfile, extra params (sorted by key), output folders.
func (r *Runner) args(spec Spec, input, outDir, altDir string) []string {
	a := []string{"--inputfile", strings.ReplaceAll(spec.InputFile, "{Files}", input)}
	keys := make([]string, 0, len(spec.ExtraParams))
	for k := range spec.ExtraParams {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		a = append(a, "--"+k, spec.ExtraParams[k])
	}
	a = append(a, "--outputfolder", outDir)
	if altDir != "" {
		a = append(a, "--altoutputfolder", altDir)
	}
	return a
}

// Command returns the exact argv Run would use for one file (dry runs, logs). The run-specific
// part (temp folder and container name) appears as the placeholder {run}.
func (r *Runner) Command(spec Spec, file string) []string {
	p := r.plan(spec, "{run}", 0, file, 0)
	argv, _, _ := r.argv(spec, p)
	return argv
}

func (r *Runner) plan(spec Spec, run string, n int, file string, k int) plan {
	dir := filepath.Dir(file)
	p := plan{
		n:         n,
		file:      file,
		dir:       dir,
		processed: filepath.Join(dir, r.cfg.ProcessedFolder, spec.OrderUUID),
		name:      fmt.Sprintf("adi-%s-%d", run, n),
		local:     r.local[ImageName(spec.Container)],
	}
	if spec.AltOutputFolder != "" {
		p.tmp = filepath.Join(r.cfg.LocalTmpRoot, run, strconv.Itoa(k))
	}
	return p
}

// Run preprocesses every file: it creates <dir>/.processed/<order> and (with alt_output_folder)
// one temp folder for the order, runs the container per file and checks its results. On error
// the temp folder is removed (nothing links to it yet); results already on the share stay for
// inspection. A cancelled ctx stops the running container and returns ctx's error.
func (r *Runner) Run(ctx context.Context, spec Spec, files []string) (Result, error) {
	if err := spec.validate(); err != nil {
		return Result{}, err
	}
	if len(files) == 0 {
		return Result{}, fmt.Errorf("%w: no files to preprocess", ErrSpec)
	}
	for i, f := range files {
		if !filepath.IsAbs(f) || filepath.Clean(f) != f || strings.ContainsAny(filepath.Dir(f), ":,\n") {
			return Result{}, fmt.Errorf("%w: files[%d] %q: want a clean absolute path whose folder has no ':' or ','", ErrSpec, i, f)
		}
		if _, err := os.Stat(f); err != nil {
			return Result{}, fmt.Errorf("%w: files[%d]: %v", ErrSpec, i, err)
		}
	}
	run := uuid.NewString()
	log := r.log.WithFields(logrus.Fields{"order": spec.OrderUUID, "container": spec.Container, "run": run})
	var res Result
	if spec.AltOutputFolder != "" {
		res.TempDir = filepath.Join(r.cfg.LocalTmpRoot, run)
		res.Redirects = map[string]string{}
		if err := os.MkdirAll(res.TempDir, 0o755); err != nil {
			return Result{}, fmt.Errorf("create temp folder: %w", err)
		}
	}
	fail := func(err error) (Result, error) {
		if res.TempDir != "" {
			if rerr := r.RemoveTemp(res.TempDir); rerr != nil {
				log.WithError(rerr).WithField("path", res.TempDir).Warn("could not remove temp folder")
			}
		}
		return Result{}, err
	}
	folders := map[string]int{}
	for n, f := range files {
		dir := filepath.Dir(f)
		k, ok := folders[dir]
		if !ok {
			k = len(folders)
			folders[dir] = k
		}
		p := r.plan(spec, run, n, f, k)
		if err := makeProcessed(p); err != nil {
			return fail(err)
		}
		if p.tmp != "" {
			if err := os.MkdirAll(p.tmp, 0o755); err != nil {
				return fail(fmt.Errorf("create temp folder: %w", err))
			}
			res.Redirects[p.tmp] = p.processed
		}
		outs, err := r.runOne(ctx, log.WithField("path", f), spec, p)
		if err != nil {
			return fail(err)
		}
		for _, o := range outs {
			if err := collide(res.Outputs, o); err != nil {
				return fail(r.failure(ErrCollision, spec, f, err.Error()+"; the container names its outputs the same for these files: put them in separate orders"))
			}
			res.Outputs = append(res.Outputs, o)
		}
	}
	log.WithField("results", len(res.Outputs)).Info("preprocessing done")
	return res, nil
}

// makeProcessed creates <dir>/.processed/<order> and checks that no part of it is a symlink: users
// own their folders, and a planted .processed link would make the agent mount (read-write) and
// import whatever it points to.
func makeProcessed(p plan) error {
	for _, d := range []string{filepath.Dir(p.processed), p.processed} {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create %s folder: %w", filepath.Base(filepath.Dir(p.processed)), err)
		}
		fi, err := os.Lstat(d)
		if err != nil {
			return fmt.Errorf("create %s folder: %w", filepath.Base(filepath.Dir(p.processed)), err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("%w: %s is a %s, not a folder (a symlink there could make the agent write and import elsewhere); remove it", ErrUnsafe, d, fi.Mode().Type())
		}
	}
	return nil
}

// collide checks that o does not share (or nest with) a result of an earlier file of the order.
func collide(prev []Output, o Output) error {
	overlap := func(a, b string) bool {
		return a != "" && b != "" && (a == b || order.Below(a, b) || order.Below(b, a))
	}
	for _, q := range prev {
		if overlap(q.Processed, o.Processed) || overlap(q.Alt, o.Alt) {
			return fmt.Errorf("%s and %s both produced %s", q.Input, o.Input, o.Processed)
		}
	}
	return nil
}

// bindBusyError is a container run that failed because the runtime found the bind source
// busy: runOne retries it.
type bindBusyError struct{ err error }

func (e bindBusyError) Error() string { return e.err.Error() }
func (e bindBusyError) Unwrap() error { return e.err }

// runOne runs the container for one file and returns its mapped results.
func (r *Runner) runOne(ctx context.Context, log *logrus.Entry, spec Spec, p plan) ([]Output, error) {
	argv, pm, am := r.argv(spec, p)
	log.WithField("argv", child.Quote(argv)).Info("running preprocessing")

	logw, closeLog, err := openLog(spec.LogPath)
	if err != nil {
		return nil, r.failure(ErrStart, spec, p.file, fmt.Sprintf("cannot open the preprocessing log: %v", err))
	}
	defer closeLog()
	fmt.Fprintf(logw, "# %s omero-adi preprocessing order %s file %s\n# %s\n",
		time.Now().UTC().Format(time.RFC3339), spec.OrderUUID, p.file, child.Quote(argv))

	runCtx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	shared := &lockedWriter{w: logw}
	start := time.Now()
	line, stderr, err := r.runContainer(runCtx, log, spec, argv, p, shared)
	if fe := (*Error)(nil); errors.As(err, &fe) {
		return nil, err // the command could not be built
	}
	log = log.WithField("duration", time.Since(start).Round(time.Millisecond))
	if runCtx.Err() != nil {
		return nil, r.stopped(ctx, log, spec, p, shared)
	}
	if err != nil {
		return nil, r.runError(spec, p, argv[0], stderr, err)
	}
	return r.results(log, spec, p, pm, am, line, stderr)
}

// runContainer runs the container (or its local command) until it does not fail with the
// runtime's busy bind source, at most BindRetryAttempts times, and returns the last results line
// of its standard output, the end of its stderr and its error. BIOMERO.importer 1.4 retries a busy
// bind source too (DataProcessor._run_podman_command): a CIFS/DFS share can be briefly busy while
// podman sets up the bind mount. A command that cannot be built is returned as the file's
// *Error.
func (r *Runner) runContainer(runCtx context.Context, log *logrus.Entry, spec Spec, argv []string, p plan, shared io.Writer) (line string, stderr *child.Tail, err error) {
	var stdout lastLine
	q := new(retry.Quiet)
	policy := retry.Policy{Attempts: r.cfg.BindRetryAttempts, Initial: r.cfg.BindRetryDelay,
		Retrying: func(attempt int, wait time.Duration, _ error) {
			q.Failed(log.WithFields(logrus.Fields{"attempt": attempt, "max_attempts": r.cfg.BindRetryAttempts, "delay": wait}),
				"container runtime found the bind source busy; retrying")
			r.removeContainer(log, p.name)
			fmt.Fprintf(shared, "# bind source busy; retrying in %s (attempt %d of %d)\n", wait, attempt+1, r.cfg.BindRetryAttempts)
		}}
	var werr error
	err = retry.Do(runCtx, policy, func(int) error {
		stdout, stderr = lastLine{}, &child.Tail{Max: tailMax + 1}
		cmd, cerr := r.command(runCtx, log, argv, p, shared, &stdout, stderr)
		if cerr != nil {
			werr = cerr
			return retry.Stop(cerr)
		}
		err := cmd.Run()
		if err == nil || p.local != nil || runCtx.Err() != nil || !bindBusy(err, stderr) {
			return retry.Stop(err)
		}
		return bindBusyError{err}
	})
	if werr != nil {
		return "", stderr, r.failure(ErrStart, spec, p.file, werr.Error())
	}
	if b, spent := err.(bindBusyError); spent {
		q.GaveUp(log.WithField("attempts", r.cfg.BindRetryAttempts), "container runtime found the bind source busy; giving up")
		err = b.err
	}
	return stdout.last(), stderr, err
}

// stopped is the error of a run that the order's cancellation or the timeout ended; it removes
// the container and notes the stop in the preprocessing log.
func (r *Runner) stopped(ctx context.Context, log *logrus.Entry, spec Spec, p plan, shared io.Writer) error {
	if p.local == nil {
		r.removeContainer(log, p.name)
	}
	if ctx.Err() != nil {
		fmt.Fprintf(shared, "# stopped: %v\n", ctx.Err())
		return fmt.Errorf("preprocess %s: %w", p.file, ctx.Err())
	}
	fmt.Fprintf(shared, "# stopped after the timeout of %s\n", r.cfg.Timeout)
	return r.failure(ErrTimeout, spec, p.file, fmt.Sprintf("it ran longer than the timeout of %s and was stopped; raise preprocessing.timeout if the file needs longer, or check the container", r.cfg.Timeout))
}

// runError is the error of a run that exited with a non-zero status (telling the runtime's own
// failures and a share that stayed busy apart from the container's) or did not start.
func (r *Runner) runError(spec Spec, p plan, program string, stderr *child.Tail, err error) error {
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		what, fix := "it exited", "fix the cause"
		if p.local == nil && exit.ExitCode() >= 125 && exit.ExitCode() <= 127 {
			// podman's own codes: 125 podman failed (image not found or not pullable, bad flag
			// or mount), 126 entrypoint not executable, 127 entrypoint not found.
			what = r.cfg.Runtime + " could not run the container"
		}
		if p.local == nil && bindBusy(err, stderr) {
			fix = fmt.Sprintf("the share stayed busy through %d attempts (preprocessing.bind_retry_attempts); wait until it is idle", r.cfg.BindRetryAttempts)
		}
		return r.failure(ErrExit, spec, p.file, fmt.Sprintf("%s with status %d%s; %s", what, exit.ExitCode(), describe(stderr), fix))
	}
	return r.failure(ErrStart, spec, p.file, fmt.Sprintf("could not start %s: %v; install it or map the container to a local command in preprocessing.local", program, err))
}

// results parses the results line a run printed last and maps each result from the container's
// mounts back to the order's folders.
func (r *Runner) results(log *logrus.Entry, spec Spec, p plan, pm, am mount, line string, stderr *child.Tail) ([]Output, error) {
	if line == "" {
		return nil, r.failure(ErrNoOutput, spec, p.file, "its standard output had no results line (the last line must be a JSON list of results)"+describe(stderr))
	}
	raws, err := parseResults(line)
	if err != nil {
		return nil, r.failure(ErrBadOutput, spec, p.file, fmt.Sprintf("its last output line %s: %v", strconv.Quote(order.Clip(line, 200)), err))
	}
	outs := make([]Output, 0, len(raws))
	for i, raw := range raws {
		o, err := mapResult(raw, p, pm, am, spec.AltOutputFolder != "")
		if err != nil {
			var re *resultError
			errors.As(err, &re)
			return nil, r.failure(re.sentinel, spec, p.file, fmt.Sprintf("result %d: %s", i, re.msg))
		}
		log.WithFields(logrus.Fields{"processed": o.Processed, "alt": o.Alt}).Debug("preprocessing result")
		outs = append(outs, o)
	}
	return outs, nil
}

// command builds the container (or local) command of one run, writing to the log and the
// buffers. The program runs under a guard in its own process group: if the agent dies, the group
// is killed and the container removed.
func (r *Runner) command(ctx context.Context, log *logrus.Entry, argv []string, p plan, shared, stdout, stderr io.Writer) (*exec.Cmd, error) {
	o := child.Options{Stop: syscall.SIGKILL, WaitDelay: 30 * time.Second}
	// If the agent dies now, nothing was imported from this run yet: its temp folder holds
	// nothing OMERO links to, and goes with the container.
	if p.tmp != "" {
		o.Cleanup.Remove = filepath.Dir(p.tmp)
	}
	if p.local != nil {
		o.Env = child.Env(os.Environ(), child.Names(baseEnv...), r.cfg.Env)
	} else {
		o.Env = child.Env(os.Environ(), child.Names(podmanEnv...), r.cfg.Env)
		o.BeforeStop = func() { r.removeContainer(log, p.name) }
		o.Cleanup.Command = r.removeArgv(p.name)
	}
	cmd, err := child.Command(ctx, argv, o)
	if err != nil {
		return nil, err
	}
	cmd.Stdout = io.MultiWriter(shared, stdout)
	cmd.Stderr = io.MultiWriter(shared, stderr)
	return cmd, nil
}

// bindBusy reports whether a container run failed with the runtime's transient bind error:
// exit status 125 and "statfs <source>: device or resource busy" (not, e.g., permission denied).
func bindBusy(err error, stderr *child.Tail) bool {
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 125 {
		return false
	}
	for _, line := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(line, "statfs ") && strings.Contains(line, "device or resource busy") {
			return true
		}
	}
	return false
}

// removeArgv is the command that force-removes container name.
func (r *Runner) removeArgv(name string) []string {
	return []string{r.cfg.Runtime, "rm", "--force", "--ignore", "--time", "0", name}
}

// removeContainer force-removes a container by name (timeout or cancel); missing is fine.
func (r *Runner) removeContainer(log *logrus.Entry, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := &child.Tail{Max: 500}
	cmd, err := child.Command(ctx, r.removeArgv(name), child.Options{Env: child.Env(os.Environ(), child.Names(podmanEnv...), r.cfg.Env)})
	if err == nil {
		cmd.Stdout, cmd.Stderr = out, out
		err = cmd.Run()
	}
	if err != nil {
		log.WithError(err).WithFields(logrus.Fields{"container_name": name, "output": strconv.Quote(order.Clip(out.String(), 500))}).Warn("could not remove container")
	}
}

// resultError is why a reported result was refused.
type resultError struct {
	sentinel error
	msg      string
}

func (e *resultError) Error() string { return e.msg }

func refuse(sentinel error, format string, a ...any) error {
	return &resultError{sentinel: sentinel, msg: fmt.Sprintf(format, a...)}
}

// mapResult maps one reported result to host paths and checks the files exist inside the mounts.
func mapResult(raw rawResult, p plan, pm, am mount, withAlt bool) (Output, error) {
	o := Output{Input: p.file, Name: raw.Name, ProcessedDir: p.processed, KeyValues: raw.kv}
	host, rel, err := toHost(raw.FullPath, pm)
	if err != nil {
		return o, refuse(ErrOutside, "full_path %q is not below %s (%s on the host): %v", raw.FullPath, pm.ctr, pm.host, err)
	}
	if err := inside(host, pm.host); err != nil {
		return o, refuse(sentinelOf(err), "full_path %q (%s on the host): %v", raw.FullPath, host, err)
	}
	o.Processed = host
	if o.Name == "" {
		o.Name = filepath.Base(host)
	}
	if !withAlt {
		return o, nil
	}
	if raw.AltPath == "" {
		return o, refuse(ErrBadOutput, "no alt_path although alt_output_folder is set")
	}
	altHost, altRel, err := toHost(raw.AltPath, am)
	if err != nil {
		return o, refuse(ErrOutside, "alt_path %q is not below %s (%s on the host): %v", raw.AltPath, am.ctr, am.host, err)
	}
	if err := inside(altHost, am.host); err != nil {
		return o, refuse(sentinelOf(err), "alt_path %q (%s on the host): %v", raw.AltPath, altHost, err)
	}
	if altRel != rel {
		return o, refuse(ErrBadOutput, "alt_path %q and full_path %q name different files (%q and %q below their folders); links could not be redirected", raw.AltPath, raw.FullPath, altRel, rel)
	}
	o.Alt = altHost
	return o, nil
}

var errEscapes = errors.New("resolves outside its folder")

func sentinelOf(err error) error {
	if errors.Is(err, errEscapes) {
		return ErrOutside
	}
	return ErrMissing
}

// toHost maps a container path below m.ctr (after cleaning) to the host.
func toHost(p string, m mount) (host, rel string, err error) {
	if !path.IsAbs(p) {
		return "", "", errors.New("not an absolute path")
	}
	c := path.Clean(p)
	if !order.Below(m.ctr, c) {
		return "", "", errors.New("outside the mount")
	}
	rel = strings.TrimPrefix(c, m.ctr+"/")
	return filepath.Join(m.host, filepath.FromSlash(rel)), rel, nil
}

// inside checks host exists and, symlinks resolved, still lies below base: a container must not
// make the agent import a host file through a link.
func inside(host, base string) error {
	real, err := filepath.EvalSymlinks(host)
	if err != nil {
		return fmt.Errorf("the file is not there: %w", err)
	}
	realBase, err := filepath.EvalSymlinks(base)
	if err != nil {
		return fmt.Errorf("the folder is not there: %w", err)
	}
	if !order.Below(realBase, real) {
		return fmt.Errorf("%w (%s)", errEscapes, real)
	}
	return nil
}

// failure builds the error an order's description shows.
func (r *Runner) failure(sentinel error, spec Spec, file, detail string) error {
	return &Error{Err: sentinel, Container: spec.Container, File: file, LogPath: spec.LogPath, Detail: detail}
}

// Error is a failed preprocessing run; its text, written for an order's description, says what
// went wrong and what to fix (the runner adds how to retry).
type Error struct {
	Err       error // one of the sentinel errors
	Container string
	File      string
	LogPath   string
	Detail    string
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v: container %s on file %s: %s", e.Err, e.Container, e.File, e.Detail)
	if e.LogPath != "" {
		fmt.Fprintf(&b, "; the container's output is in %s", e.LogPath)
	}
	return b.String()
}

// Unwrap returns the sentinel.
func (e *Error) Unwrap() error { return e.Err }

// openLog opens the order's log for appending; "" discards.
func openLog(p string) (io.Writer, func(), error) {
	if p == "" {
		return io.Discard, func() {}, nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		return nil, nil, err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, nil, err
	}
	return &cappedLog{w: f, left: maxLog}, func() { f.Close() }, nil
}

// maxLog bounds what one preprocessing run writes to its order's log.
const maxLog = 64 << 20

// cappedLog writes to an order's log until maxLog bytes, then notes the cut and drops the rest.
// It never fails: a log that cannot be written (full log_dir) must not stop the container's output
// from being read, which would end the container with a broken pipe.
type cappedLog struct {
	w    io.Writer
	left int
}

func (c *cappedLog) Write(p []byte) (int, error) {
	if c.left <= 0 {
		return len(p), nil
	}
	n := min(len(p), c.left)
	_, _ = c.w.Write(p[:n])
	c.left -= n
	if c.left == 0 {
		fmt.Fprintf(c.w, "\n# more output dropped: the log keeps the first %d MiB\n", maxLog>>20)
	}
	return len(p), nil
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.w.Write(b) // a full disk must not kill the container; its output is lost
	return len(b), nil
}

// maxLine bounds the line lastLine keeps; a longer results line is reported as not JSON.
const maxLine = 16 << 20

// lastLine keeps the last non-empty line written to it.
type lastLine struct {
	cur  []byte
	over bool
	prev string
}

func (l *lastLine) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		chunk := b
		if i >= 0 {
			chunk = b[:i]
		}
		if len(l.cur)+len(chunk) > maxLine {
			l.over = true
		} else {
			l.cur = append(l.cur, chunk...)
		}
		if i < 0 {
			break
		}
		l.flush()
		b = b[i+1:]
	}
	return n, nil
}

func (l *lastLine) flush() {
	s := strings.TrimSpace(string(l.cur))
	if l.over {
		s = "<a line longer than 16 MiB>"
	}
	if s != "" {
		l.prev = s
	}
	l.cur, l.over = l.cur[:0], false
}

func (l *lastLine) last() string {
	l.flush()
	return l.prev
}

// tailMax bounds what is kept of a container's stderr for its order's description (the whole
// output is in the order's preprocessing log).
const tailMax = 1024

// describe is the end of stderr for a description: " (last error output: …)", or "".
func describe(stderr *child.Tail) string {
	s := stderr.String()
	if len(s) > tailMax {
		s = "…" + s[len(s)-tailMax:]
	}
	if s = strings.TrimSpace(s); s == "" {
		return ""
	}
	return fmt.Sprintf(" (last error output: %s)", strings.ReplaceAll(s, "\n", " | "))
}

// baseEnv is what a local command inherits; podmanEnv adds what podman itself needs. Nothing else
// (no OMERO_PASSWORD, no database URL, no proxy settings, which podman would copy into containers).
var (
	baseEnv   = []string{"PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"}
	podmanEnv = append(append([]string(nil), baseEnv...), "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME",
		"CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF", "CONTAINERS_REGISTRIES_CONF", "REGISTRY_AUTH_FILE",
		"CONTAINER_HOST", "CONTAINER_CONNECTION", "DBUS_SESSION_BUS_ADDRESS")
)
