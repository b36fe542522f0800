package agent

import (
	"context"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/runner"
	"github.com/omero-adi/omero-adi/runner/preprocess"
	"github.com/omero-adi/omero-adi/settings"
)

// Preview returns the order uuid of s and the exact commands a runner with these settings would
// run for it (runner.Runner.Preview: login, preprocessing, import), whatever its stage. It reads
// the order and changes nothing, neither in the database nor on disk.
func Preview(ctx context.Context, cfg Config, s *db.Store, uuid string, log *logrus.Logger) (db.Order, []string, error) {
	o, err := s.Get(ctx, uuid)
	if err != nil {
		return db.Order{}, nil, err
	}
	entry := log.WithField("component", "runner")
	if cfg.Omero.AdminPassword == "" {
		cfg.Omero.AdminPassword = "unused-in-a-preview" // a preview never logs in
	}
	client, err := NewOmeroClient(cfg, entry)
	if err != nil {
		return o, nil, err
	}
	pre, err := preprocess.New(cfg.preprocessing(), entry)
	if err != nil {
		return o, nil, settings.Errorf("", "%v", err)
	}
	var zarrRules map[string]order.ZarrMode
	if len(cfg.Rules) > 0 {
		set, err := cfg.RuleSet()
		if err != nil {
			return o, nil, settings.Errorf("", "%v", err)
		}
		zarrRules = set.ZarrModes()
	}
	r, err := runner.New(runnerConfig(cfg, zarrRules), s, client, pre, entry)
	if err != nil {
		return o, nil, err
	}
	cmds, err := r.Preview(o)
	return o, cmds, err
}

// runnerConfig is the runner's part of these settings with the rules' zarr modes by rule name
// (without a metrics registry).
func runnerConfig(cfg Config, zarrRules map[string]order.ZarrMode) runner.Config {
	rc := cfg.RunnerConfig
	rc.Worker, rc.Roots = WorkerName(cfg), cfg.DataConfig.Roots()
	rc.ManagedRepo, rc.DryRun = cfg.Omero.ManagedRepository, cfg.Omero.DryRun
	rc.Zarr, rc.ZarrRules = order.ZarrMode(cfg.Omero.Zarr), zarrRules
	return rc
}
