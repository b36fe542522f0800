package child

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestEnv(t *testing.T) {
	environ := []string{"PATH=/bin", "HOME=/root", "OMERO_PASSWORD=secret", "LANG=C"}
	got := strings.Join(Env(environ, Names("PATH", "LANG"), []string{"X=1"}), " ")
	if got != "PATH=/bin LANG=C X=1" {
		t.Errorf("Env = %q", got)
	}
	got = strings.Join(Env(environ, Names("HOME"), nil), " ")
	if got != "HOME=/root PATH="+DefaultPath {
		t.Errorf("Env without PATH = %q", got)
	}
}

func TestTail(t *testing.T) {
	tail := &Tail{Max: 5}
	for _, s := range []string{"abc", "defg", "h"} {
		if n, err := tail.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if tail.String() != "defgh" {
		t.Errorf("Tail = %q, want the last 5 bytes", tail.String())
	}
}

func TestQuote(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		want string
	}{
		{[]string{"omero", "import", "-d", "151", "/data/a.tif"}, "omero import -d 151 /data/a.tif"},
		{[]string{"a b", "", "it's", "$(x)"}, `'a b' '' 'it'\''s' '$(x)'`},
	} {
		if got := Quote(tc.argv); got != tc.want {
			t.Errorf("Quote(%q) = %s, want %s", tc.argv, got, tc.want)
		}
	}
}

// A command runs in a process group of its own: when ctx ends, BeforeStop runs and the signal
// reaches the program's children too.
func TestCommandStopsTheGroup(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	cmd, err := Command(ctx, []string{"/bin/sh", "-c", "sleep 60 & wait"}, Options{
		Env: Env(nil, Names(), nil), Stop: syscall.SIGTERM, BeforeStop: func() { close(stopped) }, WaitDelay: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(200*time.Millisecond, cancel)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("Wait = %v, want the program ended by the signal", err)
		}
	case <-time.After(20 * time.Second):
		KillGroup(cmd)
		t.Fatal("the group did not stop")
	}
	select {
	case <-stopped:
	default:
		t.Error("BeforeStop did not run")
	}
}
