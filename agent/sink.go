package agent

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/watcher"
)

// Sink turns the watcher's settled units into orders. Each unit's key (rule, path, fingerprint)
// is stored with its order in one transaction under a unique constraint, so restarts, rescans and
// several agents on one share create one order per unit and content. The watcher calls it from
// several goroutines at once; the store is safe for that.
type Sink struct {
	store *db.Store
	log   *logrus.Entry
}

var _ watcher.Sink = (*Sink)(nil)

// NewSink returns a Sink over store.
func NewSink(store *db.Store, log *logrus.Entry) *Sink { return &Sink{store: store, log: log} }

// KnownSignature reports whether the file unit at path already has an order whose fingerprint
// begins with signature (its size and mtime; the watcher has not read the file).
func (s *Sink) KnownSignature(ctx context.Context, rule, path, signature string) (bool, error) {
	return s.store.HasWatchItemSignature(ctx, rule, path, signature)
}

// Known reports whether the unit with this key already has an order.
func (s *Sink) Known(ctx context.Context, rule, path, fingerprint string) (bool, error) {
	_, ok, err := s.store.HasWatchItem(ctx, db.WatchKey{Rule: rule, Path: path, Fingerprint: fingerprint})
	return ok, err
}

// Settled creates the unit's order, unless the same content was already ordered under a path
// that no longer exists (a rename or move within the watched folder).
func (s *Sink) Settled(ctx context.Context, u watcher.Unit) error {
	log := s.log.WithFields(logrus.Fields{"rule": u.Rule.Name, "path": u.Path})
	items, err := s.store.WatchItems(ctx, u.Rule.Name, u.Fingerprint)
	if err != nil {
		return fmt.Errorf("look up earlier orders: %w", err)
	}
	for _, it := range items {
		if it.Path == u.Path {
			return nil
		}
		if _, err := os.Lstat(it.Path); errors.Is(err, os.ErrNotExist) {
			log.WithFields(logrus.Fields{"was": it.Path, "order": it.UUID}).Info("renamed or moved after its order was created: no new order")
			return nil
		}
	}
	draft, err := u.Rule.Draft(u.Match, u.Files)
	if err != nil {
		log.WithError(err).Warn("cannot make an order of this unit")
		return nil
	}
	o, created, err := s.store.CreateOrder(ctx, db.NewOrder{
		Draft:    draft,
		WatchKey: &db.WatchKey{Rule: u.Rule.Name, Path: u.Path, Fingerprint: u.Fingerprint},
	})
	if err != nil {
		if errors.Is(err, db.ErrInvalid) {
			log.WithError(err).Warn("cannot make an order of this unit")
			return nil
		}
		return fmt.Errorf("create order: %w", err)
	}
	if created {
		log.WithFields(logrus.Fields{"order": o.UUID, "user": draft.User, "files": len(draft.Files)}).Info("order created")
	}
	return nil
}
