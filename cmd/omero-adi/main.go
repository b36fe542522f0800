// Command omero-adi is the automated data-import agent for OMERO: it watches drop folders, turns
// settled data into import orders, and drains the order queue into OMERO with in-place imports.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/omero-adi/omero-adi/settings"
)

// version is stamped by the Makefile with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "omero-adi:", err)
		os.Exit(exitCode(err))
	}
}

// exitCode maps an error to the documented exit codes: 2 for usage and settings errors, 1 otherwise.
func exitCode(err error) int {
	var ue *usageError
	if errors.As(err, &ue) || errors.Is(err, settings.ErrSettings) {
		return 2
	}
	return 1
}

// usageError is a mistake in the command line or in what it asks for (exit code 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{msg: fmt.Sprintf(format, args...)} }

// env is how commands read the environment; tests pass their own.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	configPath     string
	configExplicit bool
}
