package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/omero-adi/omero-adi/agent"
	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/runner"
)

// errIncomplete ends orders verify with exit code 1 after its table.
var errIncomplete = errors.New("incomplete orders")

// cmdOrdersVerify re-checks finished orders against OMERO now (runner.CheckOrders, one CLI start
// for all of them) and prints a table; any incomplete order makes the exit code 1.
func (e *env) cmdOrdersVerify(ctx context.Context, args []string) error {
	fs := newFlagSet("orders verify")
	since := fs.String("since", "", "the orders that finished since then: 7d, 36h or a date such as 2026-01-31 (default 7d without UUIDs)")
	uuids, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(uuids) > 0 && *since != "" {
		return usagef("orders verify: give UUIDs or --since, not both")
	}
	from := time.Now().AddDate(0, 0, -7)
	if *since != "" {
		if from, err = parseSince(*since, time.Now()); err != nil {
			return usagef("orders verify: --since: %v", err)
		}
	}
	s, cfg, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	if cfg.Omero.DryRun {
		return usagef("orders verify: omero.dry_run is set, so there is no OMERO to check against")
	}
	orders, err := e.ordersToVerify(ctx, s, uuids, from)
	if err != nil {
		return err
	}
	log, err := agent.NewLogger(cfg, e.stderr)
	if err != nil {
		return err
	}
	client, err := agent.NewOmeroClient(cfg, log.WithField("component", "verify"))
	if err != nil {
		return err
	}
	checks, err := runner.CheckOrders(ctx, client, orders)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "UUID\tSTAGE\tOUTCOME\tFILES IN OMERO\tFILESETS FOUND\tVERDICT")
	bad := 0
	for _, c := range checks {
		verdict := "complete"
		if !c.Complete {
			bad++
			verdict = "INCOMPLETE: " + strings.Join(c.Problems, "; ")
		}
		outcome := c.Outcome
		if outcome == "" {
			outcome = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%d/%d\t%s\n", c.UUID, c.Stage, outcome, c.InOMERO, c.Files, c.Found, c.Filesets, order.Clip(verdict, 200))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if bad > 0 {
		return fmt.Errorf("%w: %d of %d", errIncomplete, bad, len(checks))
	}
	return nil
}

// ordersToVerify reads the orders named, or those in a final stage whose stage time is from on.
func (e *env) ordersToVerify(ctx context.Context, s *db.Store, uuids []string, from time.Time) ([]db.Order, error) {
	var out []db.Order
	if len(uuids) > 0 {
		for _, id := range uuids {
			o, err := s.Get(ctx, id)
			if err != nil {
				return nil, orderErr(id, err)
			}
			out = append(out, o)
		}
		return out, nil
	}
	all, err := s.List(ctx, db.Filter{})
	if err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	for _, o := range all {
		final := o.Stage == db.StageCompleted || o.Stage == db.StageFailed || o.Stage == db.StageCancelled
		if final && !o.Timestamp.Before(from) {
			out = append(out, o)
		}
	}
	return out, nil
}
