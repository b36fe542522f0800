package watcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"

	"github.com/omero-adi/omero-adi/internal/testenv"
	"github.com/omero-adi/omero-adi/rules"
)

func TestNewValidates(t *testing.T) {
	set := compile(t, "/data", userRule("/data", time.Second))
	sink := newRecorder().sink()
	tests := []struct {
		name string
		cfg  Config
		set  *rules.Set
		sink Sink
		want string
	}{
		{"defaults", Config{}, set, sink, ""},
		{"poll", Config{Mode: "poll", PollInterval: time.Second}, set, sink, ""},
		{"bad mode", Config{Mode: "inotify"}, set, sink, `watch.mode: must be auto, events or poll, got "inotify"`},
		{"negative rescan", Config{RescanInterval: -time.Second}, set, sink, `watch.rescan_interval: must be a positive duration such as "1h", got "-1s"`},
		{"negative poll", Config{PollInterval: -1}, set, sink, `watch.poll_interval: must be a positive duration such as "30s", got "-1ns"`},
		{"no rules", Config{}, nil, sink, "no rule set"},
		{"no sink", Config{}, set, nil, "no sink"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := New(testConfig(tt.cfg), tt.set, tt.sink, testLog(t))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if w.cfg.RescanInterval <= 0 || w.cfg.PollInterval <= 0 || w.cfg.Mode == "" {
					t.Fatalf("defaults not applied: %+v", w.cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrConfig) {
				t.Fatalf("New error = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestFileCopiedSettlesOnce(t *testing.T) {
	data := t.TempDir()
	mkdir(t, data+"/demo/alice/dropbox")
	rec := newRecorder()
	w := must(New(testConfig(Config{}), compile(t, data, userRule(data, 300*time.Millisecond)), rec.sink(), testLog(t)))
	start(t, w)
	if h := rootHealth(t, w, data+"/demo"); h.Mode != ModeEvents || h.Watches < 3 {
		t.Fatalf("root health %+v, want events mode with watches", h)
	}

	// copy: a new folder, then the file (created before the watch on its folder may exist)
	path := data + "/demo/alice/dropbox/run1/img.tif"
	writeFile(t, path, 200<<10)
	u := rec.next(t, 5*time.Second)
	if u.Path != path || u.Match.Vars["user"] != "alice" || u.Rule.Name != "demo" {
		t.Fatalf("unit %s user %q rule %s, want %s by alice", u.Path, u.Match.Vars["user"], u.Rule.Name, path)
	}
	if len(u.Files) != 1 || u.Files[0] != path {
		t.Fatalf("files %v", u.Files)
	}
	parts := strings.Split(u.Fingerprint, ":")
	if len(parts) != 3 || parts[0] != strconv.Itoa(200<<10) || len(parts[2]) != 32 {
		t.Fatalf("fingerprint %q, want size:mtime:hash", u.Fingerprint)
	}
	d, err := u.Rule.Draft(u.Match, u.Files)
	if err != nil || d.User != "alice" || d.Group != "Demo" {
		t.Fatalf("draft %+v, %v", d, err)
	}
	rec.none(t, time.Second)

	// content changed after import: a new unit with another fingerprint
	writeFile(t, path, 100<<10)
	u2 := rec.next(t, 5*time.Second)
	if u2.Path != path || u2.Fingerprint == u.Fingerprint {
		t.Fatalf("changed file: unit %s fingerprint %s (old %s)", u2.Path, u2.Fingerprint, u.Fingerprint)
	}

	// renamed within the folder: same fingerprint, new path (the Sink recognises the rename)
	moved := data + "/demo/alice/dropbox/img-renamed.tif"
	if err := os.Rename(path, moved); err != nil {
		t.Fatal(err)
	}
	u3 := rec.next(t, 5*time.Second)
	if u3.Path != moved || u3.Fingerprint != u2.Fingerprint {
		t.Fatalf("renamed file: unit %s fingerprint %s, want %s with %s", u3.Path, u3.Fingerprint, moved, u2.Fingerprint)
	}
	rec.none(t, 700*time.Millisecond)
}

func TestRenamedFolderStaysWatched(t *testing.T) {
	data := t.TempDir()
	box := data + "/demo/alice/dropbox"
	writeFile(t, box+"/old/sub/a.tif", 100)
	rec := newRecorder()
	w := must(New(testConfig(Config{RescanInterval: time.Hour}), compile(t, data, userRule(data, 200*time.Millisecond)), rec.sink(), testLog(t)))
	start(t, w)
	rec.next(t, 5*time.Second)
	if err := os.Rename(box+"/old", box+"/new"); err != nil {
		t.Fatal(err)
	}
	u := rec.next(t, 5*time.Second) // the moved file: same content, new path
	if u.Path != box+"/new/sub/a.tif" {
		t.Fatalf("unit %s after the rename", u.Path)
	}
	writeFile(t, box+"/new/sub/b.tif", 100) // only events can find this within the test
	u = rec.next(t, 5*time.Second)
	if u.Path != box+"/new/sub/b.tif" {
		t.Fatalf("unit %s, want the file written into the renamed folder", u.Path)
	}
	rec.none(t, 500*time.Millisecond)
}

func TestRootRemovedAndRecreated(t *testing.T) {
	data := t.TempDir()
	rule := userRule(data, 200*time.Millisecond)
	rule.Path = data + "/in/{user}"
	mkdir(t, data+"/in/alice")
	rec := newRecorder()
	w := must(New(testConfig(Config{RescanInterval: time.Hour, PollInterval: 200 * time.Millisecond}), compile(t, data, rule), rec.sink(), testLog(t)))
	start(t, w)
	if err := os.RemoveAll(data + "/in"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the missing root to be noticed", func() bool { return rootHealth(t, w, data+"/in").Errors > 0 })
	writeFile(t, data+"/in/alice/a.tif", 100)
	if u := rec.next(t, 5*time.Second); u.Path != data+"/in/alice/a.tif" {
		t.Fatalf("unit %s", u.Path)
	}
	if h := rootHealth(t, w, data+"/in"); h.Mode != ModeEvents || h.Watches != 2 {
		t.Fatalf("root health %+v, want events with 2 watches again", h)
	}
}

func TestSlowWriterSettlesOnlyAfterItStops(t *testing.T) {
	data := t.TempDir()
	mkdir(t, data+"/demo/bob/dropbox")
	rec := newRecorder()
	w := must(New(testConfig(Config{}), compile(t, data, userRule(data, time.Second)), rec.sink(), testLog(t)))
	start(t, w)

	path := data + "/demo/bob/dropbox/slow.tif"
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	tick := time.NewTicker(100 * time.Millisecond)
	end := time.After(3 * time.Second)
writing:
	for {
		select {
		case <-tick.C:
			if _, err := f.Write(chunk); err != nil {
				t.Fatal(err)
			}
		case <-end:
			break writing
		case u := <-rec.ch:
			t.Fatalf("unit %s settled while it was still being written", u.Path)
		}
	}
	tick.Stop()
	f.Close()
	stopped := time.Now()
	u := rec.next(t, 5*time.Second)
	if u.Path != path {
		t.Fatalf("unit %s, want %s", u.Path, path)
	}
	if waited := time.Since(stopped); waited < 900*time.Millisecond {
		t.Fatalf("settled %v after the writer stopped, want at least the settle time", waited)
	}
	if !strings.HasPrefix(u.Fingerprint, strconv.Itoa(30*4096)+":") && !strings.HasPrefix(u.Fingerprint, strconv.Itoa(29*4096)+":") {
		t.Fatalf("fingerprint %s does not describe the whole file", u.Fingerprint)
	}
	rec.none(t, 500*time.Millisecond)
}

func folderRule(dataRoot string, settle time.Duration, marker string) rules.Rule {
	return rules.Rule{
		Name: "plates", Group: "Demo", Path: dataRoot + "/plates", User: "robot", Unit: rules.UnitFolder,
		Settle: settle, Marker: marker, Destination: "Screen:name:{dir}",
	}
}

func TestFolderUnit(t *testing.T) {
	data := t.TempDir()
	mkdir(t, data+"/plates")
	mkdir(t, data+"/marked")
	marked := folderRule(data, time.Hour, "transfer.done")
	marked.Name, marked.Path = "marked", data+"/marked"
	rec := newRecorder()
	w := must(New(testConfig(Config{}), compile(t, data, folderRule(data, 500*time.Millisecond, ""), marked), rec.sink(), testLog(t)))
	start(t, w)

	unit := data + "/plates/plate1"
	want := []string{unit + "/A/1/f1.tif", unit + "/A/1/f2.tif", unit + "/B/2/deep/f3.tif", unit + "/meta.xml"}
	for _, f := range want {
		writeFile(t, f, 1000)
	}
	writeFile(t, unit+"/A/.hidden", 10)
	writeFile(t, unit+"/A/empty.tif", 0)
	u := rec.next(t, 5*time.Second)
	if u.Path != unit || strings.Join(u.Files, ",") != strings.Join(want, ",") {
		t.Fatalf("unit %s files %v, want %s with %v", u.Path, u.Files, unit, want)
	}
	if !strings.HasPrefix(u.Fingerprint, "4:4000:") {
		t.Fatalf("fingerprint %s, want 4 files of 4000 bytes", u.Fingerprint)
	}
	if d, err := u.Rule.Draft(u.Match, u.Files); err != nil || d.Target.IDColumn() != "name:plate1" {
		t.Fatalf("draft %+v %v", d, err)
	}
	rec.none(t, time.Second) // the unit's own subfolders carry no watches and produce nothing more
	// the rule folder and the unit's top level (for its marker); none of the unit's subfolders
	if h := rootHealth(t, w, data+"/plates"); h.Watches != 2 {
		t.Fatalf("%d watches on %s, want 2: a folder unit's subfolders must not be watched", h.Watches, h.Path)
	}

	// settle = 1h: only the marker completes the unit, at once
	munit := data + "/marked/run7"
	writeFile(t, munit+"/x/a.tif", 10)
	writeFile(t, munit+"/b.tif", 10)
	rec.none(t, 700*time.Millisecond)
	writeFile(t, munit+"/transfer.done", 0)
	u = rec.next(t, 2*time.Second)
	if u.Path != munit || len(u.Files) != 2 || u.Files[0] != munit+"/b.tif" || u.Files[1] != munit+"/x/a.tif" {
		t.Fatalf("marked unit %s files %v", u.Path, u.Files)
	}
}

func TestIgnored(t *testing.T) {
	data := t.TempDir()
	for _, u := range []string{"alice", "mallory"} {
		mkdir(t, data+"/demo/"+u+"/dropbox")
	}
	rec := newRecorder()
	log, hook := testLogHook(t)
	w := must(New(testConfig(Config{}), compile(t, data, userRule(data, 200*time.Millisecond)), rec.sink(), log))
	start(t, w)

	box := data + "/demo/alice/dropbox"
	for _, p := range []string{
		box + "/.hidden.tif", box + "/a.tif.part", box + "/b.tmp", box + "/~$c.tif", box + "/.d.tif.Ab12Cd",
		box + "/.processed/e.tif", box + "/sub/.processed/x/f.tif", box + "/notes.txt",
		data + "/demo/mallory/dropbox/g.tif", data + "/demo/alice/h.tif", data + "/demo/i.tif",
	} {
		writeFile(t, p, 100)
	}
	writeFile(t, box+"/empty.tif", 0)
	if err := os.Symlink(data+"/demo/mallory/dropbox/g.tif", box+"/link.tif"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, box+"/ok.tif", 100) // the one that counts
	u := rec.next(t, 5*time.Second)
	if u.Path != box+"/ok.tif" {
		t.Fatalf("unit %s, want only ok.tif", u.Path)
	}
	rec.none(t, time.Second)

	// a full scan sees the same: one unit known, the rest ignored
	st, err := w.Scan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Seen != 1 || st.AlreadyOrdered != 1 || st.Settled != 0 || st.Pending != 0 || st.Ignored < 10 {
		t.Fatalf("scan stats %+v", st)
	}
	if _, err := w.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	denied := warnings(hook, "folder names no allowed user or group; ignored")
	if len(denied) != 1 || denied[0].Data["path"] != data+"/demo/mallory" {
		t.Fatalf("%d warnings about mallory's folder after three looks, want exactly one naming it", len(denied))
	}
}

func TestRestartCreatesNoSecondUnit(t *testing.T) {
	data := t.TempDir()
	writeFile(t, data+"/demo/alice/dropbox/a.tif", 5000)
	writeFile(t, data+"/plates/p1/x.tif", 5000)
	set := compile(t, data, userRule(data, 200*time.Millisecond), folderRule(data, 200*time.Millisecond, ""))
	rec := newRecorder()

	ctx, cancel := context.WithCancel(context.Background())
	w1 := must(New(testConfig(Config{}), set, rec.sink(), testLog(t)))
	done := make(chan error, 1)
	go func() { done <- w1.Run(ctx) }()
	rec.collect(t, 2, 5*time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	rec.mu.Lock()
	before := rec.knownCalls
	rec.mu.Unlock()
	w2 := must(New(testConfig(Config{}), set, rec.sink(), testLog(t)))
	start(t, w2)
	waitFor(t, 5*time.Second, "the restarted watcher to ask Known for both units", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.knownCalls >= before+2 && w2.Health().Pending == 0
	})
	rec.none(t, 500*time.Millisecond)
	if n := rec.count(); n != 2 {
		t.Fatalf("%d units after restart, want 2", n)
	}
}

func TestBurstOfTenThousandFiles(t *testing.T) {
	data := t.TempDir()
	mkdir(t, data+"/demo/alice/dropbox")
	rec := newRecorder()
	w := must(New(testConfig(Config{}), compile(t, data, userRule(data, 500*time.Millisecond)), rec.sink(), testLog(t)))
	start(t, w)
	const folders, perFolder = 100, 100
	for d := 0; d < folders; d++ {
		dir := fmt.Sprintf("%s/demo/alice/dropbox/f%03d", data, d)
		mkdir(t, dir)
		for i := 0; i < perFolder; i++ {
			if err := os.WriteFile(fmt.Sprintf("%s/img%03d.tif", dir, i), []byte("0123456789"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	got := rec.collect(t, folders*perFolder, 60*time.Second)
	if len(got) != folders*perFolder {
		t.Fatalf("%d units", len(got))
	}
	rec.none(t, time.Second)
}

// TestWatchLimitFallsBackToPolling injects ENOSPC from inotify_add_watch after a few watches (the
// real fs.inotify.max_user_watches is shared with everything else running on the machine).
func TestWatchLimitFallsBackToPolling(t *testing.T) {
	data := t.TempDir()
	for i := 0; i < 5; i++ {
		writeFile(t, fmt.Sprintf("%s/demo/alice/dropbox/d%d/pre.tif", data, i), 100)
	}
	rec := newRecorder()
	log, hook := testLogHook(t)
	w := must(New(testConfig(Config{PollInterval: 200 * time.Millisecond}), compile(t, data, userRule(data, 200*time.Millisecond)), rec.sink(), log))
	var adds atomic.Int32
	addWatch = func(fsw *fsnotify.Watcher, p string) error {
		if adds.Add(1) > 4 {
			return fmt.Errorf("inotify_add_watch %s: %w", p, unix.ENOSPC)
		}
		return fsw.Add(p)
	}
	t.Cleanup(func() { addWatch = (*fsnotify.Watcher).Add })
	start(t, w)
	rec.collect(t, 5, 5*time.Second)
	h := rootHealth(t, w, data+"/demo")
	if h.Mode != ModePoll || !h.WatchLimit || !strings.Contains(h.Reason, WatchLimitHint) || h.Watches != 0 {
		t.Fatalf("root health %+v, want poll mode with the watch limit flagged", h)
	}
	for i := 0; i < 5; i++ {
		writeFile(t, fmt.Sprintf("%s/demo/alice/dropbox/d%d/new/post.tif", data, i), 100)
	}
	rec.collect(t, 5, 5*time.Second)
	rec.none(t, 500*time.Millisecond)
	warns := warnings(hook, "out of inotify watches, root switched to polling")
	if len(warns) != 1 || warns[0].Data["hint"] != WatchLimitHint {
		t.Fatalf("%d watch-limit warnings, want one with the sysctl hint", len(warns))
	}
}

func TestOverflowRescans(t *testing.T) {
	testenv.Root(t, "sets fs.inotify.max_queued_events")
	const knob = "/proc/sys/fs/inotify/max_queued_events"
	old, err := os.ReadFile(knob)
	if err != nil {
		testenv.Missing(t, knob, "a Linux kernel with inotify")
	}
	restore := func() {
		if err := os.WriteFile(knob, old, 0o644); err != nil {
			t.Errorf("restore %s: %v", knob, err)
		}
	}
	data := t.TempDir()
	for i := 0; i < 20; i++ { // watched before the burst: every file written makes events
		mkdir(t, fmt.Sprintf("%s/demo/alice/dropbox/d%02d", data, i))
	}
	rec := newRecorder()
	w := must(New(testConfig(Config{EventBuffer: 1}), compile(t, data, userRule(data, 300*time.Millisecond)), rec.sink(), testLog(t)))
	// The queue size is fixed when the inotify instance is created: set it just before, restore
	// right after, so other programs are affected for as short a time as possible.
	if err := os.WriteFile(knob, []byte("16\n"), 0o644); err != nil {
		t.Fatalf("set %s: %v", knob, err)
	}
	var once atomic.Bool
	t.Cleanup(func() {
		if once.CompareAndSwap(false, true) {
			restore()
		}
	})
	start(t, w) // the inotify instance exists once the first scan is done
	if once.CompareAndSwap(false, true) {
		restore()
	}
	const n = 2000
	// Hold the watcher's lock during the burst: its loop cannot read events meanwhile, so the
	// 16-event kernel queue overflows for sure (a fast loop might otherwise keep up).
	w.mu.Lock()
	for i := 0; i < n; i++ {
		writeFile(t, fmt.Sprintf("%s/demo/alice/dropbox/d%02d/f%04d.tif", data, i%20, i), 10)
	}
	w.mu.Unlock()
	rec.collect(t, n, 30*time.Second)
	if h := w.Health(); h.Overflows == 0 {
		t.Fatalf("no overflow happened (health %+v): the test did not test anything", h)
	}
	rec.none(t, 500*time.Millisecond)
}

func TestBindfsMountIsPolled(t *testing.T) {
	testenv.Root(t, "mounts a FUSE filesystem")
	bindfs := testenv.LookPath(t, "bindfs", "apt-get install bindfs fuse3")
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.Missing(t, "/dev/fuse", "apt-get install fuse3 (and a kernel with FUSE)")
	}
	src, data := t.TempDir(), t.TempDir()
	mnt := data + "/share"
	mkdir(t, mnt)
	mkdir(t, src+"/demo/alice/dropbox")
	if out, err := exec.Command(bindfs, src, mnt).CombinedOutput(); err != nil {
		t.Fatalf("bindfs %s %s: %v: %s", src, mnt, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})

	rec := newRecorder()
	w := must(New(testConfig(Config{PollInterval: 300 * time.Millisecond}), compile(t, data, userRule(mnt, 300*time.Millisecond)), rec.sink(), testLog(t)))
	start(t, w)
	h := rootHealth(t, w, mnt+"/demo")
	if h.Mode != ModePoll || !strings.Contains(h.Reason, "fuse") || h.Watches != 0 {
		t.Fatalf("root health %+v, want poll mode for the FUSE mount", h)
	}
	writeFile(t, src+"/demo/alice/dropbox/a.tif", 3000) // written behind the mount's back
	writeFile(t, src+"/demo/alice/dropbox/sub/b.tif", 3000)
	got := rec.collect(t, 2, 10*time.Second)
	for _, p := range []string{mnt + "/demo/alice/dropbox/a.tif", mnt + "/demo/alice/dropbox/sub/b.tif"} {
		if _, ok := got[p]; !ok {
			t.Fatalf("units %v, missing %s", keys(got), p)
		}
	}
	rec.none(t, time.Second)
}

func TestScanWithoutRun(t *testing.T) {
	data := t.TempDir()
	writeFile(t, data+"/demo/alice/dropbox/a.tif", 100)
	writeFile(t, data+"/demo/bob/dropbox/x/b.tif", 100)
	writeFile(t, data+"/demo/bob/dropbox/x/b.txt", 100)
	writeFile(t, data+"/plates/p1/c.tif", 100)
	set := compile(t, data, userRule(data, 300*time.Millisecond), folderRule(data, 300*time.Millisecond, ""))
	rec := newRecorder()
	w := must(New(testConfig(Config{}), set, rec.sink(), testLog(t)))
	ctx := context.Background()

	st := must(w.Scan(ctx))
	if st.Seen != 3 || st.Pending != 3 || st.Settled != 0 || st.Ignored != 1 || st.Duration <= 0 {
		t.Fatalf("first scan %+v, want 3 seen and pending, 1 ignored", st)
	}
	<-time.After(350 * time.Millisecond) // two observations must lie the settle time apart
	st = must(w.Scan(ctx))
	if st.Settled != 3 || st.Pending != 0 {
		t.Fatalf("second scan %+v, want 3 settled", st)
	}
	if rec.mu.Lock(); rec.knownCalls != 3 {
		t.Fatalf("Known asked %d times for 3 new units over two scans, want once each", rec.knownCalls)
	}
	rec.mu.Unlock()
	st = must(w.Scan(ctx))
	if st.Seen != 3 || st.AlreadyOrdered != 3 || st.Settled != 0 {
		t.Fatalf("third scan %+v, want 3 already ordered", st)
	}
	if h := w.Health(); h.Running || len(h.Roots) != 2 || h.Roots[0].Watches != 0 {
		t.Fatalf("health after scans %+v", h)
	}

	// a fresh watcher (`omero-adi scan`) tells what is already ordered in one scan, asking once
	rec.mu.Lock()
	calls := rec.knownCalls
	rec.mu.Unlock()
	st = must(must(New(testConfig(Config{}), set, rec.sink(), testLog(t))).Scan(ctx))
	if st.Seen != 3 || st.AlreadyOrdered != 3 || st.Pending != 0 || st.Settled != 0 {
		t.Fatalf("one-shot scan %+v, want 3 already ordered", st)
	}
	rec.mu.Lock()
	if rec.knownCalls != calls+3 {
		t.Fatalf("Known asked %d times for 3 units", rec.knownCalls-calls)
	}
	rec.mu.Unlock()

	// TrustMtime: old files count as settled at the first look (one-shot `omero-adi scan`)
	old := time.Now().Add(-time.Hour)
	writeFile(t, data+"/demo/alice/dropbox/old.tif", 100)
	if err := os.Chtimes(data+"/demo/alice/dropbox/old.tif", old, old); err != nil {
		t.Fatal(err)
	}
	writeFile(t, data+"/demo/alice/dropbox/fresh.tif", 100)
	w2 := must(New(testConfig(Config{TrustMtime: true}), set, rec.sink(), testLog(t)))
	st = must(w2.Scan(ctx))
	if st.Settled != 1 || st.AlreadyOrdered != 3 || st.Pending != 1 || rec.count() != 4 {
		t.Fatalf("trust-mtime scan %+v, want old.tif settled, 3 known, fresh.tif pending", st)
	}
}

func TestCacheForgetsDeletedFiles(t *testing.T) {
	data := t.TempDir()
	box := data + "/demo/alice/dropbox"
	for _, f := range []string{"a.tif", "b.tif", "c.tif", "notes.txt"} {
		writeFile(t, box+"/"+f, 100)
	}
	rec := newRecorder()
	w := must(New(testConfig(Config{}), compile(t, data, userRule(data, time.Nanosecond)), rec.sink(), testLog(t)))
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		must(w.Scan(ctx))
	}
	if rec.count() != 3 || len(w.known) != 4 { // three units and one file that is none
		t.Fatalf("%d units, %d cache entries; want 3 and 4", rec.count(), len(w.known))
	}
	for _, f := range []string{"a.tif", "notes.txt"} {
		if err := os.Remove(box + "/" + f); err != nil {
			t.Fatal(err)
		}
	}
	st := must(w.Scan(ctx))
	if st.AlreadyOrdered != 2 || len(w.known) != 2 {
		t.Fatalf("after deleting two files: scan %+v, %d cache entries; want 2 known and 2 entries", st, len(w.known))
	}
}

func TestSinkErrorsAreRetried(t *testing.T) {
	data := t.TempDir()
	mkdir(t, data+"/demo/alice/dropbox")
	var fails atomic.Int32
	got := make(chan Unit, 10)
	sink := &fakeSink{
		known: func(context.Context, string, string, string) (bool, error) { return false, nil },
		settled: func(_ context.Context, u Unit) error {
			if fails.Add(1) <= 2 {
				return errors.New("database is down")
			}
			got <- u
			return nil
		},
	}
	w := must(New(testConfig(Config{}), compile(t, data, userRule(data, 100*time.Millisecond)), sink, testLog(t)))
	start(t, w)
	writeFile(t, data+"/demo/alice/dropbox/a.tif", 10)
	select {
	case u := <-got:
		if u.Path != data+"/demo/alice/dropbox/a.tif" {
			t.Fatalf("unit %s", u.Path)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("unit not handed over after the sink recovered")
	}
	if h := rootHealth(t, w, data+"/demo"); h.Errors < 2 {
		t.Fatalf("health %+v, want the sink errors counted", h)
	}
}

func keys(m map[string]Unit) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// A restart on a tree that is ordered already keeps no candidate per file: a file quiet for its
// settle (by mtime) is fingerprinted and looked up at once. The mtime never settles anything: an
// old file that is not known still waits for its settle, and is neither hashed nor asked about
// twice.
func TestStartOnOrderedTreeKeepsNoCandidates(t *testing.T) {
	data := t.TempDir()
	box := data + "/demo/alice/dropbox"
	old := time.Now().Add(-time.Hour)
	oldFile := func(path string) {
		writeFile(t, path, 3000)
		if err := os.Chtimes(path, old, old); err != nil {
			t.Fatal(err)
		}
	}
	oldFile(box + "/a.tif")
	oldFile(box + "/b.tif")
	oldFile(data + "/plates/p1/x.tif") // a folder unit
	const settle = 1500 * time.Millisecond
	set := compile(t, data, userRule(data, settle), folderRule(data, settle, ""))
	rec := newRecorder()
	w1 := must(New(testConfig(Config{Mode: ModePoll, TrustMtime: true}), set, rec.sink(), testLog(t)))
	if st, err := w1.Scan(context.Background()); err != nil || st.Settled != 3 {
		t.Fatalf("first scan %+v, %v; want 3 settled", st, err)
	}
	rec.collect(t, 3, time.Second)
	oldFile(box + "/c.tif")            // old but never ordered
	oldFile(data + "/plates/p2/y.tif") // the same, a folder unit
	writeFile(t, box+"/d.tif", 3000)   // fresh
	rec.mu.Lock()
	before := rec.knownCalls
	rec.mu.Unlock()

	w2 := must(New(testConfig(Config{}), set, rec.sink(), testLog(t)))
	started := time.Now()
	start(t, w2)
	rec.mu.Lock()
	asked := rec.knownCalls - before
	rec.mu.Unlock()
	if h := w2.Health(); h.Pending != 3 || asked != 5 {
		t.Fatalf("after the start scan: %d pending, Known asked %d times; want 3 (c, d, p2) and 5 (a, b, c, p1, p2)", h.Pending, asked)
	}
	got := rec.collect(t, 3, 10*time.Second)
	for _, p := range []string{box + "/c.tif", box + "/d.tif", data + "/plates/p2"} {
		if _, ok := got[p]; !ok {
			t.Fatalf("units %v, want c.tif, d.tif and p2", got)
		}
	}
	rec.mu.Lock()
	for i, u := range rec.units[3:] {
		if d := rec.at[3+i].Sub(started); d < settle {
			t.Errorf("%s settled %v after the start, before its settle %v", u.Path, d, settle)
		}
	}
	asked = rec.knownCalls - before
	rec.mu.Unlock()
	if asked != 6 {
		t.Fatalf("Known asked %d times, want 6 (a, b, c, p1, p2 at sight, d when settled)", asked)
	}
}
