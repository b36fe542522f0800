package omero

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/settings"
)

// ImportConfig holds the top-level keys of the settings file that shape `omero import` (named as
// in the old service's settings.yml).
type ImportConfig struct {
	ParallelUpload   int  `toml:"parallel_upload_per_worker"`   // --parallel-upload
	ParallelFilesets int  `toml:"parallel_filesets_per_worker"` // --parallel-fileset
	SkipAll          bool `toml:"skip_all"`                     // --skip all (covers the rest)
	SkipChecksum     bool `toml:"skip_checksum"`                // --skip checksum
	SkipMinmax       bool `toml:"skip_minmax"`                  // --skip minmax
	SkipThumbnails   bool `toml:"skip_thumbnails"`              // --skip thumbnails
	SkipUpgrade      bool `toml:"skip_upgrade"`                 // --skip upgrade
}

// DefaultImportConfig returns the import defaults: two uploads and two filesets at once, no skips.
func DefaultImportConfig() ImportConfig {
	return ImportConfig{ParallelUpload: 2, ParallelFilesets: 2}
}

// Validate checks the parallelism (top-level keys).
func (c ImportConfig) Validate() error {
	var p settings.Problems
	if c.ParallelUpload < 1 {
		p.Add("parallel_upload_per_worker", "must be at least 1, got %d", c.ParallelUpload)
	}
	if c.ParallelFilesets < 1 {
		p.Add("parallel_filesets_per_worker", "must be at least 1, got %d", c.ParallelFilesets)
	}
	return p.Err()
}

// Config is the [omero] table: the CLI, the server and the admin that opens sessions for users,
// and the storage of in-place imports. The agent fills the fields below the table's keys.
type Config struct {
	CLI               string        `toml:"cli"`                // path of the omero program
	Host              string        `toml:"host"`               // env OMERO_HOST
	Port              int           `toml:"port"`               // env OMERO_PORT
	AdminUser         string        `toml:"user"`               // the admin that logs in for others (--sudo); env OMERO_USER
	AdminPassword     string        `toml:"password"`           // env OMERO_PASSWORD; only ever in the login call's environment
	ManagedRepository string        `toml:"managed_repository"` // the server's ManagedRepository as this host sees it
	LocalTmpRoot      string        `toml:"local_tmp_root"`     // parent of preprocessing's temp folders (used by preprocess)
	ImportTimeout     time.Duration `toml:"import_timeout"`     // an import running longer is killed
	CallTimeout       time.Duration `toml:"call_timeout"`       // login, obj batches, logout…
	ConnectRetries    int           `toml:"connect_retries"`    // extra tries of an unreachable server
	ConnectBackoff    time.Duration `toml:"connect_backoff"`    // wait before the first retry, doubled each time
	SessionRoot       string        `toml:"session_dir"`        // each order's OMERO_SESSIONDIR is SessionRoot/<uuid>
	DryRun            bool          `toml:"dry_run"`            // the runner logs commands and imports nothing
	// Zarr is what orders do with OME-Zarr folders: register (in place, omero zarr import), import
	// (omero import) or refuse (order.ZarrMode); a rule's zarr wins. Env USE_REGISTER_ZARR.
	Zarr string `toml:"zarr"`
	// ContinueOnError passes -c: the importer tries every fileset after a failed one and exits 0;
	// the order still knows which files failed, from the importer's log.
	ContinueOnError bool `toml:"continue_on_error"`
	// Env is extra environment for every call (NAME=VALUE). The child environment is otherwise
	// PATH, HOME, LANG, LC_ALL, TMPDIR, OMERODIR, XDG_CACHE_HOME, OMERO_* and JAVA_* of this
	// process, plus the variables PassEnv names.
	Env     []string `toml:"env"`
	PassEnv []string `toml:"pass_env"`

	// Set by the agent from other parts' settings (or by tests); not keys of the [omero] table.
	ImportConfig `toml:"-"`    // the top-level import keys
	LogDir       string        `toml:"-"` // log_dir: cli.<uuid>.logs and cli.<uuid>.errs go here
	KillGrace    time.Duration `toml:"-"` // between SIGTERM and SIGKILL of a cancelled call; 0: 5 seconds
	// ReadUsers: the login of an order also reads its user's name and e-mail address (`user info
	// --style json` in the same `omero load`), unless a login read them within the last hour;
	// Session.Person and Known return them (for notifications).
	ReadUsers bool `toml:"-"`
}

// DefaultConfig returns the [omero] defaults with DefaultImportConfig; LogDir is left to the agent.
func DefaultConfig() Config {
	return Config{
		CLI:               "omero",
		Host:              "localhost",
		Port:              4064,
		AdminUser:         "root",
		ManagedRepository: "/OMERO/ManagedRepository",
		LocalTmpRoot:      "/OMERO/OMERO_inplace",
		ImportTimeout:     6 * time.Hour,
		CallTimeout:       5 * time.Minute,
		ConnectRetries:    3,
		ConnectBackoff:    5 * time.Second,
		SessionRoot:       filepath.Join(os.TempDir(), "omero-adi-sessions"),
		Zarr:              string(order.ZarrRegister),
		ImportConfig:      DefaultImportConfig(),
	}
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Validate checks the [omero] keys (key names relative to the table); ImportConfig has its own
// Validate. It does not ask for the password: only running imports needs it (New does).
func (c Config) Validate() error {
	var p settings.Problems
	if c.CLI == "" {
		p.Add("cli", "must name the omero command")
	}
	if c.Host == "" || strings.HasPrefix(c.Host, "-") || strings.ContainsAny(c.Host, " \t\n") {
		p.Add("host", "must be the OMERO server's host name, got %q (env OMERO_HOST)", c.Host)
	}
	if c.Port < 1 || c.Port > 65535 {
		p.Add("port", "must be a port number, got %d (env OMERO_PORT)", c.Port)
	}
	if c.AdminUser == "" || strings.HasPrefix(c.AdminUser, "-") {
		p.Add("user", "must name the admin that logs in for others, got %q (env OMERO_USER)", c.AdminUser)
	}
	for key, v := range map[string]string{"managed_repository": c.ManagedRepository, "session_dir": c.SessionRoot} {
		if !filepath.IsAbs(v) {
			p.Add(key, "must be an absolute path, got %q", v)
		}
	}
	if r := c.LocalTmpRoot; !filepath.IsAbs(r) || filepath.Clean(r) != r || r == "/" || strings.ContainsAny(r, ":,\n") {
		p.Add("local_tmp_root", "must be a clean absolute path below / without ':' or ',', got %q", r)
	}
	p.Positive("import_timeout", c.ImportTimeout, "6h")
	p.Positive("call_timeout", c.CallTimeout, "5m")
	if _, err := order.ParseZarrMode(c.Zarr); err != nil || c.Zarr == "" {
		p.Add("zarr", "must be register, import or refuse, got %q (env USE_REGISTER_ZARR: true or false)", c.Zarr)
	}
	if c.ConnectRetries < 0 {
		p.Add("connect_retries", "must be at least 0, got %d", c.ConnectRetries)
	}
	if c.ConnectBackoff < 0 {
		p.Add("connect_backoff", "must not be negative, got %q", c.ConnectBackoff)
	}
	for i, kv := range c.Env {
		name, _, ok := strings.Cut(kv, "=")
		switch {
		case !ok || !envNameRE.MatchString(name):
			p.Add(fmt.Sprintf("env[%d]", i), "must be NAME=VALUE with NAME of letters, digits and '_', got %q", kv)
		case secretEnv[name]:
			p.Add(fmt.Sprintf("env[%d]", i), "%s may not be set for the CLI: the admin password and the database URL reach the login call only", name)
		}
	}
	for i, name := range c.PassEnv {
		switch {
		case !envNameRE.MatchString(name):
			p.Add(fmt.Sprintf("pass_env[%d]", i), "must name an environment variable (letters, digits and '_'), got %q", name)
		case secretEnv[name]:
			p.Add(fmt.Sprintf("pass_env[%d]", i), "%s is never passed to the CLI: the admin password and the database URL reach the login call only", name)
		}
	}
	return p.Err()
}
