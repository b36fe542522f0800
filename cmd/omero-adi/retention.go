package main

import (
	"context"
	"fmt"

	"github.com/omero-adi/omero-adi/agent"
	"github.com/omero-adi/omero-adi/retention"
	"github.com/omero-adi/omero-adi/settings"
)

// cmdRetention moves what the rules' retention tables allow to their holding folders, or with
// --dry-run prints the plan: each move with its reason, and each old file kept and why.
func (e *env) cmdRetention(ctx context.Context, args []string) error {
	fs := newFlagSet("retention")
	dryRun := fs.Bool("dry-run", false, "only print the plan")
	all := fs.Bool("all-filesets", false, "also keep every file a link of any in-place fileset on the server points at (reads them all with hql)")
	if rest, err := parse(fs, args); err != nil {
		return err
	} else if len(rest) > 0 {
		return usagef("retention: unexpected argument %q", rest[0])
	}
	s, cfg, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	set, err := cfg.RuleSet()
	if err != nil {
		return settings.Errorf("", "%v", err)
	}
	log, err := agent.NewLogger(cfg, e.stderr)
	if err != nil {
		return err
	}
	d := retention.Deps{Store: s, Rules: set, BaseDir: cfg.BaseDir, ProcessedFolder: cfg.ProcessedFolder,
		Log: log.WithField("component", "retention")}
	if *all {
		client, err := agent.NewOmeroClient(cfg, log.WithField("component", "retention"))
		if err != nil {
			return err
		}
		c, err := agent.NewChecker(cfg, s, client, nil, nil, log.WithField("component", "integrity"))
		if err != nil {
			return err
		}
		targets, complete, err := c.ServerTargets(ctx, cfg.Integrity.MaxCLIStarts)
		if err != nil {
			return fmt.Errorf("retention: %w", err)
		}
		if !complete {
			return fmt.Errorf("retention: the server's in-place filesets could not all be read within integrity.max_cli_starts (%d): nothing moved; raise it", cfg.Integrity.MaxCLIStarts)
		}
		d.ServerTargets = targets
	}
	r, err := retention.New(d)
	if err != nil {
		return err
	}
	plan, err := r.Plan(ctx)
	if err != nil {
		return fmt.Errorf("plan retention: %w", err)
	}
	for _, k := range plan.Kept {
		fmt.Fprintf(e.stdout, "keep  %s: %s\n", k.Path, k.Reason)
	}
	if *dryRun {
		for _, m := range plan.Moves {
			fmt.Fprintf(e.stdout, "would move %s -> %s: %s\n", m.Source, m.Destination, m.Reason)
		}
		return nil
	}
	done, kept, err := r.Apply(ctx, plan)
	for _, m := range done {
		fmt.Fprintf(e.stdout, "moved %s -> %s: %s\n", m.Source, m.Destination, m.Reason)
	}
	for _, k := range kept {
		fmt.Fprintf(e.stdout, "keep  %s: %s\n", k.Path, k.Reason)
	}
	if err != nil {
		return fmt.Errorf("retention: %w", err)
	}
	return nil
}
