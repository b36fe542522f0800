package preprocess

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("no space left on device") }

// The order's log keeps the first maxLog bytes and says so; a log that cannot be written never
// stops the container's output from being read.
func TestCappedLog(t *testing.T) {
	var b bytes.Buffer
	c := &cappedLog{w: &b, left: 10}
	for _, s := range []string{"12345", "67890abc", "more"} {
		if n, err := c.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if !strings.HasPrefix(b.String(), "1234567890\n# more output dropped") || strings.Contains(b.String(), "abc") {
		t.Errorf("log %q", b.String())
	}
	f := &cappedLog{w: failingWriter{}, left: maxLog}
	if n, err := f.Write([]byte("x")); n != 1 || err != nil {
		t.Errorf("Write on a full disk = %d, %v; want 1, nil", n, err)
	}
}
