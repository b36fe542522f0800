// Package agent holds the agent's settings (TOML over defaults, environment overrides, validation),
// wires the parts together (database, runner, watcher), and runs them under one lifecycle with
// signals, health and metrics endpoints, and systemd notification.
package agent

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/integrity"
	"github.com/omero-adi/omero-adi/notify"
	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/retention"
	"github.com/omero-adi/omero-adi/rules"
	"github.com/omero-adi/omero-adi/runner"
	"github.com/omero-adi/omero-adi/runner/omero"
	"github.com/omero-adi/omero-adi/runner/preprocess"
	"github.com/omero-adi/omero-adi/settings"
	"github.com/omero-adi/omero-adi/watcher"
	"github.com/omero-adi/omero-adi/web"
)

// DefaultConfigPath is used when neither --config nor OMERO_ADI_CONFIG names a settings file.
const DefaultConfigPath = "/etc/omero-adi/settings.toml"

// The component settings that sit at the top level of the settings file (the old service's
// settings.yml was flat). Config embeds them under these names; each package owns its keys,
// their defaults (DefaultConfig) and their checks (Validate).
type (
	DBConfig     = db.Config          // ingest_tracking_db, legacy_pending_max_age
	DataConfig   = order.Config       // base_dir, [groups.NAME]
	RunnerConfig = runner.Config      // log_dir, max_workers, lease, recover_interrupted, …
	ImportConfig = omero.ImportConfig // parallel_*_per_worker, skip_*
)

// Config is the whole settings file: the agent's own keys (ProcessConfig), the components'
// top-level keys, their tables, and the watch rules.
type Config struct {
	ProcessConfig
	DBConfig
	DataConfig
	RunnerConfig
	ImportConfig

	Omero         omero.Config      `toml:"omero"`
	Preprocessing preprocess.Config `toml:"preprocessing"`
	Watch         watcher.Config    `toml:"watch"`
	Web           web.Config        `toml:"web"`
	Integrity     integrity.Config  `toml:"integrity"`
	Notify        notify.Config     `toml:"notify"`
	Retention     retention.Config  `toml:"retention"`
	Rules         []rules.Rule      `toml:"rules"`

	// Path is the settings file this was loaded from ("" when none); set by Load.
	Path string `toml:"-"`
}

// ProcessConfig holds the agent's own top-level keys: logging, the HTTP listener, its name and
// where more rules are.
type ProcessConfig struct {
	LogLevel    string `toml:"log_level"`     // env ADI_LOG_LEVEL wins
	LogFormat   string `toml:"log_format"`    // text | json
	LogFilePath string `toml:"log_file_path"` // also log to this file; "" = stderr only
	Listen      string `toml:"listen"`        // /metrics, /healthz, /readyz and the [web] status page; "" disables
	WorkerName  string `toml:"worker_name"`   // name in leases and history; "" = host:pid
	RulesDir    string `toml:"rules_dir"`     // a folder of *.toml files with more [[rules]]
}

// DefaultProcessConfig returns the agent's own defaults.
func DefaultProcessConfig() ProcessConfig {
	return ProcessConfig{LogLevel: "info", LogFormat: "text", Listen: "127.0.0.1:9464"}
}

// Validate checks the agent's own keys.
func (c ProcessConfig) Validate() error {
	var p settings.Problems
	if _, err := logrus.ParseLevel(c.LogLevel); err != nil {
		p.Add("log_level", "must be one of trace, debug, info, warn, error; got %q", c.LogLevel)
	}
	if !settings.OneOf(c.LogFormat, "text", "json") {
		p.Add("log_format", "must be text or json, got %q", c.LogFormat)
	}
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			p.Add("listen", "must be host:port or empty, got %q", c.Listen)
		}
	}
	return p.Err()
}

// Defaults returns the settings used for every key the file does not set: each component's
// DefaultConfig.
func Defaults() Config {
	return Config{
		ProcessConfig: DefaultProcessConfig(),
		DBConfig:      db.DefaultConfig(),
		DataConfig:    order.DefaultConfig(),
		RunnerConfig:  runner.DefaultConfig(),
		ImportConfig:  omero.DefaultImportConfig(),
		Omero:         omero.DefaultConfig(),
		Preprocessing: preprocess.DefaultConfig(),
		Watch:         watcher.DefaultConfig(),
		Web:           web.DefaultConfig(),
		Integrity:     integrity.DefaultConfig(),
		Notify:        notify.DefaultConfig(),
		Retention:     retention.DefaultConfig(),
	}
}

// EnvOverrides lists the environment variables that win over the settings file.
var EnvOverrides = []string{
	"INGEST_TRACKING_DB_URL", "OMERO_HOST", "OMERO_PORT", "OMERO_USER", "OMERO_PASSWORD",
	"PODMAN_USERNS_MODE", "PROCESSED_DATA_FOLDER", "ADI_LOG_LEVEL", "USE_REGISTER_ZARR", notify.PasswordEnv,
}

// Load reads the settings file at path over the defaults, applies the environment (getenv, usually
// os.Getenv), and validates. A missing file is an error unless allowMissing (the default path was
// not asked for explicitly): then the defaults and the environment are used alone.
func Load(path string, allowMissing bool, getenv func(string) string) (Config, error) {
	cfg := Defaults()
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := settings.Decode(string(data), &cfg); err != nil {
			return cfg, settings.Errorf("", "settings file %s: %v", path, err)
		}
		cfg.Path = path
		if dir, err := filepath.Abs(filepath.Dir(path)); err == nil {
			cfg.resolvePaths(dir)
		}
	case errors.Is(err, fs.ErrNotExist) && allowMissing:
	default:
		return cfg, settings.Errorf("", "read settings: %v", err)
	}
	if cfg.RulesDir != "" {
		extra, err := rules.LoadDir(cfg.RulesDir)
		if err != nil {
			return cfg, settings.Errorf("rules_dir", "%v", err)
		}
		cfg.Rules = append(cfg.Rules, extra...)
	}
	if err := cfg.applyEnv(getenv); err != nil {
		return cfg, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// resolvePaths makes the relative paths of a settings file relative to the file's folder, so that
// a settings file and its data can move together (the quick start relies on it). A relative SQLite
// URL (sqlite:///rel.db) is resolved the same way.
func (c *Config) resolvePaths(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	for _, p := range []*string{&c.BaseDir, &c.LogDir, &c.LogFilePath, &c.RulesDir, &c.Omero.ManagedRepository,
		&c.Omero.LocalTmpRoot, &c.Omero.SessionRoot, &c.Notify.TemplateFile} {
		abs(p)
	}
	for g, gc := range c.Groups {
		for i := range gc.Roots {
			abs(&gc.Roots[i])
		}
		c.Groups[g] = gc
	}
	for i := range c.Rules {
		abs(&c.Rules[i].Path)
	}
	if rel, ok := strings.CutPrefix(c.IngestTrackingDB, "sqlite:///"); ok && rel != "" && !strings.HasPrefix(rel, "/") {
		c.IngestTrackingDB = "sqlite:///" + filepath.Join(dir, rel)
	}
}

func (c *Config) applyEnv(getenv func(string) string) error {
	set := func(name string, dst *string) {
		if v := getenv(name); v != "" {
			*dst = v
		}
	}
	set("INGEST_TRACKING_DB_URL", &c.IngestTrackingDB)
	set("OMERO_HOST", &c.Omero.Host)
	set("OMERO_USER", &c.Omero.AdminUser)
	set("OMERO_PASSWORD", &c.Omero.AdminPassword)
	set("PODMAN_USERNS_MODE", &c.Preprocessing.UsernsMode)
	set("PROCESSED_DATA_FOLDER", &c.ProcessedFolder)
	set("ADI_LOG_LEVEL", &c.LogLevel)
	if v := getenv("USE_REGISTER_ZARR"); v != "" {
		m, err := order.ParseRegisterZarr(v)
		if err != nil {
			return settings.Errorf("env USE_REGISTER_ZARR", "%v", err)
		}
		c.Omero.Zarr = string(m)
	}
	if v := getenv("OMERO_PORT"); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil {
			return settings.Errorf("env OMERO_PORT", "not a port number: %q", v)
		}
		c.Omero.Port = p
	}
	return nil
}

// Validate checks every key with its owner's Validate; the error names each dotted key and the
// bad value. The rules are compiled only when everything else is valid (they depend on base_dir).
func (c *Config) Validate() error {
	var p settings.Problems
	p.Include("", c.ProcessConfig.Validate())
	p.Include("", c.DBConfig.Validate())
	p.Include("", c.DataConfig.Validate())
	p.Include("", c.RunnerConfig.Validate())
	p.Include("", c.ImportConfig.Validate())
	p.Include("omero", c.Omero.Validate())
	p.Include("preprocessing", c.Preprocessing.Validate())
	p.Include("watch", c.Watch.Validate())
	p.Include("web", c.Web.Validate())
	if c.Web.Enabled && c.Listen == "" {
		p.Add("web.enabled", "the status page is served on listen, which is empty: set listen (e.g. \"127.0.0.1:9464\")")
	}
	p.Include("integrity", c.Integrity.Validate())
	p.Include("notify", c.Notify.Validate())
	p.Include("retention", c.Retention.Validate())
	if p.Err() == nil && len(c.Rules) > 0 {
		if _, err := c.RuleSet(); err != nil {
			p.Include("", err)
		}
	}
	return p.ErrIn("invalid settings")
}

// RuleSet compiles the watch rules against base_dir and the groups' roots. A processed_folder
// that is not hidden (hidden names are ignored anyway) is excluded from every rule, so that
// converted files never become orders of their own.
func (c *Config) RuleSet() (*rules.Set, error) {
	rs := c.Rules
	if name := c.ProcessedFolder; !rules.IgnoredName(name) {
		rs = make([]rules.Rule, len(c.Rules))
		for i, r := range c.Rules {
			r.Exclude = append(append([]string(nil), r.Exclude...), "**/"+name, "**/"+name+"/**")
			rs[i] = r
		}
	}
	return rules.Compile(rs, c.BaseDir, c.DataConfig.Roots().Groups)
}

// Masked returns a copy that is safe to print: passwords hidden, database URL masked.
func (c Config) Masked() Config {
	if c.Omero.AdminPassword != "" {
		c.Omero.AdminPassword = "***"
	}
	c.IngestTrackingDB = db.MaskURL(c.IngestTrackingDB)
	return c
}
