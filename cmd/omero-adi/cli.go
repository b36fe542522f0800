package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/omero-adi/omero-adi/agent"
)

const usageText = `Usage: omero-adi [--config PATH] COMMAND [flags] [args]

Commands:
  run [--role all|watcher|runner]   run the agent (watch folders and/or drain orders)
  migrate                           create or upgrade the order tables
  config check                      validate the settings; print them with secrets masked
  orders create --group G --user U (--dataset ID | --screen ID) [--container IMAGE [--param K=V]...] FILE...
  orders list [--stage S] [--group G] [--user U] [--limit N] [--json]
  orders show UUID [--json]
  orders preview UUID               the exact commands (login, preprocessing, import) the order would run; changes nothing
  orders retry [--all] UUID         run a failed order again: only its files not in OMERO yet, or --all of them
  orders cancel UUID
  orders verify [UUID...|--since 7d]  check finished orders against OMERO now; exit 1 when any is incomplete
  rules test PATH...                which rule matches each path, and the order it would create
  scan [--json]                     one full scan of every rule's folder; creates nothing
  integrity [--since D] [--hash none|sample|all] [--repair [--dry-run]] [--rate N] [--all-filesets]
                                    check that the files in-place orders linked are intact; exit 1 when any is broken
  retention [--dry-run] [--all-filesets]
                                    move old ignored or failed drops and used-up originals to the rules' holding folders
  doctor                            check the environment; non-zero exit when something is wrong
  version                           print the version

--config defaults to $OMERO_ADI_CONFIG, else ` + agent.DefaultConfigPath + `.
Commands that only need the database work without a settings file when INGEST_TRACKING_DB_URL is set.
Exit codes: 0 success, 1 runtime failure, 2 usage or settings error.
`

// run parses the global flags and runs one command.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	e := &env{stdout: stdout, stderr: stderr, getenv: getenv}
	fs := newFlagSet("omero-adi")
	fs.StringVar(&e.configPath, "config", "", "settings file (TOML)")
	showVersion := fs.Bool("version", false, "print the version")
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	if *showVersion {
		fmt.Fprintln(stdout, "omero-adi", version)
		return nil
	}
	e.configExplicit = e.configPath != ""
	if !e.configExplicit {
		if p := getenv("OMERO_ADI_CONFIG"); p != "" {
			e.configPath, e.configExplicit = p, true
		} else {
			e.configPath = agent.DefaultConfigPath
		}
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprint(stderr, usageText)
		return usagef("no command given")
	}
	cmd, rest := rest[0], rest[1:]
	two := func(sub map[string]func(context.Context, []string) error) error {
		if len(rest) == 0 {
			return usagef("%s: missing subcommand (one of %s)", cmd, keys(sub))
		}
		f, ok := sub[rest[0]]
		if !ok {
			return usagef("%s: unknown subcommand %q (one of %s)", cmd, rest[0], keys(sub))
		}
		return f(ctx, rest[1:])
	}
	switch cmd {
	case "run":
		return e.cmdRun(ctx, rest)
	case "migrate":
		return e.cmdMigrate(ctx, rest)
	case "config":
		return two(map[string]func(context.Context, []string) error{"check": e.cmdConfigCheck})
	case "orders":
		return two(map[string]func(context.Context, []string) error{
			"create": e.cmdOrdersCreate, "list": e.cmdOrdersList, "show": e.cmdOrdersShow,
			"retry": e.cmdOrdersRetry, "cancel": e.cmdOrdersCancel, "preview": e.cmdOrdersPreview, "verify": e.cmdOrdersVerify,
		})
	case "rules":
		return two(map[string]func(context.Context, []string) error{"test": e.cmdRulesTest})
	case "scan":
		return e.cmdScan(ctx, rest)
	case "doctor":
		return e.cmdDoctor(ctx, rest)
	case "integrity":
		return e.cmdIntegrity(ctx, rest)
	case "retention":
		return e.cmdRetention(ctx, rest)
	case "version":
		fmt.Fprintln(stdout, "omero-adi", version)
		return nil
	case "help":
		fmt.Fprint(stdout, usageText)
		return nil
	default:
		fmt.Fprint(stderr, usageText)
		return usagef("unknown command %q", cmd)
	}
}

func keys[V any](m map[string]V) string {
	return strings.Join(slices.Sorted(maps.Keys(m)), ", ")
}

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parse parses flags that may stand before, between or after the positional arguments, and
// returns the positional ones. "--" ends the flags.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usagef("%s: %v", fs.Name(), err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// multiFlag collects a repeated flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
