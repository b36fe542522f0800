// Package omerotest gives tests a faithful double of the OMERO command-line client (the program in
// ./omero, see its package documentation for the choices it makes) and a seeded simulated server:
//
//	d := omerotest.New(t)              // builds the double once per test binary, seeds a world
//	cfg.CLI, cfg.Env = d.Bin, d.Env()  // point the code under test at it
//	st := d.State(t)                   // what the "server" now holds: imports, annotations, links…
//	d.SetFailure(t, omerotest.Failure{ConnectionRefused: 2})
//	d.Update(t, func(s *omerotest.State) { s.Retain = 100 }) // load tests: keep each call cheap
//
// Every call is recorded (State.Calls) and so is every import (State.Imports); both live in an
// append-only journal beside the state file, so calls stay cheap however many orders ran.
//
// The default world: admin "root" (id 0, password "omero") on localhost at Double.Port, where New
// listens on 127.0.0.1 so that a TCP probe finds the server up (Down and Up stop and restart it); group "Demo" (id 3)
// with users "alice" (id 5) and "bob" (id 6), datasets 151 and 152 and screen 201; group "Other"
// (id 4) with "carol" (id 7) and dataset 300. Alice and carol have e-mail addresses (AliceEmail,
// CarolEmail), bob has none. Users other than root have no password: log in for
// them with --sudo root.
package omerotest

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/internal/omerotest/world"
)

// Types of the double's state, re-exported for tests.
type (
	State      = world.State
	Import     = world.Import
	Annotation = world.Annotation
	Link       = world.Link
	Fileset    = world.Fileset
	Image      = world.Image
	Plate      = world.Plate
	Failure    = world.Failure
	Session    = world.Session
	User       = world.User
	Group      = world.Group
	Container  = world.Container
	Call       = world.Call
)

// Seeded world (see the package documentation).
const (
	Host          = "localhost"
	AdminUser     = "root"
	AdminPassword = "omero"
	DemoGroupID   = 3
	OtherGroupID  = 4
	AliceID       = 5
	BobID         = 6
	CarolID       = 7
	Dataset1      = 151
	Dataset2      = 152
	Screen1       = 201
	OtherDataset  = 300
	// AliceEmail and CarolEmail are the users' e-mail addresses; bob has none.
	AliceEmail = "alice@example.org"
	CarolEmail = "carol@example.org"
)

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  string
)

// Build compiles the double once per test binary and returns the path of the program (named
// "omero"). The binary lives in a temporary folder that is left for the operating system to clean.
func Build(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "omero-double-")
		if err != nil {
			buildErr = err.Error()
			return
		}
		// go test puts $GOROOT/bin on PATH.
		goBin, err := exec.LookPath("go")
		if err != nil {
			buildErr = "build the OMERO CLI double: the go command is not on PATH"
			return
		}
		_, self, _, _ := runtime.Caller(0)
		src := filepath.Join(filepath.Dir(self), "omero")
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, goBin, "build", "-o", filepath.Join(dir, "omero"), ".")
		cmd.Dir = src
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = "build the OMERO CLI double: " + err.Error() + "\n" + string(out)
			return
		}
		buildBin = filepath.Join(dir, "omero")
	})
	if buildErr != "" {
		t.Fatal(buildErr)
	}
	return buildBin
}

// Double is one simulated OMERO server with its CLI. Bin is the program; StatePath its state file;
// ManagedRepo the server's ManagedRepository (created, writable); SessionRoot an empty folder tests
// can use for per-order session folders; Port the port the server listens on (on 127.0.0.1, as
// Host "localhost"), which the double itself and a client's TCP probe connect to.
type Double struct {
	Bin, StatePath, ManagedRepo, SessionRoot string
	Port                                     int

	mu sync.Mutex
	ln net.Listener // nil while Down
}

// DefaultState is the seeded world of New (New sets Server.Port).
func DefaultState() State {
	return State{
		Server: world.Server{Host: Host},
		Users: []User{
			{ID: 0, Name: AdminUser, Password: AdminPassword, Admin: true, FirstName: "root", LastName: "root"},
			{ID: AliceID, Name: "alice", FirstName: "Alice", LastName: "Liddell", Email: AliceEmail},
			{ID: BobID, Name: "bob", FirstName: "Bob", LastName: "Builder"},
			{ID: CarolID, Name: "carol", FirstName: "Carol", LastName: "Danvers", Email: CarolEmail, LDAP: true},
		},
		Groups: []Group{
			{ID: 0, Name: "system", Members: []int64{0}},
			{ID: DemoGroupID, Name: "Demo", Members: []int64{AliceID, BobID}},
			{ID: OtherGroupID, Name: "Other", Members: []int64{CarolID}},
		},
		Datasets: []Container{
			{ID: Dataset1, Name: "first", GroupID: DemoGroupID, OwnerID: AliceID},
			{ID: Dataset2, Name: "second", GroupID: DemoGroupID, OwnerID: BobID},
			{ID: OtherDataset, Name: "elsewhere", GroupID: OtherGroupID, OwnerID: CarolID},
		},
		Screens: []Container{{ID: Screen1, Name: "screen", GroupID: DemoGroupID, OwnerID: AliceID}},
		NextID:  world.FirstID,
	}
}

// New builds the double and seeds a fresh default world in t.TempDir().
func New(t testing.TB) *Double {
	t.Helper()
	bin := Build(t)
	dir := t.TempDir()
	d := &Double{
		Bin:         bin,
		StatePath:   filepath.Join(dir, "state.json"),
		ManagedRepo: filepath.Join(dir, "ManagedRepository"),
		SessionRoot: filepath.Join(dir, "sessions"),
	}
	for _, p := range []string{d.ManagedRepo, d.SessionRoot} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	d.Port = d.ln.Addr().(*net.TCPAddr).Port
	t.Cleanup(func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.ln != nil {
			_ = d.ln.Close()
		}
	})
	st := DefaultState()
	st.Server.Port = d.Port
	if err := world.Save(d.StatePath, st); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.killHung() })
	return d
}

// listen opens the server's port and accepts (and closes) connections until it is closed.
func (d *Double) listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.ln = ln
	d.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	return nil
}

// Down stops the simulated server: its port refuses connections, so every call of the double
// fails as against a server that is down (a password login with exit 42, a session key with 11).
func (d *Double) Down(t testing.TB) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ln != nil {
		if err := d.ln.Close(); err != nil {
			t.Fatal(err)
		}
		d.ln = nil
	}
}

// Up starts the simulated server again on the same port.
func (d *Double) Up(t testing.TB) {
	t.Helper()
	d.mu.Lock()
	up := d.ln != nil
	d.mu.Unlock()
	if !up {
		if err := d.listen("127.0.0.1:" + strconv.Itoa(d.Port)); err != nil {
			t.Fatal(err)
		}
	}
}

// Env is what a process running the double needs in its environment.
func (d *Double) Env() []string {
	return []string{"OMERO_DOUBLE_STATE=" + d.StatePath, "OMERO_DOUBLE_MANAGED_REPO=" + d.ManagedRepo}
}

// State reads the current state.
func (d *Double) State(t testing.TB) State {
	t.Helper()
	st, err := world.Read(d.StatePath)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Update changes the state under its lock, e.g. to add users or containers.
func (d *Double) Update(t testing.TB, fn func(*State)) {
	t.Helper()
	if err := world.Update(d.StatePath, func(s *State) error { fn(s); return nil }); err != nil {
		t.Fatal(err)
	}
}

// SetFailure replaces the failure switches.
func (d *Double) SetFailure(t testing.TB, f Failure) {
	t.Helper()
	d.Update(t, func(s *State) { s.Failure = f })
}

// killHung ends processes a hanging import left behind when the test did not kill them.
func (d *Double) killHung() {
	st, err := world.Load(d.StatePath)
	if err != nil {
		return
	}
	for _, pid := range st.HangPIDs {
		// Only a process still running the double's binary: the pid may have been reused.
		if exe, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "exe")); err != nil || exe != d.Bin {
			continue
		}
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Kill()
		}
	}
}
