package world

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

func TestUpdateSerializes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if err := Save(path, State{}); err != nil {
		t.Fatal(err)
	}
	const n = 40
	var wg sync.WaitGroup
	ids := make(chan int64, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := Update(path, func(s *State) error { ids <- s.NewID(); return nil }); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	close(ids)
	seen := map[int64]bool{}
	for id := range ids {
		if seen[id] {
			t.Errorf("id %d handed out twice", id)
		}
		seen[id] = true
	}
	st, err := Read(path)
	if err != nil || st.NextID != FirstID+n {
		t.Errorf("next id %d (%v), want %d", st.NextID, err, FirstID+n)
	}
}

func TestUpdateErrorSavesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if err := Save(path, State{}); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := Update(path, func(s *State) error { s.NewID(); return boom }); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if st, _ := Read(path); st.NextID != 0 {
		t.Errorf("failed update was saved: %+v", st)
	}
	if _, err := Read(filepath.Join(t.TempDir(), "missing.json")); !errors.Is(err, ErrNoState) {
		t.Errorf("missing state: %v", err)
	}
}

// Calls and imports go to the journal, come back from Read in order, and an Update that changes
// nothing else leaves the state file alone.
func TestJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if err := Save(path, State{Users: []User{{ID: 1, Name: "u"}}}); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := Update(path, func(s *State) error {
			if len(s.Calls) != 0 || len(s.Imports) != 0 {
				t.Errorf("update %d sees %d calls and %d imports, want none", i, len(s.Calls), len(s.Imports))
			}
			s.Calls = append(s.Calls, Call{Argv: []string{"call", strconv.Itoa(i)}})
			if i == 1 {
				s.Imports = append(s.Imports, Import{Paths: []string{"/p"}})
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Error("an update that only appended calls rewrote the state file")
	}
	// A writer killed mid-append leaves a torn last line: readers ignore it.
	f, err := os.OpenFile(path+".journal", os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString(`{"call":{"argv":["to`)
	_ = f.Close()
	st, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	var argv []string
	for _, c := range st.Calls {
		argv = append(argv, c.Argv[1])
	}
	if strings.Join(argv, ",") != "0,1,2" || len(st.Imports) != 1 || st.Imports[0].Paths[0] != "/p" {
		t.Errorf("read calls %q and imports %+v, want calls 0,1,2 and one import of /p", argv, st.Imports)
	}
	if err := Update(path, func(s *State) error { s.NewID(); return nil }); err != nil {
		t.Fatal(err)
	}
	if changed, _ := os.Stat(path); os.SameFile(before, changed) {
		t.Error("an update that changed the state did not rewrite it")
	}
	// Save replaces the journal with the records it is given.
	st.Calls = st.Calls[:1]
	if err := Save(path, st); err != nil {
		t.Fatal(err)
	}
	if st, err := Read(path); err != nil || len(st.Calls) != 1 || len(st.Imports) != 1 {
		t.Errorf("after Save: %d calls, %d imports (%v), want 1 and 1", len(st.Calls), len(st.Imports), err)
	}
}

func TestRetainKeepsNewest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if err := Save(path, State{Retain: 2}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if err := Update(path, func(s *State) error {
			s.Images = append(s.Images, Image{ID: s.NewID()})
			s.Links = append(s.Links, Link{ID: s.NewID()})
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	st, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Images) != 2 || st.Images[0].ID != FirstID+6 || st.Images[1].ID != FirstID+8 || len(st.Links) != 2 {
		t.Errorf("kept images %+v and %d links, want the newest two of each", st.Images, len(st.Links))
	}
}

// Append needs no lock and many processes' appends never interleave within a line.
func TestAppendConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if err := Save(path, State{}); err != nil {
		t.Fatal(err)
	}
	const n = 50
	long := strings.Repeat("x", 8000)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := Append(path, []Call{{Argv: []string{long, strconv.Itoa(i)}}}, nil); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	st, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Calls) != n {
		t.Errorf("read %d calls, want %d", len(st.Calls), n)
	}
	if err := Append("", nil, nil); !errors.Is(err, ErrNoState) {
		t.Errorf("Append without a path: %v", err)
	}
}
