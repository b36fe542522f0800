package integrity

import (
	"time"

	"github.com/omero-adi/omero-adi/settings"
)

// Hash modes: which files a check reads whole to compare their SHA-1 with OriginalFile.hash.
const (
	HashNone   = "none"   // sizes, kinds and times only
	HashSample = "sample" // the files of Config.Sample orders per run, in turn over the runs
	HashAll    = "all"    // every file of every order
)

// Config is the [integrity] table: the agent's periodic check of what its in-place orders linked.
type Config struct {
	// Interval is the time between two periodic checks; each check is paced so that it spreads
	// over about half of it. "0s" turns the periodic check off (`omero-adi integrity` still works).
	Interval time.Duration `toml:"interval"`
	// MaxStatPerS bounds how many files per second a check looks at (stat, readlink).
	MaxStatPerS int `toml:"max_stat_per_s"`
	// Hash is the periodic check's hash mode: none, sample or all.
	Hash string `toml:"hash"`
	// Sample is how many orders a sample check hashes per run.
	Sample int `toml:"sample"`
	// MaxCLIStarts bounds the omero CLI starts of one run (reading OMERO's checksums costs about
	// three per order); orders beyond it are checked without hashing.
	MaxCLIStarts int `toml:"max_cli_starts"`
}

// DefaultConfig returns the [integrity] defaults: daily, at most 200 files a second, no hashing.
func DefaultConfig() Config {
	return Config{Interval: 24 * time.Hour, MaxStatPerS: 200, Hash: HashNone, Sample: 5, MaxCLIStarts: 30}
}

// Validate checks the [integrity] keys (names relative to the table).
func (c Config) Validate() error {
	var p settings.Problems
	if c.Interval != 0 && c.Interval < time.Second {
		p.Add("interval", "must be at least \"1s\", or \"0s\" to turn the periodic check off, got %q", c.Interval)
	}
	if c.MaxStatPerS < 1 || c.MaxStatPerS > 1_000_000 {
		p.Add("max_stat_per_s", "must be between 1 and 1000000, got %d", c.MaxStatPerS)
	}
	if !settings.OneOf(c.Hash, HashNone, HashSample, HashAll) {
		p.Add("hash", "must be none, sample or all, got %q", c.Hash)
	}
	if c.Sample < 1 {
		p.Add("sample", "must be at least 1, got %d", c.Sample)
	}
	if c.MaxCLIStarts < 0 {
		p.Add("max_cli_starts", "must be at least 0, got %d", c.MaxCLIStarts)
	}
	return p.Err()
}
