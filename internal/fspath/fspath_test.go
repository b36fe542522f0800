package fspath

import "testing"

func TestWithinAndBelow(t *testing.T) {
	cases := []struct {
		root, path    string
		within, below bool
	}{
		{"/data", "/data", true, false},
		{"/data", "/data/a.tif", true, true},
		{"/data", "/data/x/y", true, true},
		{"/data", "/database", false, false},
		{"/data", "/", false, false},
		{"/data", "/etc/passwd", false, false},
		{"/", "/", true, false},
		{"/", "/etc", true, true},
		{"/data/", "/data/a", false, false}, // not clean: callers clean first
	}
	for _, c := range cases {
		if got := Within(c.root, c.path); got != c.within {
			t.Errorf("Within(%q, %q) = %v, want %v", c.root, c.path, got, c.within)
		}
		if got := Below(c.root, c.path); got != c.below {
			t.Errorf("Below(%q, %q) = %v, want %v", c.root, c.path, got, c.below)
		}
	}
}
