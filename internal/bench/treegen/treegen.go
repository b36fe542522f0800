// Package treegen builds directory trees for the watcher's benchmarks.
package treegen

import (
	"fmt"
	"os"
	"path/filepath"
)

// Build creates files small files spread over folders folders under dir, in two levels
// (dir/tNNNN/fNNNNN, 100 folders per top-level folder).
func Build(dir string, files, folders int) error {
	if folders < 1 {
		folders = 1
	}
	const perTop = 100
	data := []byte("0123456789abcdef")
	for f := 0; f < folders; f++ {
		d := filepath.Join(dir, fmt.Sprintf("t%04d", f/perTop), fmt.Sprintf("f%05d", f))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("build tree: %w", err)
		}
		n := files / folders
		if f < files%folders {
			n++
		}
		for i := 0; i < n; i++ {
			if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("img%05d.tif", i)), data, 0o644); err != nil {
				return fmt.Errorf("build tree: %w", err)
			}
		}
	}
	return nil
}
