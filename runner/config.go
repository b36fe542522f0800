package runner

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/runner/preprocess"
	"github.com/omero-adi/omero-adi/settings"
)

// Recovery policies of recover_interrupted.
const (
	RecoverFail  = "fail"
	RecoverRetry = "retry"
)

// minLease is the shortest lease heartbeats can keep renewed (every third of it).
const minLease = 3 * time.Second

// Config holds the runner's settings: top-level keys of the settings file, named as in the old
// service's settings.yml, and, below them, what the agent fills in from other owners.
type Config struct {
	LogDir              string        `toml:"log_dir"`               // per-order logs (the CLI's and the container's)
	MaxWorkers          int           `toml:"max_workers"`           // orders processed at once
	PollInterval        time.Duration `toml:"poll_interval"`         // database poll when no notification arrives
	Lease               time.Duration `toml:"lease"`                 // a running order's lease; heartbeats renew it every Lease/3
	RecoverInterrupted  string        `toml:"recover_interrupted"`   // RecoverFail or RecoverRetry
	MaxAttempts         int           `toml:"max_attempts"`          // with RecoverRetry: give up after this many attempts
	RetryBackoff        time.Duration `toml:"retry_backoff"`         // with RecoverRetry: wait RetryBackoff × attempt
	ShutdownTimeout     time.Duration `toml:"shutdown_timeout"`      // running orders' grace period after the context ends
	AnnotationNamespace string        `toml:"annotation_namespace"`  // namespace of the MapAnnotations
	AnnotatePlateImages bool          `toml:"annotate_plate_images"` // also annotate every Image of an imported Plate
	// ProcessedFolder is the folder beside the originals where converted files go and a
	// metadata.csv is looked for (env PROCESSED_DATA_FOLDER); preprocessing gets it from here.
	ProcessedFolder string `toml:"processed_folder"`

	// Set by the agent from other parts' settings (or by tests); not keys of the file.
	Worker      string                `toml:"-"` // lease owner name, unique per process (host:pid)
	Roots       order.Roots           `toml:"-"` // where the files of an order may lie (base_dir, [groups])
	ManagedRepo string                `toml:"-"` // [omero] managed_repository as this host sees it
	DryRun      bool                  `toml:"-"` // [omero] dry_run: validate and log the command, import nothing
	Registerer  prometheus.Registerer `toml:"-"` // where the metrics go; nil: not registered
	// RecoverInterval is how often expired leases are recovered; 0 means Lease/2.
	RecoverInterval time.Duration `toml:"-"`
	// Zarr is what orders do with OME-Zarr folders ([omero] zarr; "" is order.ZarrRegister), and
	// ZarrRules the modes of the rules that set one, by rule name (an order's source).
	Zarr      order.ZarrMode            `toml:"-"`
	ZarrRules map[string]order.ZarrMode `toml:"-"`
	// Notifier, when set, names the notices each final stage writes with it (notifications).
	Notifier Notifier `toml:"-"`
}

// DefaultConfig returns the runner's defaults.
func DefaultConfig() Config {
	return Config{
		LogDir:              "/var/log/omero-adi",
		MaxWorkers:          4,
		PollInterval:        5 * time.Second,
		Lease:               60 * time.Second,
		RecoverInterrupted:  RecoverFail,
		MaxAttempts:         3,
		RetryBackoff:        time.Minute,
		ShutdownTimeout:     30 * time.Second,
		AnnotationNamespace: "biomero.import",
		ProcessedFolder:     preprocess.DefaultProcessedFolder,
	}
}

// Validate checks the settings-file keys; keys in its problems are top-level keys.
func (c Config) Validate() error {
	var p settings.Problems
	if c.LogDir == "" {
		p.Add("log_dir", "must be set (per-order logs go there)")
	}
	for _, n := range []struct {
		key string
		v   int
	}{{"max_workers", c.MaxWorkers}, {"max_attempts", c.MaxAttempts}} {
		if n.v < 1 {
			p.Add(n.key, "must be at least 1, got %d", n.v)
		}
	}
	p.Positive("poll_interval", c.PollInterval, "5s")
	p.Positive("lease", c.Lease, "60s")
	p.Positive("retry_backoff", c.RetryBackoff, "1m")
	p.Positive("shutdown_timeout", c.ShutdownTimeout, "30s")
	if c.Lease > 0 && c.Lease < minLease {
		p.Add("lease", "must be at least %s so heartbeats can renew it, got %q", minLease, c.Lease)
	}
	if !settings.OneOf(c.RecoverInterrupted, RecoverFail, RecoverRetry) {
		p.Add("recover_interrupted", "must be fail or retry, got %q", c.RecoverInterrupted)
	}
	if c.AnnotationNamespace == "" {
		p.Add("annotation_namespace", "must not be empty")
	}
	if err := preprocess.ValidFolderName(c.ProcessedFolder); err != nil {
		p.Add("processed_folder", "%v, got %q (env PROCESSED_DATA_FOLDER)", err, c.ProcessedFolder)
	}
	return p.Err()
}

// RecoverPolicy is the database recovery policy of recover_interrupted, max_attempts and
// retry_backoff.
func (c Config) RecoverPolicy() db.RecoverPolicy {
	return db.RecoverPolicy{Retry: c.RecoverInterrupted == RecoverRetry, MaxAttempts: c.MaxAttempts, Backoff: c.RetryBackoff}
}

// check is Validate plus what the agent must have filled in.
func (c Config) check() error {
	if err := c.Validate(); err != nil {
		return err
	}
	if c.Worker == "" {
		return fmt.Errorf("runner: worker name is empty")
	}
	return nil
}
