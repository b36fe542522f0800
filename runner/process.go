package runner

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/retry"
	"github.com/omero-adi/omero-adi/runner/omero"
	"github.com/omero-adi/omero-adi/runner/preprocess"
)

// Importer is what the runner needs of the OMERO CLI adapter (omero.Client implements it).
type Importer interface {
	Login(ctx context.Context, orderUUID, user, group string) (*omero.Session, error)
	LoginArgs(user, group string) (argv []string, stdin string)
	LoginFinding(ctx context.Context, orderUUID, user, group string, paths []string) (*omero.Session, omero.Found, error, error)
	Close(ctx context.Context, s *omero.Session)
	ImportArgs(s *omero.Session, req omero.ImportRequest) []string
	Import(ctx context.Context, s *omero.Session, req omero.ImportRequest) (omero.ImportResult, error)
	Prepare(ctx context.Context, s *omero.Session, filesetIDs []int64, ns string, targets []string) (omero.Prepared, error)
	Finish(ctx context.Context, s *omero.Session, w omero.Write) error
	// Known returns a user's name and address read by an earlier login (for an order that ended
	// before its own login).
	Known(user string) (omero.Person, bool)
}

// Notifier turns an order's final stage into the notices written with it, in its transaction
// (notify.Notifier implements it). o carries the final stage, description and result; p is the
// user's name and address, nil when unknown; logs are the order's log files that exist.
type Notifier interface {
	Notices(o db.Order, p *omero.Person, logs []string) []db.Notice
}

// Preprocessor runs an order's preprocessing container (preprocess.Runner implements it).
type Preprocessor interface {
	Run(ctx context.Context, spec preprocess.Spec, files []string) (preprocess.Result, error)
	Command(spec preprocess.Spec, file string) []string
	RemoveTemp(tmpDir string) error
}

var (
	_ Importer     = (*omero.Client)(nil)
	_ Preprocessor = (*preprocess.Runner)(nil)
)

// Causes of an order's context ending early.
var (
	errLeaseLost       = errors.New("lease lost")
	errCancelRequested = errors.New("cancel requested")
)

// writeTimeout bounds one try of a database write of an order.
const writeTimeout = 15 * time.Second

// firstWriteBackoff is the wait after the first failed try of an order's final writes; it
// doubles up to maxWriteBackoff (and a quarter of the lease), so the outcome lands soon after the
// database is back (well within one lease).
const (
	firstWriteBackoff = 100 * time.Millisecond
	maxWriteBackoff   = 2 * time.Second
)

// outcome is what a running order has to leave in the database besides its stage: the ids its
// import created and history events that could not be written when they happened (database away).
// The final writes carry what is still unsaved.
type outcome struct {
	result  db.Result
	unsaved bool // result not stored yet
	events  []pendingEvent
	person  *omero.Person // the user's name and address, when the login read them
}

type pendingEvent struct{ stage, desc string }

// process runs one claimed order to its end and records the outcome. While the database is away
// the outcome is kept and written once it answers again. If the order's lease was lost (recovery
// or another worker owns it now) the stage is not written; an import that reached OMERO says so in
// the order's history.
func (r *Runner) process(work context.Context, o db.Order) {
	start := time.Now()
	log := r.log.WithFields(logrus.Fields{"order": o.UUID, "user": o.User, "group": o.Group})
	log.WithField("attempt", o.Attempt).Info("order claimed")
	lease := o.Lease()

	ctx, cancel := context.WithCancelCause(work)
	forget := r.hold(lease, cancel)
	defer forget()
	hbDone := make(chan struct{})
	go r.heartbeat(ctx, lease, cancel, hbDone, log)
	out := &outcome{}
	desc, err := r.execute(ctx, o, log, out)
	cause := context.Cause(ctx)
	cancel(nil)
	<-hbDone

	stage := db.StageCompleted
	switch {
	case errors.Is(cause, errLeaseLost) || errors.Is(err, db.ErrLeaseLost):
		r.leaseLost(work, o, out, log)
		return
	case errors.Is(cause, errCancelRequested):
		stage, desc = db.StageCancelled, cancelledText(o.UUID)
	case work.Err() != nil:
		// Shutdown grace period is over: hand the order to recovery.
		wctx, wcancel := context.WithTimeout(context.WithoutCancel(work), writeTimeout)
		defer wcancel()
		if err := r.saveOutcome(wctx, lease, out); err != nil {
			log.WithError(err).Warn("record import result")
		}
		if err := r.store.Release(wctx, lease); err != nil {
			log.WithError(err).Warn("release order")
		}
		log.Warn("order interrupted by shutdown; released for recovery")
		r.m.finished.WithLabelValues("released").Inc()
		return
	case err != nil:
		stage, desc = db.StageFailed, failureText(o.UUID, err)
	}
	notices := r.notices(o, stage, desc, out)
	err = r.retryWrites(work, log, func(ctx context.Context) error {
		if err := r.saveOutcome(ctx, lease, out); err != nil {
			return err
		}
		return r.store.Finish(ctx, lease, stage, desc, notices...)
	})
	switch {
	case errors.Is(err, db.ErrLeaseLost):
		r.leaseLost(work, o, out, log)
		return
	case err != nil:
		log.WithError(err).WithFields(logrus.Fields{"stage": stage, "description": desc}).
			Error("record order outcome: gave up at shutdown; recovery will handle the order")
		return
	}
	r.m.finished.WithLabelValues(metricLabel(stage)).Inc()
	r.m.duration.Observe(time.Since(start).Seconds())
	entry := log.WithFields(logrus.Fields{"stage": stage, "seconds": time.Since(start).Seconds()})
	if stage == db.StageFailed {
		entry.WithField("description", desc).Warn("order failed")
	} else {
		entry.Info("order finished")
	}
}

// notices asks the Notifier (if any) what o's final stage sends.
func (r *Runner) notices(o db.Order, stage, desc string, out *outcome) []db.Notice {
	if r.cfg.Notifier == nil || r.cfg.DryRun {
		// A dry run imports nothing: nobody is told that it did.
		return nil
	}
	o.Stage, o.Description = stage, desc
	if res := out.result; len(res.Filesets) > 0 || res.TempDir != "" {
		o.Result = &res
	}
	p := out.person
	if p == nil {
		if known, ok := r.imp.Known(o.User); ok {
			p = &known
		}
	}
	var logs []string
	cliLogs, cliErrs := omero.LogFiles(r.cfg.LogDir, o.UUID)
	for _, path := range []string{cliLogs, cliErrs, r.preprocessingLog(o.UUID)} {
		if r.cfg.LogDir != "" && fileExists(path) {
			logs = append(logs, path)
		}
	}
	return r.cfg.Notifier.Notices(o, p, logs)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// saveOutcome writes what out still holds: the import's ids (fenced by the lease) and the
// history events that waited.
func (r *Runner) saveOutcome(ctx context.Context, lease db.Lease, out *outcome) error {
	if out.unsaved {
		if err := r.store.SetResult(ctx, lease, out.result); err != nil {
			return err
		}
		out.unsaved = false
	}
	for len(out.events) > 0 {
		e := out.events[0]
		if err := r.store.AddEvent(ctx, lease.UUID, e.stage, e.desc); err != nil {
			return err
		}
		out.events = out.events[1:]
	}
	return nil
}

// retryWrites runs write until it succeeds or its lease is lost, with backoff while the database
// does not answer. Meanwhile the runner claims nothing. It gives up only when the shutdown grace
// period is over.
func (r *Runner) retryWrites(work context.Context, log *logrus.Entry, write func(context.Context) error) error {
	var q retry.Quiet
	policy := retry.Policy{Initial: firstWriteBackoff, Max: min(maxWriteBackoff, r.cfg.Lease/4),
		Retrying: func(_ int, _ time.Duration, err error) {
			if q.Failed(log.WithError(err), "record order outcome: the database does not answer; keeping the outcome and retrying") {
				r.writing.Add(1)
			}
		}}
	err := retry.Do(work, policy, func(int) error {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(work), writeTimeout)
		defer cancel()
		err := write(ctx)
		r.reached(err)
		if errors.Is(err, db.ErrLeaseLost) {
			return retry.Stop(err)
		}
		return err
	})
	if q.Reset() {
		r.writing.Add(-1)
		if err == nil || errors.Is(err, db.ErrLeaseLost) {
			log.Info("database answers again: order outcome recorded")
		}
	}
	return err
}

// leaseLost handles an order that is no longer this worker's. Nothing of its stage is written;
// if its import reached OMERO, the order's history says so, so the images do not vanish from view.
func (r *Runner) leaseLost(work context.Context, o db.Order, out *outcome, log *logrus.Entry) {
	r.m.finished.WithLabelValues("lease_lost").Inc()
	if len(out.result.Filesets) == 0 && len(out.result.Images) == 0 {
		log.Warn("lease lost: another worker or recovery owns the order now; dropping it")
		return
	}
	desc := lostAfterImportText(out.result)
	log.WithField("event", desc).Error("lease lost after the import reached OMERO")
	err := r.retryWrites(work, log, func(ctx context.Context) error {
		cur, err := r.store.Get(ctx, o.UUID)
		if err != nil {
			return err
		}
		return r.store.AddEvent(ctx, o.UUID, cur.Stage, desc)
	})
	if err != nil {
		log.WithError(err).Error("record order event")
	}
}

func metricLabel(stage string) string {
	switch stage {
	case db.StageCompleted:
		return "completed"
	case db.StageCancelled:
		return "cancelled"
	default:
		return "failed"
	}
}

// maxBeat bounds the heartbeat interval: a cancel request is noticed within it.
const maxBeat = 5 * time.Second

// retryBeat is the heartbeat interval while the database does not answer.
const retryBeat = 500 * time.Millisecond

// heartbeat renews the lease every Lease/3 (at most maxBeat; retryBeat after a failure) until ctx ends; a lost lease or a
// cancel request cancels the order's context with that cause, which stops its import.
func (r *Runner) heartbeat(ctx context.Context, lease db.Lease, cancel context.CancelCauseFunc, done chan<- struct{}, log *logrus.Entry) {
	defer close(done)
	every := min(r.cfg.Lease/3, maxBeat)
	t := time.NewTimer(every)
	defer t.Stop()
	var q retry.Quiet
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cancelRequested, err := r.store.Heartbeat(ctx, lease, r.cfg.Lease)
		if ctx.Err() == nil {
			r.reached(err)
		}
		// After a failed beat, try again soon: the lease is renewed as soon as the database answers.
		t.Reset(every)
		if err != nil && !errors.Is(err, db.ErrLeaseLost) {
			t.Reset(min(every, retryBeat))
		}
		switch {
		case errors.Is(err, db.ErrLeaseLost):
			cancel(errLeaseLost)
			return
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			// The lease is still valid until it expires; the next beat tries again.
			q.Failed(log.WithError(err), "renew lease")
		case cancelRequested:
			log.Info("cancel requested: stopping the order")
			cancel(errCancelRequested)
			return
		default:
			q.Reset()
		}
	}
}
