// Command converter is a tiny preprocessing "container" for tests. It follows the container
// convention of preprocessing.md: --inputfile, --outputfolder, --altoutputfolder and any number of
// --key value parameters; it writes its results and prints them as a JSON list on the last stdout
// line. Logs go to stderr.
//
// Test parameters (all optional):
//
//	--nested yes             write a nested <name>.ome.zarr folder tree instead of <name>.ome.tiff
//	--results N              write N results for the one input (default 1)
//	--keyvalues list|object  shape of "keyvalues" (default list)
//	--fail MODE              misbehave: exit (non-zero exit), noout (nothing on stdout), badjson
//	                         (last line not JSON), outside (result path escapes the mounts with ..),
//	                         missing (result file not written), symlink (result is a symlink to
//	                         /etc/passwd), sleep (ignore SIGTERM and sleep an hour)
//	--pidfile PATH           write the process id there first (timeout tests)
//	--flood BYTES            print BYTES of log lines on stdout and as many on stderr first
//	--echoenv NAME[,NAME]    report each environment variable NAME as keyvalue env_NAME
//
// Every other parameter is echoed in the keyvalues as param_<key>.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "converter:", err)
		os.Exit(3)
	}
}

type param struct{ key, value string }

type options struct {
	input, out, alt string
	nested          bool
	results         int
	kvObject        bool
	fail            string
	pidfile         string
	flood           int
	echoenv         []string
	params          []param
}

func parse(args []string) (options, error) {
	o := options{results: 1}
	for i := 0; i < len(args); i += 2 {
		k, ok := strings.CutPrefix(args[i], "--")
		if !ok || k == "" {
			return o, fmt.Errorf("argument %d %q: want --key", i, args[i])
		}
		if i+1 >= len(args) {
			return o, fmt.Errorf("argument --%s: missing value", k)
		}
		v := args[i+1]
		switch k {
		case "inputfile":
			o.input = v
		case "outputfolder":
			o.out = v
		case "altoutputfolder":
			o.alt = v
		case "nested":
			o.nested = v == "yes"
		case "results":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return o, fmt.Errorf("--results %q: want a positive number", v)
			}
			o.results = n
		case "keyvalues":
			o.kvObject = v == "object"
		case "fail":
			o.fail = v
		case "pidfile":
			o.pidfile = v
		case "flood":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return o, fmt.Errorf("--flood %q: want a number of bytes", v)
			}
			o.flood = n
		case "echoenv":
			o.echoenv = append(o.echoenv, strings.Split(v, ",")...)
		default:
			o.params = append(o.params, param{k, v})
		}
	}
	if o.input == "" || o.out == "" {
		return o, errors.New("--inputfile and --outputfolder are required")
	}
	return o, nil
}

func run(args []string, stdout, stderr io.Writer) error {
	o, err := parse(args)
	if err != nil {
		return err
	}
	if o.pidfile != "" {
		if err := os.WriteFile(o.pidfile, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			return err
		}
	}
	if o.flood > 0 {
		line := strings.Repeat("noise ", 16) + "\n"
		for n := 0; n < o.flood; n += len(line) {
			fmt.Fprint(stdout, line)
			fmt.Fprint(stderr, line)
		}
	}
	fmt.Fprintf(stderr, "converting %s into %s (alt %q)\n", o.input, o.out, o.alt)
	if o.fail == "noout" {
		return nil
	}
	fmt.Fprintf(stdout, "starting conversion of %s\n", path.Base(o.input))
	switch o.fail {
	case "":
	case "exit":
		fmt.Fprintln(stderr, "unsupported input format")
		os.Exit(3)
	case "badjson":
		fmt.Fprintln(stdout, "converted 1 file")
		return nil
	case "sleep":
		signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
		time.Sleep(time.Hour)
		return nil
	case "outside", "missing", "symlink":
	default:
		return fmt.Errorf("--fail %q: unknown mode", o.fail)
	}
	data, err := os.ReadFile(o.input)
	if err != nil {
		return err
	}
	stem := path.Base(o.input)
	if i := strings.IndexByte(stem, '.'); i > 0 {
		stem = stem[:i]
	}
	var items []string
	for i := 0; i < o.results; i++ {
		name := stem
		if o.results > 1 {
			name = fmt.Sprintf("%s_%d", stem, i)
		}
		file := name + ".ome.tiff"
		if o.nested {
			file = name + ".ome.zarr"
		}
		full := path.Join(o.out, file)
		switch o.fail {
		case "outside":
			full = o.out + "/../../../etc/passwd"
		case "missing":
		case "symlink":
			if err := os.Symlink("/etc/passwd", full); err != nil {
				return err
			}
		default:
			if err := write(full, data, o.nested); err != nil {
				return err
			}
		}
		item := fmt.Sprintf(`{"name": %s, "full_path": %s`, quote(name), quote(full))
		if o.alt != "" {
			alt := path.Join(o.alt, file)
			if o.fail == "" {
				if err := write(alt, data, o.nested); err != nil {
					return err
				}
			}
			item += fmt.Sprintf(`, "alt_path": %s`, quote(alt))
		}
		item += `, "keyvalues": ` + keyvalues(o, path.Base(o.input), i) + "}"
		items = append(items, item)
		fmt.Fprintf(stderr, "wrote %s\n", full)
	}
	fmt.Fprintln(stdout, "done")
	fmt.Fprintln(stdout, "["+strings.Join(items, ", ")+"]")
	fmt.Fprintln(stdout)
	return nil
}

// write stores data at p, or with nested a small OME-Zarr-like tree below p.
func write(p string, data []byte, nested bool) error {
	if !nested {
		return os.WriteFile(p, data, 0o644)
	}
	files := map[string][]byte{
		".zgroup":     []byte(`{"zarr_format": 2}`),
		"0/.zgroup":   []byte(`{"zarr_format": 2}`),
		"0/0/.zarray": []byte(`{"chunks": [1], "zarr_format": 2}`),
		"0/0/0.0":     data,
		"0/1/.zarray": []byte(`{"chunks": [1], "zarr_format": 2}`),
		"0/1/0.0":     data[:len(data)/2],
	}
	for name, b := range files {
		f := path.Join(p, name)
		if err := os.MkdirAll(path.Dir(f), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(f, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// keyvalues renders the keyvalues in the requested shape, keeping the key order.
func keyvalues(o options, source string, i int) string {
	kv := [][2]string{{"source", quote(source)}, {"result", strconv.Itoa(i)}}
	for _, p := range o.params {
		kv = append(kv, [2]string{"param_" + p.key, quote(p.value)})
	}
	for _, name := range o.echoenv {
		v, ok := os.LookupEnv(name)
		if !ok {
			v = "<unset>"
		}
		kv = append(kv, [2]string{"env_" + name, quote(v)})
	}
	var parts []string
	for _, e := range kv {
		parts = append(parts, quote(e[0])+": "+e[1])
	}
	if o.kvObject {
		return "{" + strings.Join(parts, ", ") + "}"
	}
	for j := range parts {
		parts[j] = "{" + parts[j] + "}"
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
