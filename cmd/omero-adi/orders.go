package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/agent"
	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/integrity"
	"github.com/omero-adi/omero-adi/order"
)

// settings loads the settings file; a missing default file is fine (defaults and environment).
func (e *env) settings() (agent.Config, error) {
	return agent.Load(e.configPath, !e.configExplicit, e.getenv)
}

// store opens (and migrates) the order database of the settings. Without a settings file the
// database must come from INGEST_TRACKING_DB_URL.
func (e *env) store(ctx context.Context) (*db.Store, agent.Config, error) {
	s, cfg, _, err := e.migratedStore(ctx)
	return s, cfg, err
}

// migratedStore is store with the report of the migrations.
func (e *env) migratedStore(ctx context.Context) (*db.Store, agent.Config, db.MigrateReport, error) {
	cfg, err := e.settings()
	if err != nil {
		return nil, cfg, db.MigrateReport{}, err
	}
	if cfg.Path == "" && e.getenv("INGEST_TRACKING_DB_URL") == "" {
		return nil, cfg, db.MigrateReport{}, usagef("no settings file at %s and INGEST_TRACKING_DB_URL is not set: give --config PATH or set INGEST_TRACKING_DB_URL", e.configPath)
	}
	log, err := agent.NewLogger(cfg, e.stderr)
	if err != nil {
		return nil, cfg, db.MigrateReport{}, err
	}
	s, rep, err := agent.OpenStore(ctx, cfg, log)
	return s, cfg, rep, err
}

func (e *env) cmdMigrate(ctx context.Context, args []string) error {
	if _, err := parse(newFlagSet("migrate"), args); err != nil {
		return err
	}
	s, cfg, rep, err := e.migratedStore(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	for _, m := range rep.Applied {
		fmt.Fprintf(e.stdout, "applied %s\n", m)
	}
	if n := len(rep.LegacyFailed); n > 0 {
		fmt.Fprintf(e.stdout, "%d legacy pending order(s) older than legacy_pending_max_age (%s) set to Import Failed, not imported:\n",
			n, cfg.LegacyPendingMaxAge)
		for _, o := range rep.LegacyFailed {
			since := "no stage time"
			if !o.Since.IsZero() {
				since = "pending since " + o.Since.UTC().Format("2006-01-02 15:04:05") + " UTC"
			}
			fmt.Fprintf(e.stdout, "  %s  (%s)\n", o.UUID, since)
		}
		fmt.Fprintln(e.stdout, "to import one anyway: UPDATE imports SET stage = 'Import Pending' WHERE uuid = '…';")
	}
	fmt.Fprintf(e.stdout, "database %s is up to date\n", db.MaskURL(cfg.IngestTrackingDB))
	return nil
}

func (e *env) cmdOrdersCreate(ctx context.Context, args []string) error {
	fs := newFlagSet("orders create")
	group := fs.String("group", "", "OMERO group")
	user := fs.String("user", "", "OMERO user the import runs as")
	dataset := fs.String("dataset", "", "Dataset id (or name:NAME)")
	screen := fs.String("screen", "", "Screen id (or name:NAME)")
	container := fs.String("container", "", "preprocessing container image")
	inputFile := fs.String("input-file", "{Files}", "preprocessing input_file")
	outputFolder := fs.String("output-folder", "/data", "preprocessing output_folder (container-side mount of the file's folder)")
	altOutputFolder := fs.String("alt-output-folder", "/out", "preprocessing alt_output_folder (container-side mount of the local temp folder; \"\" for none)")
	noCheck := fs.Bool("no-check", false, "do not check that the files exist below base_dir here (the runner still checks)")
	var params multiFlag
	fs.Var(&params, "param", "preprocessing parameter KEY=VALUE (repeatable)")
	files, err := parse(fs, args)
	if err != nil {
		return err
	}
	switch {
	case strings.TrimSpace(*group) == "":
		return usagef("orders create: --group is required")
	case strings.TrimSpace(*user) == "":
		return usagef("orders create: --user is required")
	case (*dataset == "") == (*screen == ""):
		return usagef("orders create: give exactly one of --dataset ID or --screen ID")
	case len(files) == 0:
		return usagef("orders create: no FILE given")
	}
	kind, id := order.Dataset, *dataset
	if *screen != "" {
		kind, id = order.Screen, *screen
	}
	target, err := order.ParseTarget(kind, id)
	if err != nil {
		return usagef("orders create: --%s: %v", strings.ToLower(kind), err)
	}
	d := order.Draft{Group: *group, User: *user, Target: target, Files: files, Source: db.SourceCLI}
	if *container != "" {
		d.Preprocessing = &order.Preprocessing{Container: *container, InputFile: *inputFile, OutputFolder: *outputFolder,
			AltOutputFolder: *altOutputFolder, ExtraParams: map[string]string{}}
		for _, p := range params {
			k, v, ok := strings.Cut(p, "=")
			if !ok || strings.TrimSpace(k) == "" {
				return usagef("orders create: --param %q is not KEY=VALUE", p)
			}
			d.Preprocessing.ExtraParams[k] = v
		}
	} else if len(params) > 0 {
		return usagef("orders create: --param needs --container")
	}
	if err := d.Validate(); err != nil {
		return usagef("orders create: %v", err)
	}
	s, cfg, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	if !*noCheck {
		checked, err := cfg.DataConfig.Roots().Check(d.Group, d.Files)
		if errors.Is(err, order.ErrInvalid) {
			return usagef("orders create: %v (use --no-check if the files are only visible to the runner's host)", err)
		} else if err != nil {
			return err
		}
		for i, f := range checked {
			d.Files[i] = f.Path
		}
	}
	o, _, err := s.CreateOrder(ctx, db.NewOrder{Draft: d})
	if err != nil {
		if errors.Is(err, db.ErrInvalid) {
			return usagef("orders create: %v", err)
		}
		return fmt.Errorf("create order: %w", err)
	}
	fmt.Fprintln(e.stdout, o.UUID)
	return nil
}

func (e *env) cmdOrdersList(ctx context.Context, args []string) error {
	fs := newFlagSet("orders list")
	var f db.Filter
	fs.StringVar(&f.Stage, "stage", "", "only orders in this stage (e.g. \"Import Failed\", or failed|pending|started|preprocessing|completed|cancelled)")
	fs.StringVar(&f.Group, "group", "", "only this group")
	fs.StringVar(&f.User, "user", "", "only this user")
	fs.IntVar(&f.Limit, "limit", 50, "at most this many orders, newest first (0: all)")
	asJSON := fs.Bool("json", false, "print JSON")
	if rest, err := parse(fs, args); err != nil {
		return err
	} else if len(rest) > 0 {
		return usagef("orders list: unexpected argument %q", rest[0])
	}
	if f.Limit < 0 {
		return usagef("orders list: --limit must not be negative, got %d", f.Limit)
	}
	stage, err := stageName(f.Stage)
	if err != nil {
		return err
	}
	f.Stage = stage
	s, _, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	orders, err := s.List(ctx, f)
	if err != nil {
		return fmt.Errorf("list orders: %w", err)
	}
	if *asJSON {
		out := make([]orderJSON, 0, len(orders))
		for _, o := range orders {
			out = append(out, toJSON(o, nil))
		}
		return writeJSON(e, out)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "UUID\tSTAGE\tGROUP\tUSER\tDESTINATION\tFILES\tUPDATED\tDESCRIPTION")
	for _, o := range orders {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s:%s\t%d\t%s\t%s\n", o.UUID, o.Stage, o.Group, o.User,
			o.DestinationType, o.DestinationID, countFiles(o), o.Timestamp.Local().Format("2006-01-02 15:04:05"), order.Clip(strings.ReplaceAll(o.Description, "\n", " "), 80))
	}
	return tw.Flush()
}

// stageName accepts a stage string or its short form ("failed").
func stageName(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	all := []string{db.StagePending, db.StageStarted, db.StagePreprocessing, db.StageCompleted, db.StageFailed, db.StageCancelled}
	for _, st := range all {
		if strings.EqualFold(s, st) || strings.EqualFold("Import "+s, st) {
			return st, nil
		}
	}
	return "", usagef("--stage %q is not a stage (one of %q)", s, all)
}

func (e *env) cmdOrdersShow(ctx context.Context, args []string) error {
	fs := newFlagSet("orders show")
	asJSON := fs.Bool("json", false, "print JSON")
	rest, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return usagef("orders show: give exactly one UUID")
	}
	s, _, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	o, err := s.Get(ctx, rest[0])
	if err != nil {
		return orderErr(rest[0], err)
	}
	hist, err := s.History(ctx, o.UUID)
	if err != nil {
		return fmt.Errorf("read history: %w", err)
	}
	j := toJSON(o, hist)
	if j.Integrity, err = s.GetIntegrity(ctx, o.UUID); err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(e, j)
	}
	w := e.stdout
	fmt.Fprintf(w, "uuid:         %s\nstage:        %s\ngroup:        %s\nuser:         %s\ndestination:  %s %s\n",
		j.UUID, j.Stage, j.Group, j.User, j.DestinationType, j.DestinationID)
	fmt.Fprintf(w, "source:       %s\nattempt:      %d\nupdated:      %s\n", j.Source, j.Attempt, o.Timestamp.Local().Format(time.RFC3339))
	fmt.Fprintf(w, "files:\n")
	for _, f := range j.Files {
		fmt.Fprintf(w, "  %s\n", f)
	}
	if p := j.Preprocessing; p != nil {
		fmt.Fprintf(w, "preprocessing: %s (input %s, output %s, alt output %s, params %v)\n", p.Container, p.InputFile, p.OutputFolder, p.AltOutputFolder, p.ExtraParams)
	}
	if r := j.Result; r != nil {
		fmt.Fprintf(w, "result:       filesets %v, images %v, plates %v\n", r.Filesets, r.Images, r.Plates)
		if r.Outcome != "" {
			fmt.Fprintf(w, "outcome:      %s\n", r.Outcome)
		}
		for _, f := range r.Files {
			line := "  " + f.State + "  " + f.Path
			if len(f.Filesets) > 0 {
				line += fmt.Sprintf("  filesets %v images %v", f.Filesets, f.Images)
				if len(f.Plates) > 0 {
					line += fmt.Sprintf(" plates %v", f.Plates)
				}
			}
			if f.Reason != "" {
				line += "  (" + f.Reason + ")"
			}
			fmt.Fprintln(w, line)
		}
		if r.Summary != "" {
			fmt.Fprintf(w, "importer:     %s\n", r.Summary)
		}
	}
	if j.ImportOptions != nil {
		fmt.Fprintf(w, "import options: %s\n", *j.ImportOptions)
	}
	if j.Description != "" {
		fmt.Fprintf(w, "description:  %s\n", j.Description)
	}
	if in := j.Integrity; in != nil {
		state := "intact"
		if in.Broken {
			state = "BROKEN"
		}
		fmt.Fprintf(w, "integrity:    %s (%d links, checked %s)\n", state, in.Links, in.CheckedAt.Local().Format(time.RFC3339))
		for _, d := range in.Damage {
			fmt.Fprintf(w, "  %s\n", integrity.Describe(d))
		}
	}
	fmt.Fprintf(w, "history:\n")
	for _, h := range hist {
		fmt.Fprintf(w, "  %s  %-20s  %s  %s\n", h.At.Local().Format("2006-01-02 15:04:05"), h.Stage, h.Worker, h.Description)
	}
	return nil
}

// cmdOrdersPreview prints the exact commands an order would run under these settings, in any
// stage, without changing it: how to see what a dry run would do on a shared database.
func (e *env) cmdOrdersPreview(ctx context.Context, args []string) error {
	rest, err := parse(newFlagSet("orders preview"), args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return usagef("orders preview: give exactly one UUID")
	}
	s, cfg, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	o, cmds, err := agent.Preview(ctx, cfg, s, rest[0], quiet)
	if errors.Is(err, db.ErrNotFound) {
		return orderErr(rest[0], err)
	}
	fmt.Fprintf(e.stdout, "order %s (%s): as user %q in group %q\n", o.UUID, o.Stage, o.User, o.Group)
	if err != nil {
		return fmt.Errorf("preview order %s: %w", o.UUID, err)
	}
	for _, c := range cmds {
		fmt.Fprintln(e.stdout, c)
	}
	return nil
}

// cmdOrdersRetry runs a failed or cancelled order again: the runner imports only its files that
// are not in OMERO yet (its result says which); --all imports every file again.
func (e *env) cmdOrdersRetry(ctx context.Context, args []string) error {
	fs := newFlagSet("orders retry")
	all := fs.Bool("all", false, "import every file of the order again, also those already in OMERO")
	return e.orderAction(ctx, fs, args, func(s *db.Store, uuid string) (db.Order, error) {
		if *all {
			return s.RetryAll(ctx, uuid)
		}
		return s.Retry(ctx, uuid)
	})
}

func (e *env) cmdOrdersCancel(ctx context.Context, args []string) error {
	return e.orderAction(ctx, newFlagSet("orders cancel"), args, func(s *db.Store, uuid string) (db.Order, error) { return s.Cancel(ctx, uuid) })
}

func (e *env) orderAction(ctx context.Context, fs *flag.FlagSet, args []string, act func(*db.Store, string) (db.Order, error)) error {
	name := strings.TrimPrefix(fs.Name(), "orders ")
	rest, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return usagef("orders %s: give exactly one UUID", name)
	}
	s, _, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	o, err := act(s, rest[0])
	if err != nil {
		return orderErr(rest[0], err)
	}
	state := o.Stage
	if o.CancelRequested {
		state += " (cancel requested: the running import stops shortly)"
	}
	fmt.Fprintf(e.stdout, "%s: %s\n", o.UUID, state)
	return nil
}

func orderErr(uuid string, err error) error {
	switch {
	case errors.Is(err, db.ErrNotFound):
		return usagef("order %q not found", uuid)
	case errors.Is(err, db.ErrStage):
		return usagef("order %s: %v", uuid, err)
	}
	return err
}

// orderJSON is the --json shape of interface.md.
type orderJSON struct {
	UUID            string               `json:"uuid"`
	Stage           string               `json:"stage"`
	Group           string               `json:"group"`
	User            string               `json:"user"`
	DestinationType string               `json:"destination_type"`
	DestinationID   string               `json:"destination_id"`
	Files           []string             `json:"files"`
	Description     string               `json:"description"`
	Timestamp       time.Time            `json:"timestamp"`
	Source          string               `json:"source"`
	Attempt         int                  `json:"attempt"`
	Preprocessing   *order.Preprocessing `json:"preprocessing"`
	Result          *db.Result           `json:"result"`
	ImportOptions   *string              `json:"import_options"` // as stored; null when NULL
	History         []db.Event           `json:"history,omitempty"`
	Integrity       *db.Integrity        `json:"integrity,omitempty"` // the last integrity check, when there was one
}

func toJSON(o db.Order, hist []db.Event) orderJSON {
	files, err := o.FileList()
	if err != nil || files == nil {
		files = []string{o.Files} // a hand-written row that is not a JSON list: show it as it is
		if o.Files == "" {
			files = []string{}
		}
	}
	var options *string
	if o.HasImportOptions {
		options = &o.ImportOptions
	}
	return orderJSON{
		UUID: o.UUID, Stage: o.Stage, Group: o.Group, User: o.User,
		DestinationType: o.DestinationType, DestinationID: o.DestinationID, Files: files,
		Description: o.Description, Timestamp: o.Timestamp, Source: o.Source, Attempt: o.Attempt,
		Preprocessing: o.Preprocessing, Result: o.Result, ImportOptions: options, History: hist,
	}
}

func writeJSON(e *env, v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func countFiles(o db.Order) int {
	files, err := o.FileList()
	if err != nil {
		return 0
	}
	return len(files)
}
