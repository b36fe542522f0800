// Package agent holds the agent's settings (TOML over defaults, environment overrides, validation),
// wires the parts together (database, runner, watcher), and runs them under one lifecycle with
// signals, health and metrics endpoints, and systemd notification.
package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/fspath"
	"github.com/omero-adi/omero-adi/rules"
	"github.com/omero-adi/omero-adi/runner/preprocess"
)

// DefaultConfigPath is used when neither --config nor OMERO_ADI_CONFIG names a settings file.
const DefaultConfigPath = "/etc/omero-adi/settings.toml"

// Duration is a time.Duration written as a string in TOML ("30s", "6h").
type Duration = rules.Duration

// Config is the whole settings file. Top-level names follow the old service's settings.yml.
type Config struct {
	IngestTrackingDB          string   `toml:"ingest_tracking_db"`
	BaseDir                   string   `toml:"base_dir"`
	LogLevel                  string   `toml:"log_level"`
	LogFormat                 string   `toml:"log_format"`
	LogFilePath               string   `toml:"log_file_path"`
	LogDir                    string   `toml:"log_dir"`
	MaxWorkers                int      `toml:"max_workers"`
	ParallelUploadPerWorker   int      `toml:"parallel_upload_per_worker"`
	ParallelFilesetsPerWorker int      `toml:"parallel_filesets_per_worker"`
	SkipAll                   bool     `toml:"skip_all"`
	SkipChecksum              bool     `toml:"skip_checksum"`
	SkipMinmax                bool     `toml:"skip_minmax"`
	SkipThumbnails            bool     `toml:"skip_thumbnails"`
	SkipUpgrade               bool     `toml:"skip_upgrade"`
	AnnotationNamespace       string   `toml:"annotation_namespace"`
	AnnotatePlateImages       bool     `toml:"annotate_plate_images"`
	PollInterval              Duration `toml:"poll_interval"`
	Lease                     Duration `toml:"lease"`
	RecoverInterrupted        string   `toml:"recover_interrupted"`
	MaxAttempts               int      `toml:"max_attempts"`
	RetryBackoff              Duration `toml:"retry_backoff"`
	ShutdownTimeout           Duration `toml:"shutdown_timeout"`
	Listen                    string   `toml:"listen"`
	WorkerName                string   `toml:"worker_name"`
	RulesDir                  string   `toml:"rules_dir"`
	LegacyPendingMaxAge       Duration `toml:"legacy_pending_max_age"`
	ProcessedFolder           string   `toml:"processed_folder"`

	Omero         OmeroConfig            `toml:"omero"`
	Preprocessing PreprocessingConfig    `toml:"preprocessing"`
	Groups        map[string]GroupConfig `toml:"groups"`
	Watch         WatchConfig            `toml:"watch"`
	Rules         []rules.Rule           `toml:"rules"`

	// Path is the settings file this was loaded from ("" when none); set by Load.
	Path string `toml:"-"`
}

// OmeroConfig is the [omero] table: the OMERO CLI and server, and in-place import storage.
type OmeroConfig struct {
	CLI               string   `toml:"cli"`
	Host              string   `toml:"host"`
	Port              int      `toml:"port"`
	User              string   `toml:"user"`
	Password          string   `toml:"password"`
	ManagedRepository string   `toml:"managed_repository"`
	LocalTmpRoot      string   `toml:"local_tmp_root"`
	ImportTimeout     Duration `toml:"import_timeout"`
	CallTimeout       Duration `toml:"call_timeout"`
	ConnectRetries    int      `toml:"connect_retries"`
	ConnectBackoff    Duration `toml:"connect_backoff"`
	SessionDir        string   `toml:"session_dir"`
	DryRun            bool     `toml:"dry_run"`
	// Env (NAME=VALUE) and PassEnv (names copied from the agent's environment) reach every omero
	// call, e.g. a proxy, PYTHONPATH or LD_LIBRARY_PATH.
	Env     []string `toml:"env"`
	PassEnv []string `toml:"pass_env"`
}

// PreprocessingConfig is the [preprocessing] table: how containers run.
type PreprocessingConfig struct {
	Runtime    string              `toml:"runtime"`
	ExtraArgs  []string            `toml:"extra_args"`
	UsernsMode string              `toml:"userns_mode"`
	Timeout    Duration            `toml:"timeout"`
	Local      map[string][]string `toml:"local"`
	// BindRetryAttempts and BindRetryDelay retry a container run that failed with the runtime's
	// transient "statfs …: device or resource busy" on a CIFS share: delay, then doubled.
	BindRetryAttempts int      `toml:"bind_retry_attempts"`
	BindRetryDelay    Duration `toml:"bind_retry_delay"`
}

// GroupConfig is one [groups.NAME] table.
type GroupConfig struct {
	Roots []string `toml:"roots"`
}

// WatchConfig is the [watch] table.
type WatchConfig struct {
	Mode           string   `toml:"mode"`
	RescanInterval Duration `toml:"rescan_interval"`
	PollInterval   Duration `toml:"poll_interval"`
}

func dur(d time.Duration) Duration { return Duration{Duration: d} }

// Defaults returns the settings used for every key the file does not set.
func Defaults() Config {
	return Config{
		IngestTrackingDB:          "sqlite:////var/lib/omero-adi/adi.db",
		BaseDir:                   "/data",
		LogLevel:                  "info",
		LogFormat:                 "text",
		LogDir:                    "/var/log/omero-adi",
		MaxWorkers:                4,
		ParallelUploadPerWorker:   2,
		ParallelFilesetsPerWorker: 2,
		AnnotationNamespace:       "biomero.import",
		PollInterval:              dur(5 * time.Second),
		Lease:                     dur(60 * time.Second),
		RecoverInterrupted:        "fail",
		MaxAttempts:               3,
		RetryBackoff:              dur(time.Minute),
		ShutdownTimeout:           dur(30 * time.Second),
		Listen:                    "127.0.0.1:9464",
		LegacyPendingMaxAge:       dur(db.DefaultLegacyPendingMaxAge),
		ProcessedFolder:           ".processed",
		Omero: OmeroConfig{
			CLI:               "omero",
			Host:              "localhost",
			Port:              4064,
			User:              "root",
			ManagedRepository: "/OMERO/ManagedRepository",
			LocalTmpRoot:      "/OMERO/OMERO_inplace",
			ImportTimeout:     dur(6 * time.Hour),
			CallTimeout:       dur(5 * time.Minute),
			ConnectRetries:    3,
			ConnectBackoff:    dur(5 * time.Second),
		},
		Preprocessing: PreprocessingConfig{
			Runtime:           "podman",
			Timeout:           dur(2 * time.Hour),
			BindRetryAttempts: 3,
			BindRetryDelay:    dur(2 * time.Second),
		},
		Watch: WatchConfig{
			Mode:           "auto",
			RescanInterval: dur(time.Hour),
			PollInterval:   dur(30 * time.Second),
		},
	}
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// secretEnv are the variables omero.env and omero.pass_env may not name.
var secretEnv = map[string]bool{"OMERO_PASSWORD": true, "INGEST_TRACKING_DB_URL": true}

// EnvOverrides lists the environment variables that win over the settings file.
var EnvOverrides = []string{
	"INGEST_TRACKING_DB_URL", "OMERO_HOST", "OMERO_PORT", "OMERO_USER", "OMERO_PASSWORD",
	"PODMAN_USERNS_MODE", "PROCESSED_DATA_FOLDER", "ADI_LOG_LEVEL",
}

// ErrSettings marks errors in the settings (file, environment or rules): exit code 2.
var ErrSettings = errors.New("settings")

// SettingsError is an error in the settings; it unwraps to ErrSettings.
type SettingsError struct{ Msg string }

func (e *SettingsError) Error() string        { return e.Msg }
func (e *SettingsError) Is(target error) bool { return target == ErrSettings }

func settingsErr(format string, args ...any) error {
	return &SettingsError{Msg: fmt.Sprintf(format, args...)}
}

// Load reads the settings file at path over the defaults, applies the environment (getenv, usually
// os.Getenv), and validates. A missing file is an error unless allowMissing (the default path was
// not asked for explicitly): then the defaults and the environment are used alone.
func Load(path string, allowMissing bool, getenv func(string) string) (Config, error) {
	cfg := Defaults()
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := decode(string(data), &cfg); err != nil {
			return cfg, settingsErr("settings file %s: %v", path, err)
		}
		cfg.Path = path
		if dir, err := filepath.Abs(filepath.Dir(path)); err == nil {
			cfg.resolvePaths(dir)
		}
	case errors.Is(err, fs.ErrNotExist) && allowMissing:
	default:
		return cfg, settingsErr("read settings: %v", err)
	}
	if cfg.RulesDir != "" {
		extra, err := rules.LoadDir(cfg.RulesDir)
		if err != nil {
			return cfg, settingsErr("rules_dir: %v", err)
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

func decode(text string, cfg *Config) error {
	md, err := toml.Decode(text, cfg)
	if err != nil {
		return err
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = strconv.Quote(k.String())
		}
		return fmt.Errorf("unknown key %s", strings.Join(keys, ", "))
	}
	return nil
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
		&c.Omero.LocalTmpRoot, &c.Omero.SessionDir} {
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
	set("OMERO_USER", &c.Omero.User)
	set("OMERO_PASSWORD", &c.Omero.Password)
	set("PODMAN_USERNS_MODE", &c.Preprocessing.UsernsMode)
	set("PROCESSED_DATA_FOLDER", &c.ProcessedFolder)
	set("ADI_LOG_LEVEL", &c.LogLevel)
	if v := getenv("OMERO_PORT"); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil {
			return settingsErr("env OMERO_PORT: not a port number: %q", v)
		}
		c.Omero.Port = p
	}
	return nil
}

// Validate checks every key; the error names the dotted key and the bad value.
func (c *Config) Validate() error {
	var errs []string
	bad := func(key, format string, args ...any) {
		errs = append(errs, key+": "+fmt.Sprintf(format, args...))
	}
	if _, _, err := db.ParseURL(c.IngestTrackingDB); err != nil {
		bad("ingest_tracking_db", "%v", err)
	}
	if !filepath.IsAbs(c.BaseDir) {
		bad("base_dir", "must be an absolute path, got %q", c.BaseDir)
	}
	if !oneOf(c.LogLevel, "trace", "debug", "info", "warn", "warning", "error") {
		bad("log_level", "must be one of trace, debug, info, warn, error; got %q", c.LogLevel)
	}
	if !oneOf(c.LogFormat, "text", "json") {
		bad("log_format", "must be text or json, got %q", c.LogFormat)
	}
	if c.LogDir == "" {
		bad("log_dir", "must be set (per-order logs go there)")
	}
	positive := func(key string, v, min int) {
		if v < min {
			bad(key, "must be at least %d, got %d", min, v)
		}
	}
	positive("max_workers", c.MaxWorkers, 1)
	positive("parallel_upload_per_worker", c.ParallelUploadPerWorker, 1)
	positive("parallel_filesets_per_worker", c.ParallelFilesetsPerWorker, 1)
	positive("max_attempts", c.MaxAttempts, 1)
	positive("omero.connect_retries", c.Omero.ConnectRetries, 0)
	positive("preprocessing.bind_retry_attempts", c.Preprocessing.BindRetryAttempts, 1)
	if c.AnnotationNamespace == "" {
		bad("annotation_namespace", "must not be empty")
	}
	durations := []struct {
		key string
		d   Duration
	}{
		{"poll_interval", c.PollInterval}, {"lease", c.Lease}, {"retry_backoff", c.RetryBackoff},
		{"shutdown_timeout", c.ShutdownTimeout}, {"omero.import_timeout", c.Omero.ImportTimeout},
		{"omero.call_timeout", c.Omero.CallTimeout}, {"preprocessing.timeout", c.Preprocessing.Timeout},
		{"watch.rescan_interval", c.Watch.RescanInterval}, {"watch.poll_interval", c.Watch.PollInterval},
		{"legacy_pending_max_age", c.LegacyPendingMaxAge}, {"preprocessing.bind_retry_delay", c.Preprocessing.BindRetryDelay},
	}
	for _, d := range durations {
		if d.d.Duration <= 0 {
			bad(d.key, "must be a positive duration such as \"30s\", got %q", d.d.String())
		}
	}
	if c.Omero.ConnectBackoff.Duration < 0 {
		bad("omero.connect_backoff", "must not be negative, got %q", c.Omero.ConnectBackoff.String())
	}
	if c.Lease.Duration > 0 && c.Lease.Duration < 3*time.Second {
		bad("lease", "must be at least 3s so heartbeats can renew it, got %q", c.Lease.String())
	}
	if !oneOf(c.RecoverInterrupted, "fail", "retry") {
		bad("recover_interrupted", "must be fail or retry, got %q", c.RecoverInterrupted)
	}
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			bad("listen", "must be host:port or empty, got %q", c.Listen)
		}
	}
	if c.Omero.CLI == "" {
		bad("omero.cli", "must name the omero command")
	}
	if c.Omero.Host == "" {
		bad("omero.host", "must not be empty (env OMERO_HOST)")
	}
	if c.Omero.Port < 1 || c.Omero.Port > 65535 {
		bad("omero.port", "must be a port number, got %d", c.Omero.Port)
	}
	if c.Omero.User == "" {
		bad("omero.user", "must not be empty (env OMERO_USER)")
	}
	for key, p := range map[string]string{
		"omero.managed_repository": c.Omero.ManagedRepository, "omero.local_tmp_root": c.Omero.LocalTmpRoot,
	} {
		if !filepath.IsAbs(p) {
			bad(key, "must be an absolute path, got %q", p)
		}
	}
	for i, kv := range c.Omero.Env {
		name, _, ok := strings.Cut(kv, "=")
		switch {
		case !ok || !envNameRE.MatchString(name):
			bad(fmt.Sprintf("omero.env[%d]", i), "must be NAME=VALUE with NAME of letters, digits and '_', got %q", kv)
		case secretEnv[name]:
			bad(fmt.Sprintf("omero.env[%d]", i), "%s may not be set for the CLI: the admin password and the database URL reach the login call only", name)
		}
	}
	for i, name := range c.Omero.PassEnv {
		switch {
		case !envNameRE.MatchString(name):
			bad(fmt.Sprintf("omero.pass_env[%d]", i), "must name an environment variable (letters, digits and '_'), got %q", name)
		case secretEnv[name]:
			bad(fmt.Sprintf("omero.pass_env[%d]", i), "%s is never passed to the CLI: the admin password and the database URL reach the login call only", name)
		}
	}
	if c.Omero.SessionDir != "" && !filepath.IsAbs(c.Omero.SessionDir) {
		bad("omero.session_dir", "must be an absolute path, got %q", c.Omero.SessionDir)
	}
	if err := preprocess.ValidFolderName(c.ProcessedFolder); err != nil {
		bad("processed_folder", "%v, got %q (env PROCESSED_DATA_FOLDER)", err, c.ProcessedFolder)
	}
	if c.Preprocessing.Runtime == "" {
		bad("preprocessing.runtime", "must name the container runtime (podman)")
	}
	if !oneOf(c.Preprocessing.UsernsMode, "", "keep-id") {
		bad("preprocessing.userns_mode", "must be empty or keep-id, got %q (env PODMAN_USERNS_MODE)", c.Preprocessing.UsernsMode)
	}
	for _, image := range sortedKeys(c.Preprocessing.Local) {
		if argv := c.Preprocessing.Local[image]; len(argv) == 0 || argv[0] == "" {
			bad(fmt.Sprintf("preprocessing.local.%q", image), "must be a command, e.g. [\"/usr/local/bin/convert\"]")
		}
	}
	for _, g := range sortedKeys(c.Groups) {
		for i, r := range c.Groups[g].Roots {
			if !filepath.IsAbs(r) {
				bad(fmt.Sprintf("groups.%s.roots[%d]", g, i), "must be an absolute path, got %q", r)
			} else if !fspath.Within(filepath.Clean(c.BaseDir), filepath.Clean(r)) {
				bad(fmt.Sprintf("groups.%s.roots[%d]", g, i), "%q is outside base_dir %q", r, c.BaseDir)
			}
		}
	}
	if !oneOf(c.Watch.Mode, "auto", "events", "poll") {
		bad("watch.mode", "must be auto, events or poll, got %q", c.Watch.Mode)
	}
	if len(errs) == 0 && len(c.Rules) > 0 {
		if _, err := c.RuleSet(); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return &SettingsError{Msg: "invalid settings: " + strings.Join(errs, "; ")}
	}
	return nil
}

// GroupRoots returns the allowed roots per group ([groups.X] roots).
func (c *Config) GroupRoots() map[string][]string {
	m := make(map[string][]string, len(c.Groups))
	for g, gc := range c.Groups {
		if len(gc.Roots) > 0 {
			m[g] = gc.Roots
		}
	}
	return m
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
	return rules.Compile(rs, c.BaseDir, c.GroupRoots())
}

// RecoverPolicy is the database recovery policy that the settings ask for.
func (c *Config) RecoverPolicy() db.RecoverPolicy {
	return db.RecoverPolicy{
		Retry:       c.RecoverInterrupted == "retry",
		MaxAttempts: c.MaxAttempts,
		Backoff:     c.RetryBackoff.Duration,
	}
}

// Masked returns a copy that is safe to print: passwords hidden, database URL masked.
func (c Config) Masked() Config {
	if c.Omero.Password != "" {
		c.Omero.Password = "***"
	}
	c.IngestTrackingDB = db.MaskURL(c.IngestTrackingDB)
	return c
}

func oneOf(v string, allowed ...string) bool {
	for _, a := range allowed {
		if v == a {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ErrSettingsf returns a settings error (exit code 2) with a formatted message.
func ErrSettingsf(format string, args ...any) error { return settingsErr(format, args...) }
