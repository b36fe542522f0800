package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/omero-adi/omero-adi/agent"
	"github.com/omero-adi/omero-adi/integrity"
	"github.com/omero-adi/omero-adi/runner/omero"
)

// cmdIntegrity checks the links of the completed in-place orders once: one line per broken order,
// exit 1 when any is broken (after repairs), 0 when all is intact.
func (e *env) cmdIntegrity(ctx context.Context, args []string) error {
	fs := newFlagSet("integrity")
	since := fs.String("since", "", "only orders finished since: a duration (\"720h\", \"30d\") or a date (2026-01-31)")
	hash := fs.String("hash", "", "none, sample or all (default: the setting integrity.hash)")
	repair := fs.Bool("repair", false, "re-point links whose file moved within its root, when OMERO's SHA-1 proves the match")
	dryRun := fs.Bool("dry-run", false, "with --repair: only list what would be re-pointed")
	rate := fs.Int("rate", -1, "files looked at per second; 0: no limit (default: integrity.max_stat_per_s)")
	all := fs.Bool("all-filesets", false, "also check every in-place fileset of the server (other importers' too), within integrity.max_cli_starts")
	if rest, err := parse(fs, args); err != nil {
		return err
	} else if len(rest) > 0 {
		return usagef("integrity: unexpected argument %q", rest[0])
	}
	if *dryRun && !*repair {
		return usagef("integrity: --dry-run goes with --repair")
	}
	from, err := parseSince(*since, time.Now())
	if err != nil {
		return usagef("integrity: --since: %v", err)
	}
	s, cfg, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	opts := integrity.Options{Since: from, Hash: cfg.Integrity.Hash, Sample: cfg.Integrity.Sample,
		MaxCLIStarts: cfg.Integrity.MaxCLIStarts, Rate: cfg.Integrity.MaxStatPerS, Repair: *repair, DryRun: *dryRun}
	if *hash != "" {
		opts.Hash = *hash
	}
	if opts.Hash != integrity.HashNone && opts.Hash != integrity.HashSample && opts.Hash != integrity.HashAll {
		return usagef("integrity: --hash must be none, sample or all, got %q", opts.Hash)
	}
	if *rate >= 0 {
		opts.Rate = *rate
	}
	opts.AllFilesets = *all
	opts.FoundServer = func(d integrity.ServerDamage) { fmt.Fprintln(e.stdout, d.Line()) }
	log, err := agent.NewLogger(cfg, e.stderr)
	if err != nil {
		return err
	}
	var client *omero.Client
	if opts.Hash != integrity.HashNone || opts.Repair || opts.AllFilesets {
		if client, err = agent.NewOmeroClient(cfg, log.WithField("component", "integrity")); err != nil {
			return err
		}
	}
	reporter, err := agent.NewReporter(cfg, log.WithField("component", "notify"))
	if err != nil {
		return err
	}
	c, err := agent.NewChecker(cfg, s, client, reporter, nil, log.WithField("component", "integrity"))
	if err != nil {
		return err
	}
	rep, err := c.Check(ctx, opts, func(b integrity.Broken) { fmt.Fprintln(e.stdout, b.Line()) })
	if err != nil {
		return fmt.Errorf("check integrity: %w", err)
	}
	for _, r := range rep.Repairs {
		switch {
		case r.Done:
			fmt.Fprintf(e.stdout, "repaired %s: %s now points at %s (was %s)\n", r.UUID, r.Link, r.To, r.From)
		case r.Refused == "":
			fmt.Fprintf(e.stdout, "would repair %s: %s -> %s (was %s)\n", r.UUID, r.Link, r.To, r.From)
		default:
			fmt.Fprintf(e.stdout, "not repaired %s: %s -> %s: %s\n", r.UUID, r.Link, r.To, r.Refused)
		}
	}
	fmt.Fprintf(e.stderr, "checked %d orders, %d links, %d files hashed, in %s: %d broken\n",
		rep.Orders, rep.Links, rep.Hashed, rep.Duration.Round(time.Millisecond), rep.Broken)
	if opts.AllFilesets {
		fmt.Fprintf(e.stderr, "server: %d files of in-place filesets checked, %d broken\n", rep.ServerFiles, rep.ServerBroken)
		if !rep.ServerComplete {
			fmt.Fprintf(e.stderr, "server: not every fileset was read within integrity.max_cli_starts (%d); raise it to check them all\n", opts.MaxCLIStarts)
		}
	}
	if rep.Broken > 0 || rep.ServerBroken > 0 {
		return fmt.Errorf("%d order(s) broken, %d link(s) of the server's filesets broken", rep.Broken, rep.ServerBroken)
	}
	return nil
}

// parseSince reads --since: "" (all), a duration back from now (Go's "720h" or "30d" days), or a
// date or time (2026-01-31, RFC 3339).
func parseSince(v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if days, ok := strings.CutSuffix(v, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 {
			return now.AddDate(0, 0, -n), nil
		}
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	for _, layout := range []string{"2006-01-02", time.RFC3339} {
		if t, err := time.ParseInLocation(layout, v, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("want a duration such as \"720h\" or \"30d\", or a date such as 2026-01-31, got %q", v)
}
