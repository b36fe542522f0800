package db

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/omero-adi/omero-adi/order"
)

// Stage strings are part of the public table contract (orders-db.md): keep them exactly.
const (
	StagePending       = "Import Pending"
	StageStarted       = "Import Started"
	StagePreprocessing = "Import Preprocessing"
	StageCompleted     = "Import Completed"
	StageFailed        = "Import Failed"
	StageCancelled     = "Import Cancelled"
)

// Sources of an order (the imports.source column). A watch rule's orders carry the rule name.
const (
	SourceSQL = "sql" // default for rows inserted by hand or by the web plugin
	SourceCLI = "cli"
)

// Sentinel errors of the store, checked with errors.Is.
var (
	ErrNotFound  = errors.New("order not found")
	ErrLeaseLost = errors.New("lease lost") // fenced write refused: another worker or recovery owns the order now
	ErrStage     = errors.New("order is not in a stage that allows this")
)

// Order is the newest imports row of one uuid, with the agent's columns.
// Files is kept raw: hand-written rows may hold anything, and the runner validates it.
type Order struct {
	ID              int64 // row id of the newest row of this uuid
	UUID            string
	Group           string
	User            string
	DestinationID   string
	DestinationType string
	Stage           string
	Timestamp       time.Time
	Files           string // the files column as stored (JSON list as text, when well formed)
	FileNames       string // "" when NULL
	Description     string // "" when NULL
	PreprocessingID *int64
	Preprocessing   *order.Preprocessing // the imports_preprocessing row, loaded when PreprocessingID is set and the row exists
	Source          string
	Attempt         int
	LeaseOwner      string     // "" when not running
	LeaseExpires    *time.Time // nil when not running
	NotBefore       *time.Time
	CancelRequested bool
	Result          *Result // ids the import created, nil until known
	// ImportOptions is the import_options column as stored (JSON text of BIOMERO.importer 1.4,
	// "" when NULL); HasImportOptions tells NULL from an empty string.
	ImportOptions    string
	HasImportOptions bool
}

// FileList decodes Files; an error names what is wrong with it.
func (o Order) FileList() ([]string, error) {
	var files []string
	if err := json.Unmarshal([]byte(o.Files), &files); err != nil {
		return nil, err
	}
	return files, nil
}

// Result is what an order's imports put into OMERO, stored as JSON in imports.result (both
// engines) and shown by `orders show` (--json: this shape). Filesets, Images and Plates are every
// object of the order in OMERO, over all its attempts. Files, once the import was verified, holds
// the outcome of each file the order names (see FileResult) and Outcome the order's (complete,
// partial, nothing imported); Describe says it in plain words. A retry of a partial order imports
// only the files not in OMERO; `orders retry --all` clears the result and imports every file.
type Result struct {
	Filesets []int64 `json:"filesets,omitempty"`
	Images   []int64 `json:"images,omitempty"`
	Plates   []int64 `json:"plates,omitempty"`
	// TempDir is the local temp folder (on the runner's host) that held the order's converted
	// files for the import; recovery names it, since OMERO's links may still point into it.
	TempDir string `json:"temp_dir,omitempty"`
	// Outcome is OutcomeComplete, OutcomePartial or OutcomeNothing; "" until verified.
	Outcome string       `json:"outcome,omitempty"`
	Files   []FileResult `json:"files,omitempty"`
	// Summary is the importer's closing summary line of the last attempt, as it printed it
	// ("2 files uploaded, 2 filesets created, 2 images imported, 1 error in 0:00:03.120").
	Summary string `json:"summary,omitempty"`
}

// Lease identifies one attempt of one worker on one order: every fenced write checks all three.
type Lease struct {
	UUID    string
	Owner   string
	Attempt int
}

// Lease returns the fencing token of a claimed order.
func (o Order) Lease() Lease { return Lease{UUID: o.UUID, Owner: o.LeaseOwner, Attempt: o.Attempt} }

// Event is one row of the history table.
type Event struct {
	UUID        string    `json:"-"`
	Stage       string    `json:"stage"`
	At          time.Time `json:"at"`
	Worker      string    `json:"worker"`
	Description string    `json:"description"`
}

// NewOrder is what CreateOrder needs: the order's draft (its Preprocessing is inserted as a new
// imports_preprocessing row) and, when set, the WatchKey that makes the creation idempotent: one
// order per (rule, path, fingerprint), stored in the same transaction.
type NewOrder struct {
	order.Draft
	WatchKey *WatchKey
}

// WatchKey identifies a settled unit of a watch rule.
type WatchKey struct {
	Rule        string
	Path        string
	Fingerprint string
}

// WatchItem is a row of the watcher dedupe table.
type WatchItem struct {
	WatchKey
	UUID    string
	Created time.Time
}

// Filter selects orders for List; zero values mean any.
type Filter struct {
	Stage string
	Group string
	User  string
	Limit int // 0: no limit
}

// RecoverPolicy says what recovery does with an order whose lease expired.
type RecoverPolicy struct {
	Retry       bool          // false: fail it as interrupted; true: back to pending with backoff
	MaxAttempts int           // with Retry: fail instead once Attempt reaches this
	Backoff     time.Duration // with Retry: not_before = now + Backoff * attempt
}
