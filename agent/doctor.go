package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/runner/omero"
	"github.com/omero-adi/omero-adi/runner/preprocess"
)

// Check is one finding of Doctor: Err is nil when the check passed; Fix says what to do otherwise.
type Check struct {
	Name string
	Err  error
	Fix  string
}

// Doctor checks what an agent with these settings needs on this host: the database, the data
// root and log_dir, the omero CLI, the ManagedRepository, the OMERO server (it opens and closes an
// admin session), the CLI's zarr plugin where Zarrs are registered, the container runtime for the
// agent's user (preprocess.Runner.Doctor: subordinate ids, no-new-privileges, storage, a container
// of each rule's image), the watch rules and the inotify limit. It changes nothing but a probe
// file in the folders it must write to (and the containers it creates to check, which it removes).
func Doctor(ctx context.Context, cfg Config) []Check {
	var out []Check
	check := func(name string, err error, fix string) { out = append(out, Check{Name: name, Err: err, Fix: fix}) }
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)

	s, _, err := OpenStore(ctx, cfg, quiet)
	check("database "+db.MaskURL(cfg.IngestTrackingDB), err, "check ingest_tracking_db / INGEST_TRACKING_DB_URL and that the server is reachable")
	if s != nil {
		s.Close()
	}
	check("base_dir "+cfg.BaseDir, dirReadable(cfg.BaseDir), "mount the data share there or set base_dir")
	check("log_dir "+cfg.LogDir, dirWritableOrCreatable(cfg.LogDir), "create it and give the agent's user write access")
	if !cfg.Omero.DryRun {
		_, err := exec.LookPath(cfg.Omero.CLI)
		check("omero CLI "+cfg.Omero.CLI, err, "install omero-py (pip install omero-py) or set omero.cli")
		check("omero.managed_repository "+cfg.Omero.ManagedRepository, dirWritable(cfg.Omero.ManagedRepository),
			"mount OMERO's ManagedRepository at the server's path with write access (in-place import creates links there)")
		check("omero.local_tmp_root "+cfg.Omero.LocalTmpRoot, dirWritable(cfg.Omero.LocalTmpRoot), "create it on local disk")
		if cfg.Omero.AdminPassword == "" {
			check("OMERO admin password", errors.New("not set"), "set OMERO_PASSWORD in the service environment")
		} else if client, err := NewOmeroClient(cfg, logrus.NewEntry(quiet)); err != nil {
			check("omero settings", err, "correct the key named above")
		} else {
			jars, err := client.ImporterJars()
			check("OMERO.java importer jars "+jars, err, "run `omero import --fetch-jars VERSION` as the agent's user (the container image does this at build time), or set OMERODIR to an OMERO.server/OMERO.py folder with lib/client")
			name := fmt.Sprintf("OMERO server %s:%d as %s", cfg.Omero.Host, cfg.Omero.Port, cfg.Omero.AdminUser)
			server, err := client.Ping(ctx)
			if err == nil {
				name += ": " + server
			}
			check(name, err,
				"check that OMERO.server runs, omero.host/omero.port (env OMERO_HOST, OMERO_PORT), and the admin's password (OMERO_PASSWORD)")
			if registersZarr(cfg) {
				out = append(out, zarrPlugin(ctx, client))
			}
		}
	}
	// Orders of the web plugin name their containers too: podman on PATH is checked without rules.
	images := containerImages(cfg)
	if _, err := exec.LookPath(cfg.Preprocessing.Runtime); err == nil || len(images) > 0 {
		pre, err := preprocess.New(cfg.preprocessing(), logrus.NewEntry(quiet))
		if err != nil {
			check("preprocessing settings", err, "correct the key named above")
		} else {
			for _, c := range pre.Doctor(ctx, images) {
				check(c.Name, c.Err, c.Fix)
			}
		}
	}
	if len(cfg.Rules) > 0 {
		_, err := cfg.RuleSet()
		check(fmt.Sprintf("%d watch rules", len(cfg.Rules)), err, "")
		if b, err := os.ReadFile("/proc/sys/fs/inotify/max_user_watches"); err == nil {
			n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			var low error
			if n < 65536 {
				low = fmt.Errorf("fs.inotify.max_user_watches is %d", n)
			}
			check("inotify watch limit", low, "sysctl -w fs.inotify.max_user_watches=524288 (and persist it in /etc/sysctl.d)")
		}
	}
	return out
}

// registersZarr reports whether any order may register an OME-Zarr: omero.zarr or a rule's zarr
// is "register".
func registersZarr(cfg Config) bool {
	if cfg.Omero.Zarr == string(order.ZarrRegister) {
		return true
	}
	for _, r := range cfg.Rules {
		if m, err := order.ParseZarrMode(r.Zarr); err == nil && r.Zarr != "" && m == order.ZarrRegister {
			return true
		}
	}
	return false
}

// zarrPlugin is the check of the omero CLI's zarr plugin (omero-cli-zarr), named with its version.
func zarrPlugin(ctx context.Context, client *omero.Client) Check {
	version, err := client.ZarrPlugin(ctx)
	name := "omero zarr plugin (omero-cli-zarr"
	switch {
	case err != nil:
		name += ")"
	case version == "":
		name += ", version unknown)"
	default:
		name += " " + version + ")"
	}
	return Check{Name: name, Err: err, Fix: omero.ZarrPluginAdvice + ", or set omero.zarr (and the rules' zarr) to \"import\" or \"refuse\" where no Zarr is registered"}
}

// containerImages returns the images the rules' preprocessing runs as containers (not mapped to
// local commands).
func containerImages(cfg Config) []string {
	var images []string
	for _, r := range cfg.Rules {
		if r.Preprocessing != nil {
			if _, local := cfg.Preprocessing.Local[r.Preprocessing.Container]; !local {
				images = append(images, preprocess.ImageName(r.Preprocessing.Container))
			}
		}
	}
	return images
}

func dirReadable(dir string) error {
	_, err := os.ReadDir(dir)
	return err
}

// dirWritableOrCreatable accepts a writable folder, or a missing one that the agent can create
// (it creates log_dir at start) because its nearest existing parent is writable.
func dirWritableOrCreatable(dir string) error {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			return dirWritable(d)
		} else if !errors.Is(err, os.ErrNotExist) || d == filepath.Dir(d) {
			return err
		}
	}
}

func dirWritable(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return errors.New("not a folder")
	}
	f, err := os.CreateTemp(dir, ".omero-adi-doctor-*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}
