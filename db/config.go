package db

import (
	"time"

	"github.com/omero-adi/omero-adi/settings"
)

// Config is the database's part of the settings file: two top-level keys, named as in the old
// service's settings.yml. The agent decodes it and hands the values to Open.
type Config struct {
	// IngestTrackingDB is the order database URL (see ParseURL); env INGEST_TRACKING_DB_URL wins.
	IngestTrackingDB string `toml:"ingest_tracking_db"`
	// LegacyPendingMaxAge: at the first migration of a Python-era database, pending orders older
	// than this end Import Failed instead of being imported (Options.LegacyPendingMaxAge).
	LegacyPendingMaxAge time.Duration `toml:"legacy_pending_max_age"`
}

// DefaultConfig returns the database defaults: the embedded SQLite database.
func DefaultConfig() Config {
	return Config{
		IngestTrackingDB:    "sqlite:////var/lib/omero-adi/adi.db",
		LegacyPendingMaxAge: DefaultLegacyPendingMaxAge,
	}
}

// Validate checks the URL's form (nothing is opened) and the age.
func (c Config) Validate() error {
	var p settings.Problems
	if _, _, err := ParseURL(c.IngestTrackingDB); err != nil {
		p.Add("ingest_tracking_db", "%v", err)
	}
	p.Positive("legacy_pending_max_age", c.LegacyPendingMaxAge, "240h")
	return p.Err()
}
