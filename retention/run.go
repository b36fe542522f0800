package retention

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/retry"
)

// Run plans and applies retention every interval until ctx ends, the first time one interval
// after it starts. A run that fails is logged and tried again at the next interval; it returns
// nil when ctx ends.
func (r *Retention) Run(ctx context.Context, interval time.Duration) error {
	r.log.WithField("interval", interval).Info("retention runs started")
	for {
		if err := retry.Sleep(ctx, interval); err != nil {
			r.log.Info("retention runs stopped")
			return nil
		}
		moved, kept, err := r.Once(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			r.log.WithError(err).Warn("retention run failed; next try at the next interval")
			continue
		}
		r.log.WithFields(logrus.Fields{"moved": len(moved), "kept": len(kept)}).Info("retention run done")
	}
}

// Once plans and applies retention once: the moves made, and every old file kept with why.
func (r *Retention) Once(ctx context.Context) ([]Move, []Kept, error) {
	plan, err := r.Plan(ctx)
	if err != nil {
		return nil, nil, err
	}
	moved, kept, err := r.Apply(ctx, plan)
	return moved, append(plan.Kept, kept...), err
}
