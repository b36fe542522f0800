package main

import (
	"fmt"
	"os"
	"path/filepath"
)

// fetchJars is `omero import --fetch-jars VERSION`: omero-py (plugins/import.py) downloads
// OMERO.java.zip of that release into its jar cache, $XDG_CACHE_HOME (default ~/.cache)/OMERO.py/jars,
// unpacks it there and writes OMERO.java.txt naming the unpacked folder, whose libs/ holds the
// jars. The double has no network: it lays out the same folders with a stand-in jar. Like the
// real call it needs no session and no server, so it runs without a state file.
func fetchJars(args []string) error {
	if len(args) != 1 || args[0] == "" {
		return usageError("omero import", "argument --fetch-jars: expected one argument")
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return die(1, "no cache folder: %v", err)
		}
		cache = filepath.Join(home, ".cache")
	}
	jars := filepath.Join(cache, "OMERO.py", "jars")
	name := "OMERO.java-" + args[0] + "-ice36"
	libs := filepath.Join(jars, name, "libs")
	if err := os.MkdirAll(libs, 0o755); err != nil {
		return die(1, "%v", err)
	}
	if err := os.WriteFile(filepath.Join(libs, "omero-blitz.jar"), []byte("double\n"), 0o644); err != nil {
		return die(1, "%v", err)
	}
	if err := os.WriteFile(filepath.Join(jars, "OMERO.java.txt"), []byte(name+"\n"), 0o644); err != nil {
		return die(1, "%v", err)
	}
	fmt.Fprintf(os.Stderr, "Downloaded OMERO.java %s to %s\n", args[0], filepath.Join(jars, name))
	return nil
}
