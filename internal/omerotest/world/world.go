// Package world holds the state of the OMERO CLI test double: the users, groups and containers the
// "server" knows, the sessions it handed out, and everything imports and object calls created. The
// state lives in one compact JSON file shared by every process of the double (many imports run at
// once), so each change is a read-modify-write under an exclusive flock on a lock file beside it.
//
// The records the double only writes — every call's argv (Calls) and every import (Imports) — are
// appended as JSON lines to a journal beside the state file (path + ".journal") instead, so the
// state a call must read and rewrite stays small however many orders ran: Read and Load return them
// in State as before. An Update whose function changed nothing in the state file rewrites nothing.
package world

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

// FirstID is where the double starts numbering the objects it creates, above every seeded id.
const FirstID = 1000

// State is the whole world of the double. Fields are exported for JSON and for tests to read.
type State struct {
	Server      Server       `json:"server"`
	Users       []User       `json:"users"`
	Groups      []Group      `json:"groups"`
	Datasets    []Container  `json:"datasets"`
	Screens     []Container  `json:"screens"`
	Sessions    []Session    `json:"sessions"`
	Filesets    []Fileset    `json:"filesets"`
	Images      []Image      `json:"images"`
	Plates      []Plate      `json:"plates"`
	Annotations []Annotation `json:"annotations"`
	Links       []Link       `json:"links"`
	// Imports and Calls live in the journal (see the package documentation): Update's function
	// sees them empty and what it appends to them is added to the journal.
	Imports []Import `json:"-"`
	Calls   []Call   `json:"-"`
	// PasswordInArgv is set once any call carried a password on its command line (-w, --password, or
	// an argument equal to a known password): tests assert it stays false.
	PasswordInArgv bool  `json:"password_in_argv"`
	NextID         int64 `json:"next_id"`
	// Retain, when positive, keeps only the newest Retain sessions, filesets, images, plates,
	// annotations and links (older ones are forgotten, as if deleted on the server): load tests
	// that run thousands of orders set it so each call stays cheap. Zero keeps everything.
	Retain int `json:"retain,omitempty"`
	// ZarrRoots, when set, are the folders the server's omero-zarr-pixel-buffer can read: a Zarr
	// registered from elsewhere gives an image whose pixels it cannot read (PixelsUnreadable).
	ZarrRoots []string `json:"zarr_roots,omitempty"`
	Failure   Failure  `json:"failure"`
	// HangPIDs are the processes a hanging import left running (itself and its child), so tests can
	// check that a timeout killed them all.
	HangPIDs []int `json:"hang_pids"`
}

// Server is the only address the double answers on; another host is an unknown host (exit 43) and
// another port a refused connection (exit 42).
type Server struct {
	Host string `json:"host"`
	Port int    `json:"port"`
}

// User is an OMERO experimenter. Admins may log in for others with --sudo.
type User struct {
	ID       int64  `json:"id"`
	Name     string `json:"name"`
	Password string `json:"password"`
	Admin    bool   `json:"admin"`
	// FirstName, LastName and Email are what `omero user info` prints; Email "" is unset.
	FirstName string `json:"first_name,omitempty"`
	LastName  string `json:"last_name,omitempty"`
	Email     string `json:"email,omitempty"`
	LDAP      bool   `json:"ldap,omitempty"`
}

// Group is an OMERO group with its members' user ids.
type Group struct {
	ID      int64   `json:"id"`
	Name    string  `json:"name"`
	Members []int64 `json:"members"`
	// Owners are the members who own the group (group leaders); each is also in Members.
	Owners []int64 `json:"owners,omitempty"`
}

// Container is a Dataset or a Screen.
type Container struct {
	ID      int64  `json:"id"`
	Name    string `json:"name"`
	GroupID int64  `json:"group_id"`
	OwnerID int64  `json:"owner_id"`
}

// Session is a server session; its Key is what `-k` passes.
type Session struct {
	Key     string    `json:"key"`
	UserID  int64     `json:"user_id"`
	GroupID int64     `json:"group_id"`
	SudoBy  string    `json:"sudo_by,omitempty"`
	Closed  bool      `json:"closed"`
	Created time.Time `json:"created"`
}

// Fileset is one imported fileset: its templatePrefix (relative to the ManagedRepository, ending in
// "/"), the client paths it was imported from and the repository paths (relative) created for them.
type Fileset struct {
	ID             int64    `json:"id"`
	GroupID        int64    `json:"group_id"`
	OwnerID        int64    `json:"owner_id"`
	TemplatePrefix string   `json:"template_prefix"`
	ClientPaths    []string `json:"client_paths"`
	RepoPaths      []string `json:"repo_paths"`
	// Sizes and Hashes describe each file's OriginalFile as the import recorded it (hasher
	// SHA1-160, the SHA-1 in hex), by the index of RepoPaths; Hashes[i] "" stands for a null hash.
	Sizes  []int64  `json:"sizes,omitempty"`
	Hashes []string `json:"hashes,omitempty"`
	// Transfer is the text of the fileset's file-transfer CommentAnnotation (namespace
	// openmicroscopy.org/omero/import/fileTransfer): the transfer class, "" for an upload.
	Transfer string `json:"transfer,omitempty"`
}

// Image is an imported image.
type Image struct {
	ID        int64  `json:"id"`
	Name      string `json:"name"`
	FilesetID int64  `json:"fileset_id"`
	GroupID   int64  `json:"group_id"`
	DatasetID int64  `json:"dataset_id,omitempty"`
	PlateID   int64  `json:"plate_id,omitempty"`
	// ExtInfo is set on images registered from a Zarr (omero zarr import).
	ExtInfo *ExtInfo `json:"ext_info,omitempty"`
	// PixelsUnreadable marks a registered image whose Zarr lies outside ZarrRoots.
	PixelsUnreadable bool `json:"pixels_unreadable,omitempty"`
}

// ExtInfo is an object's ExternalInfo.
type ExtInfo struct {
	EntityID   int64  `json:"entity_id"`
	EntityType string `json:"entity_type"`
	Lsid       string `json:"lsid"`
}

// Plate is an imported plate (screen imports).
type Plate struct {
	ID        int64  `json:"id"`
	Name      string `json:"name"`
	FilesetID int64  `json:"fileset_id"`
	GroupID   int64  `json:"group_id"`
	ScreenID  int64  `json:"screen_id,omitempty"`
}

// Annotation is a MapAnnotation with its key-value pairs in order.
type Annotation struct {
	ID      int64       `json:"id"`
	NS      string      `json:"ns"`
	Values  [][2]string `json:"values"`
	GroupID int64       `json:"group_id"`
}

// Link is an annotation link such as ImageAnnotationLink parent=Image:101 child=MapAnnotation:456.
type Link struct {
	ID      int64  `json:"id"`
	Kind    string `json:"kind"`
	Parent  string `json:"parent"`
	Child   string `json:"child"`
	GroupID int64  `json:"group_id"`
}

// Import records one `omero import` run that got past its checks.
type Import struct {
	User            string   `json:"user"`
	Group           string   `json:"group"`
	Target          string   `json:"target"` // "Dataset:151", "Screen:201" or "" (orphaned)
	Paths           []string `json:"paths"`
	Transfer        string   `json:"transfer"`
	Skip            []string `json:"skip"`
	Depth           int      `json:"depth"`
	ParallelUpload  int      `json:"parallel_upload"`
	ParallelFileset int      `json:"parallel_fileset"`
	Filesets        []int64  `json:"filesets"`
	Prefixes        []string `json:"prefixes"`
	Images          []int64  `json:"images"`
	Plates          []int64  `json:"plates"`
	ExitCode        int      `json:"exit_code"`
	Argv            []string `json:"argv"`
}

// Call records every invocation of the double, before it does anything.
type Call struct {
	Argv           []string `json:"argv"`
	Lines          []string `json:"lines,omitempty"` // what `omero load` read from stdin
	PasswordInArgv bool     `json:"password_in_argv"`
	PasswordInEnv  bool     `json:"password_in_env"`
	SessionDir     string   `json:"session_dir"`
}

// Failure switches make the double misbehave the way a real server or CLI does.
type Failure struct {
	// BadPassword refuses every password login as a wrong password (exit 52, as without a terminal
	// the CLI cannot ask again).
	BadPassword bool `json:"bad_password"`
	// ConnectionRefused makes the next N server calls fail with exit 42; negative: every call.
	ConnectionRefused int `json:"connection_refused"`
	// UnknownHost makes the next N server calls fail with exit 43; negative: every call.
	UnknownHost int `json:"unknown_host"`
	// FailImport fails an import after FailImportAfter filesets were imported (exit 2).
	FailImport      bool `json:"fail_import"`
	FailImportAfter int  `json:"fail_import_after"`
	// NoImports fails every file while candidates are scanned: the import exits 0 with no output,
	// "No imports due to errors!" and the summary in its log.
	NoImports bool `json:"no_imports"`
	// ScanFail lists files (their number among the filesets an import finds, from 0, in the order
	// of the paths given and, below a folder, of their names) that fail while candidates are
	// scanned: logged as FILE_EXCEPTION, counted as an error, dropped; the run goes on.
	ScanFail []int `json:"scan_fail,omitempty"`
	// ImportFail lists files (numbered as for ScanFail) whose fileset the server fails
	// (INTERNAL_EXCEPTION): the import stops with exit 2, or with -c goes on and exits 0.
	ImportFail []int `json:"import_fail,omitempty"`
	// Hang makes an import start a child process and sleep until killed.
	Hang bool `json:"hang"`
	// FailObj makes every obj action fail as the server refusing the change (exit 80).
	FailObj bool `json:"fail_obj"`
	// FailHQL makes every hql query fail as a query the server rejects (exit 52, "Bad query").
	FailHQL bool `json:"fail_hql,omitempty"`
	// ImportDelay is slept before each fileset of an import.
	ImportDelay time.Duration `json:"import_delay"`
	// AsRoot makes every call refuse to run as if started by root: "FATAL: Running … as root …" on
	// stdout, nothing on stderr, exit 1.
	AsRoot bool `json:"as_root"`
	// NoZarrPlugin makes `omero zarr` an unknown subcommand, as without omero-cli-zarr installed.
	NoZarrPlugin bool `json:"no_zarr_plugin,omitempty"`
}

// ScanFails reports whether file n fails while candidates are scanned (ScanFail).
func (f Failure) ScanFails(n int) bool { return slices.Contains(f.ScanFail, n) }

// ImportFails reports whether the fileset of file n fails (ImportFail).
func (f Failure) ImportFails(n int) bool { return slices.Contains(f.ImportFail, n) }

// ErrNoState means the state file path is not set or does not exist.
var ErrNoState = errors.New("no state file")

// trim applies Retain.
func (s *State) trim() {
	if s.Retain <= 0 {
		return
	}
	s.Sessions = newest(s.Sessions, s.Retain)
	s.Filesets = newest(s.Filesets, s.Retain)
	s.Images = newest(s.Images, s.Retain)
	s.Plates = newest(s.Plates, s.Retain)
	s.Annotations = newest(s.Annotations, s.Retain)
	s.Links = newest(s.Links, s.Retain)
}

func newest[T any](list []T, n int) []T {
	if len(list) <= n {
		return list
	}
	return append([]T(nil), list[len(list)-n:]...)
}

// NewID hands out the next object id.
func (s *State) NewID() int64 {
	if s.NextID < FirstID {
		s.NextID = FirstID
	}
	id := s.NextID
	s.NextID++
	return id
}

// UserByName finds a user.
func (s *State) UserByName(name string) *User {
	for i := range s.Users {
		if s.Users[i].Name == name {
			return &s.Users[i]
		}
	}
	return nil
}

// UserByID finds a user.
func (s *State) UserByID(id int64) *User {
	for i := range s.Users {
		if s.Users[i].ID == id {
			return &s.Users[i]
		}
	}
	return nil
}

// GroupByName finds a group.
func (s *State) GroupByName(name string) *Group {
	for i := range s.Groups {
		if s.Groups[i].Name == name {
			return &s.Groups[i]
		}
	}
	return nil
}

// GroupByID finds a group.
func (s *State) GroupByID(id int64) *Group {
	for i := range s.Groups {
		if s.Groups[i].ID == id {
			return &s.Groups[i]
		}
	}
	return nil
}

// IsOwner reports whether user uid owns group g.
func (g *Group) IsOwner(uid int64) bool { return slices.Contains(g.Owners, uid) }

// IsMember reports whether user uid belongs to group g.
func (g *Group) IsMember(uid int64) bool {
	for _, m := range g.Members {
		if m == uid {
			return true
		}
	}
	return false
}

// SessionByKey finds an open session.
func (s *State) SessionByKey(key string) *Session {
	for i := range s.Sessions {
		if s.Sessions[i].Key == key && !s.Sessions[i].Closed {
			return &s.Sessions[i]
		}
	}
	return nil
}

// entry is one line of the journal: exactly one of its fields is set.
type entry struct {
	Call   *Call   `json:"call,omitempty"`
	Import *Import `json:"import,omitempty"`
}

func journalPath(path string) string { return path + ".journal" }

// Load reads the state and its journal without locking (for tests, after the double's processes
// ended).
func Load(path string) (State, error) {
	st, _, err := load(path)
	if err != nil {
		return st, err
	}
	err = readJournal(path, &st)
	return st, err
}

// load reads the state file only; it also returns the bytes read.
func load(path string) (State, []byte, error) {
	var st State
	if path == "" {
		return st, nil, ErrNoState
	}
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return st, nil, fmt.Errorf("read state %s: %w", path, ErrNoState)
		}
		return st, nil, fmt.Errorf("read state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, nil, fmt.Errorf("decode state %s: %w", path, err)
	}
	return st, b, nil
}

// readJournal appends the journal's records to st.Calls and st.Imports. A missing journal is an
// empty one; a torn last line (a writer killed mid-append) is ignored.
func readJournal(path string, st *State) error {
	b, err := os.ReadFile(journalPath(path))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read state journal: %w", err)
	}
	for len(b) > 0 {
		line, rest, complete := bytes.Cut(b, []byte{'\n'})
		b = rest
		if !complete {
			break
		}
		var e entry
		if err := json.Unmarshal(line, &e); err != nil {
			return fmt.Errorf("decode state journal %s: %w", journalPath(path), err)
		}
		if e.Call != nil {
			st.Calls = append(st.Calls, *e.Call)
		}
		if e.Import != nil {
			st.Imports = append(st.Imports, *e.Import)
		}
	}
	return nil
}

// Append adds calls and imports to the journal without taking the state lock: the journal is
// opened O_APPEND and written in one write, which Linux never interleaves with another append, and
// readers ignore a torn last line. The double records every call this way, so that a call that
// only reads the state takes no exclusive lock at all.
func Append(path string, calls []Call, imports []Import) error {
	if path == "" {
		return ErrNoState
	}
	return appendJournal(path, calls, imports)
}

// appendJournal adds calls and imports to the journal in one write.
func appendJournal(path string, calls []Call, imports []Import) error {
	if len(calls) == 0 && len(imports) == 0 {
		return nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for i := range calls {
		if err := enc.Encode(entry{Call: &calls[i]}); err != nil {
			return fmt.Errorf("encode state journal: %w", err)
		}
	}
	for i := range imports {
		if err := enc.Encode(entry{Import: &imports[i]}); err != nil {
			return fmt.Errorf("encode state journal: %w", err)
		}
	}
	f, err := os.OpenFile(journalPath(path), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("write state journal: %w", err)
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		_ = f.Close()
		return fmt.Errorf("write state journal: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write state journal: %w", err)
	}
	return nil
}

// Save writes the whole state: the state file atomically (temporary file, then rename) and a new
// journal holding st.Calls and st.Imports. Call it under Update's lock or before any process of
// the double runs.
func Save(path string, st State) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if err := writeState(path, b); err != nil {
		return err
	}
	if err := os.Remove(journalPath(path)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("write state journal: %w", err)
	}
	return appendJournal(path, st.Calls, st.Imports)
}

func writeState(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".state-*.json")
	if err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

// lock takes a flock on the lock file beside the state; the returned func releases it.
func lock(path string, how int) (func(), error) {
	if path == "" {
		return nil, ErrNoState
	}
	f, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open state lock: %w", err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("lock state: %w", err)
	}
	return func() { _ = f.Close() }, nil // closing the file releases the lock
}

// Read loads the state and its journal under a shared lock.
func Read(path string) (State, error) {
	unlock, err := lock(path, syscall.LOCK_SH)
	if err != nil {
		return State{}, err
	}
	defer unlock()
	return Load(path)
}

// View runs fn on the state (without Calls and Imports) under a shared lock, for calls that
// change nothing: what fn changes is not saved.
func View(path string, fn func(*State)) error {
	unlock, err := lock(path, syscall.LOCK_SH)
	if err != nil {
		return err
	}
	defer unlock()
	st, _, err := load(path)
	if err != nil {
		return err
	}
	fn(&st)
	return nil
}

// Update runs fn on the state under an exclusive lock and saves it when fn returns nil. An error
// from fn is returned as is and nothing is saved. fn sees Calls and Imports empty (they are not
// read); the records it appends to them are added to the journal. The state file is rewritten only
// when fn changed it.
func Update(path string, fn func(*State) error) error {
	unlock, err := lock(path, syscall.LOCK_EX)
	if err != nil {
		return err
	}
	defer unlock()
	st, old, err := load(path)
	if err != nil {
		return err
	}
	if err := fn(&st); err != nil {
		return err
	}
	st.trim()
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if !bytes.Equal(b, old) {
		if err := writeState(path, b); err != nil {
			return err
		}
	}
	return appendJournal(path, st.Calls, st.Imports)
}
