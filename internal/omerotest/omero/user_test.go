package main

import "testing"

// TestPyJSON holds what Python 3's json.dumps printed for each input.
func TestPyJSON(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"plain", "alice", `"alice"`},
		{"quote and backslash", `a"b\c`, `"a\"b\\c"`},
		{"html stays", "<script>&", `"<script>&"`},
		{"control characters", "line\nbreak\t\x01\x7f", `"line\nbreak\t\u0001\u007f"`},
		{"beyond ASCII", "Zoë", `"Zo\u00eb"`},
		{"beyond the BMP", "🙂", `"\ud83d\ude42"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := pyJSON(c.in); got != c.want {
				t.Errorf("pyJSON(%q) = %s, want %s", c.in, got, c.want)
			}
		})
	}
}
