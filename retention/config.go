package retention

import (
	"time"

	"github.com/omero-adi/omero-adi/settings"
)

// Config is the [retention] table: whether the agent itself applies the rules' retention tables.
// Moving users' files is opt-in twice: a rule must have a [rules.retention] table, and the agent
// moves on its own only with an interval; otherwise only `omero-adi retention` moves.
type Config struct {
	// Interval is how often the agent (roles all and runner) plans and applies retention; 0 leaves
	// it to the command.
	Interval time.Duration `toml:"interval"`
}

// DefaultConfig returns the defaults: the agent moves nothing by itself.
func DefaultConfig() Config { return Config{} }

// Validate checks the interval: 0, or at least a minute.
func (c Config) Validate() error {
	var p settings.Problems
	if c.Interval != 0 && c.Interval < time.Minute {
		p.Add("interval", "must be 0s (only the omero-adi retention command moves files) or at least 1m, got %q", c.Interval)
	}
	return p.Err()
}
