package omero

import (
	"errors"
	"os"
)

// logProbe is how much room an import's logs must find in log_dir before it starts: the ids of
// a large import take a few kB; the rest is slack for the importer's log.
const logProbe = 256 << 10

// probeSpace writes n bytes to path, syncs them and removes the file again: it fails when the
// filesystem cannot take them (full, read-only, over quota).
func probeSpace(path string, n int) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, werr := f.Write(make([]byte, n))
	if werr == nil {
		werr = f.Sync()
	}
	cerr := f.Close()
	rerr := os.Remove(path)
	return errors.Join(werr, cerr, rerr)
}
