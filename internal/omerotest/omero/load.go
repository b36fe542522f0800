package main

import (
	"fmt"
	"os"
	"regexp"
	"strings"
)

// loadLines is what `omero load` read from stdin (read once, when the call is recorded).
var loadLines []string

// loadInput reads stdin for a `load` without files, so that the call's record holds the lines.
func loadInput(args []string) []string {
	if len(args) == 0 || args[0] != "load" {
		return nil
	}
	for _, a := range args[1:] {
		if !strings.HasPrefix(a, "-") {
			return nil
		}
	}
	lines, err := readLines(os.Stdin)
	if err != nil {
		return nil
	}
	loadLines = lines
	return lines
}

var commentRE = regexp.MustCompile(`^\s*#`)

// cmdLoad runs CLI lines in this process, as plugins/basics.py LoadControl does with cli.py
// invoke: each line is split like a shell line (shlex), comments and empty lines are skipped, and
// the first failing line ends the load with its exit code unless -k/--keep-going.
func cmdLoad(statePath string, args []string) error {
	p, err := parseArgs("omero load", []optSpec{
		{names: []string{"-g", "--glob"}, dest: "glob"},
		{names: []string{"-k", "--keep-going"}, dest: "keep_going"},
	}, args)
	if err != nil {
		return err
	}
	lines := loadLines
	if len(p.pos) > 0 {
		lines = nil
		for _, name := range p.pos {
			f, err := os.Open(name)
			if err != nil {
				return die(1, "FileNotFoundError: [Errno 2] No such file or directory: '%s'", name)
			}
			l, err := readLines(f)
			_ = f.Close()
			if err != nil {
				return die(1, "OSError: %v", err)
			}
			lines = append(lines, l...)
		}
	}
	for _, line := range lines {
		if commentRE.MatchString(line) {
			continue
		}
		words, err := shlexSplit(line)
		if err != nil {
			return die(1, "ValueError: %v", err)
		}
		if len(words) == 0 || (len(words) == 1 && words[0] == "EOF") {
			continue
		}
		if err := dispatch(statePath, words); err != nil {
			if !p.has("keep_going") {
				return err
			}
			if ee, ok := err.(*exitError); ok && ee.msg != "" {
				fmt.Fprintln(os.Stderr, ee.msg)
			}
			fmt.Fprintf(os.Stderr, "Ignoring error: %s\n", line)
		}
	}
	return nil
}
