package agent

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/settings"
)

// dryRunPrefix starts the description of every order a dry run ended (runner.dryRun).
const dryRunPrefix = "dry run:"

// checkDryRunStore refuses a dry run on a database that holds orders a dry run did not make: a
// dry-run agent ends every order it claims 'Import Completed' without importing anything, so on
// a database shared with the web plugin or a real agent it would end real users' orders.
// Refusing to start (rather than skipping foreign orders, which would still need claiming them)
// also keeps the dry run's own watcher from creating orders there that a real agent would import.
// A dry run's orders are those it ended (description "dry run: …") and pending orders of its own
// kinds, `orders create` and watch rules (source other than "sql"), so that orders made before
// the dry run starts, as the quick start does, are fine. Everything else counts: orders of the
// web plugin or hand-written SQL (source "sql"), orders running or ended otherwise.
func checkDryRunStore(ctx context.Context, s *db.Store, url string) error {
	d := s.DB()
	var n int
	var uuid, stage string
	foreign := ` FROM imports WHERE COALESCE(description, '') NOT LIKE '` + dryRunPrefix + `%'` +
		` AND NOT (stage = '` + db.StagePending + `' AND COALESCE(source, '` + db.SourceSQL + `') <> '` + db.SourceSQL + `')`
	if err := d.QueryRowContext(ctx, `SELECT COUNT(DISTINCT uuid)`+foreign).Scan(&n); err != nil {
		return fmt.Errorf("check the database for a dry run: %w", err)
	}
	if n == 0 {
		return nil
	}
	err := d.QueryRowContext(ctx, `SELECT uuid, stage`+foreign+` ORDER BY id DESC LIMIT 1`).Scan(&uuid, &stage)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("check the database for a dry run: %w", err)
	}
	return settings.Errorf("omero.dry_run", "the database %s holds %d order(s) that no dry run created (newest: %s, %q); "+
		"a dry run would end pending ones 'Import Completed' without importing them. Give the dry run a database of "+
		"its own (ingest_tracking_db = \"sqlite:///dry-run.db\"), or preview an order's exact commands without "+
		"changing it: omero-adi orders preview UUID", db.MaskURL(url), n, uuid, stage)
}
