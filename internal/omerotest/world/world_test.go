package world

import (
	"errors"
	"path/filepath"
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
