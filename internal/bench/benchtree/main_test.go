package main

import (
	"path/filepath"
	"testing"
)

// TestHarnessRuns runs the in-process parts of make bench's harness on a tiny tree, so that a
// change which breaks them (a settings struct the watcher now refuses, say) fails make test
// instead of the next make bench.
func TestHarnessRuns(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tree")
	tree := []string{"-dir", dir, "-files", "200", "-folders", "20"}
	if err := runBuild(tree); err != nil {
		t.Fatalf("build: %v", err)
	}
	if err := runRescan(append(tree, "-runs", "1")); err != nil {
		t.Fatalf("rescan: %v", err)
	}
	if err := runIntegrity(append(tree, "-runs", "1", "-cpu-links", "50")); err != nil {
		t.Fatalf("integrity: %v", err)
	}
	if err := runSlowSink([]string{"-delay", "10ms", "-settle", "100ms", "-drops", "2", "-every", "50ms", "-order-slack", "10s", "-event-target", "10s"}); err != nil {
		t.Fatalf("slowsink: %v", err)
	}
}
