package preprocess

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/settings"
)

// Config is the [preprocessing] table: how containers run. The fields below the table's keys are
// filled by the agent from their owners' settings (or by tests).
type Config struct {
	Runtime    string              `toml:"runtime"`     // container engine binary
	ExtraArgs  []string            `toml:"extra_args"`  // extra `podman run` flags, e.g. --runtime runc --network=none
	UsernsMode string              `toml:"userns_mode"` // "keep-id" gives --userns=keep-id (env PODMAN_USERNS_MODE)
	Timeout    time.Duration       `toml:"timeout"`     // per container run
	Local      map[string][]string `toml:"local"`       // image -> local command argv prefix, same arguments and JSON contract
	// BindRetryAttempts is how often a container run is tried when the runtime fails with
	// "statfs …: device or resource busy" (a CIFS/DFS share briefly busy while the bind mount is
	// set up); BindRetryDelay is the wait before the second try, doubled after each further one.
	BindRetryAttempts int           `toml:"bind_retry_attempts"`
	BindRetryDelay    time.Duration `toml:"bind_retry_delay"`

	// LocalTmpRoot is the parent of the per-order temp folders: [omero] local_tmp_root, which
	// runner/omero's Config checks.
	LocalTmpRoot string `toml:"-"`
	// ProcessedFolder is the name of the folder beside the originals for the container's outputs
	// and metadata.csv: processed_folder, which the runner's Config checks with ValidFolderName.
	ProcessedFolder string   `toml:"-"`
	Env             []string `toml:"-"` // extra KEY=VALUE for the child, on top of the filtered environment
}

// DefaultConfig returns the [preprocessing] defaults; LocalTmpRoot is left to the agent.
func DefaultConfig() Config {
	return Config{
		Runtime:           "podman",
		Timeout:           2 * time.Hour,
		BindRetryAttempts: 3,
		BindRetryDelay:    2 * time.Second,
		ProcessedFolder:   DefaultProcessedFolder,
	}
}

// Validate checks the [preprocessing] keys; key names are relative to the table.
func (c Config) Validate() error {
	var p settings.Problems
	if c.Runtime == "" {
		p.Add("runtime", "must name the container runtime (podman)")
	}
	for i, a := range c.ExtraArgs {
		if a == "" {
			p.Add(fmt.Sprintf("extra_args[%d]", i), "must not be empty")
		}
	}
	if !settings.OneOf(c.UsernsMode, "", "keep-id") {
		p.Add("userns_mode", "must be empty or keep-id, got %q (env PODMAN_USERNS_MODE)", c.UsernsMode)
	}
	p.Positive("timeout", c.Timeout, "2h")
	for _, image := range slices.Sorted(maps.Keys(c.Local)) {
		key := fmt.Sprintf("local.%q", image)
		if err := order.CheckImage(image); err != nil {
			p.Add(key, "%v", err)
		}
		if argv := c.Local[image]; len(argv) == 0 || argv[0] == "" {
			p.Add(key, "must be a command, e.g. [\"/usr/local/bin/convert\"]")
		}
	}
	if c.BindRetryAttempts < 1 {
		p.Add("bind_retry_attempts", "must be at least 1, got %d", c.BindRetryAttempts)
	}
	p.Positive("bind_retry_delay", c.BindRetryDelay, "2s")
	return p.Err()
}

// ValidFolderName checks a processed-folder name: one relative path element, not "." or "..",
// without ':' or ',' (they would break a bind mount) or glob characters (watch rules exclude it).
func ValidFolderName(name string) error {
	switch {
	case name == "":
		return errors.New("must not be empty")
	case name == "." || name == ".." || strings.ContainsAny(name, "/\\:,\n*?[]{}"):
		return errors.New("must be one folder name (no '/', ':', ',' or glob characters, not '.' or '..')")
	}
	return nil
}
