package agent

import (
	"context"
	"fmt"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/settings"
)

// checkDryRunStore refuses a dry run on a database that holds orders a dry run did not make: a
// dry-run agent ends every order it claims 'Import Completed' without importing anything, so on
// a database shared with the web plugin or a real agent it would end real users' orders.
// Refusing to start (rather than skipping foreign orders, which would still need claiming them)
// also keeps the dry run's own watcher from creating orders there that a real agent would import.
// Which orders a dry run made is db.Store.NotDryRun's to say; pending orders of `orders create`
// and watch rules count as its own, so that orders made before the dry run starts, as the quick
// start does, are fine.
func checkDryRunStore(ctx context.Context, s *db.Store, url string) error {
	n, uuid, stage, err := s.NotDryRun(ctx)
	if err != nil {
		return fmt.Errorf("check the database for a dry run: %w", err)
	}
	if n == 0 {
		return nil
	}
	return settings.Errorf("omero.dry_run", "the database %s holds %d order(s) that no dry run created (newest: %s, %q); "+
		"a dry run would end pending ones 'Import Completed' without importing them. Give the dry run a database of "+
		"its own (ingest_tracking_db = \"sqlite:///dry-run.db\"), or preview an order's exact commands without "+
		"changing it: omero-adi orders preview UUID", db.MaskURL(url), n, uuid, stage)
}
