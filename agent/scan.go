package agent

import (
	"context"
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/settings"
	"github.com/omero-adi/omero-adi/watcher"
)

// Scan walks the watched folders once, as the watcher does at start, and counts what it finds
// against the order database; it creates no order. A unit whose newest change is older than its
// settle counts as settled at this one look (the running watcher still waits for two).
func Scan(ctx context.Context, cfg Config, store *db.Store, log *logrus.Entry) (watcher.ScanStats, error) {
	set, err := cfg.RuleSet()
	if err != nil {
		return watcher.ScanStats{}, settings.Errorf("", "%v", err)
	}
	if len(set.Rules()) == 0 {
		return watcher.ScanStats{}, settings.Errorf("rules", "no [[rules]] entry to scan")
	}
	wc := cfg.Watch
	wc.TrustMtime = true
	w, err := watcher.New(wc, set, readOnlySink{NewSink(store, log)}, log)
	if err != nil {
		return watcher.ScanStats{}, settings.Errorf("", "%v", err)
	}
	st, err := w.Scan(ctx)
	if err != nil {
		return st, fmt.Errorf("scan: %w", err)
	}
	return st, nil
}

// readOnlySink answers what is known like Sink and creates nothing.
type readOnlySink struct{ *Sink }

func (readOnlySink) Settled(context.Context, watcher.Unit) error { return nil }
