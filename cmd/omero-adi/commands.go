package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/omero-adi/omero-adi/agent"
	"github.com/omero-adi/omero-adi/settings"
)

func (e *env) cmdRun(ctx context.Context, args []string) error {
	fs := newFlagSet("run")
	role := fs.String("role", agent.RoleAll, "all, watcher or runner")
	if rest, err := parse(fs, args); err != nil {
		return err
	} else if len(rest) > 0 {
		return usagef("run: unexpected argument %q", rest[0])
	}
	cfg, err := e.settings()
	if err != nil {
		return err
	}
	log, err := agent.NewLogger(cfg, e.stderr)
	if err != nil {
		return err
	}
	a, err := agent.New(cfg, *role, log)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

func (e *env) cmdConfigCheck(ctx context.Context, args []string) error {
	if rest, err := parse(newFlagSet("config check"), args); err != nil {
		return err
	} else if len(rest) > 0 {
		return usagef("config check: unexpected argument %q", rest[0])
	}
	cfg, err := e.settings()
	if err != nil {
		return err
	}
	src := cfg.Path
	if src == "" {
		src = "no settings file (" + e.configPath + " does not exist): defaults and environment"
	}
	fmt.Fprintf(e.stdout, "# settings are valid\n# source: %s\n", src)
	for _, name := range agent.EnvOverrides {
		if e.getenv(name) != "" {
			fmt.Fprintf(e.stdout, "# from the environment: %s\n", name)
		}
	}
	return toml.NewEncoder(e.stdout).Encode(cfg.Masked())
}

func (e *env) cmdRulesTest(ctx context.Context, args []string) error {
	paths, err := parse(newFlagSet("rules test"), args)
	if err != nil {
		return err
	}
	if len(paths) == 0 {
		return usagef("rules test: give one or more PATH")
	}
	cfg, err := e.settings()
	if err != nil {
		return err
	}
	set, err := cfg.RuleSet()
	if err != nil {
		return settings.Errorf("", "%v", err)
	}
	unmatched := 0
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return err
		}
		m, ok, why := set.Match(abs)
		if !ok {
			unmatched++
			fmt.Fprintf(e.stdout, "%s: no rule matches (%s)\n", abs, why)
			continue
		}
		d, err := m.Rule.Draft(m, []string{m.UnitPath})
		if err != nil {
			fmt.Fprintf(e.stdout, "%s: rule %q matches, but no order can be made: %v\n", abs, m.Rule.Name, err)
			continue
		}
		fmt.Fprintf(e.stdout, "%s: rule %q, unit %s\n  order: group=%s user=%s destination=%s:%s files=%q source=%s\n",
			abs, m.Rule.Name, m.UnitPath, d.Group, d.User, d.Target.Kind, d.Target.IDColumn(), d.Files, d.Source)
		if d.Preprocessing != nil {
			fmt.Fprintf(e.stdout, "  preprocessing: %s %v\n", d.Preprocessing.Container, d.Preprocessing.ExtraParams)
		}
	}
	if unmatched > 0 {
		return fmt.Errorf("%d of %d paths match no rule", unmatched, len(paths))
	}
	return nil
}

func (e *env) cmdScan(ctx context.Context, args []string) error {
	fs := newFlagSet("scan")
	asJSON := fs.Bool("json", false, "print JSON")
	if rest, err := parse(fs, args); err != nil {
		return err
	} else if len(rest) > 0 {
		return usagef("scan: unexpected argument %q", rest[0])
	}
	s, cfg, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	log, err := agent.NewLogger(cfg, e.stderr)
	if err != nil {
		return err
	}
	st, err := agent.Scan(ctx, cfg, s, log.WithField("component", "watcher"))
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(e, map[string]any{
			"seen": st.Seen, "settled": st.Settled, "pending": st.Pending, "already_ordered": st.AlreadyOrdered,
			"ignored": st.Ignored, "seconds": st.Duration.Seconds(),
		})
	}
	fmt.Fprintf(e.stdout, "seen %d, settled %d, pending %d, already ordered %d, ignored %d in %s\n",
		st.Seen, st.Settled, st.Pending, st.AlreadyOrdered, st.Ignored, st.Duration.Round(time.Microsecond))
	return nil
}

// cmdDoctor checks what the agent needs on this host and says what to fix.
func (e *env) cmdDoctor(ctx context.Context, args []string) error {
	if rest, err := parse(newFlagSet("doctor"), args); err != nil {
		return err
	} else if len(rest) > 0 {
		return usagef("doctor: unexpected argument %q", rest[0])
	}
	problems := 0
	report := func(c agent.Check) {
		if c.Err == nil {
			fmt.Fprintf(e.stdout, "ok    %s\n", c.Name)
			return
		}
		problems++
		fmt.Fprintf(e.stdout, "FAIL  %s: %v\n", c.Name, c.Err)
		if c.Fix != "" {
			fmt.Fprintf(e.stdout, "      fix: %s\n", c.Fix)
		}
	}
	cfg, err := e.settings()
	report(agent.Check{Name: "settings " + e.configPath, Err: err, Fix: "correct the key named above"})
	if err != nil {
		return fmt.Errorf("%d problem(s) found", problems)
	}
	for _, c := range agent.Doctor(ctx, cfg) {
		report(c)
	}
	if problems > 0 {
		return fmt.Errorf("%d problem(s) found", problems)
	}
	fmt.Fprintln(e.stdout, "all checks passed")
	return nil
}
