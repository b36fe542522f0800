package watcher

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/omero-adi/omero-adi/rules"
)

// Events and watches. Run's goroutine handles each inotify event as a hint about one path,
// taking the lock for the bookkeeping only, and nothing here calls the Sink. A new directory (a
// tree moved in may be large) is walked by the event walker goroutine: one walker, without Sink
// lookups, the lock taken per directory.

// addWatch adds an inotify watch on dir (a variable: tests make inotify run out of watches).
var addWatch = (*fsnotify.Watcher).Add

// handleEvent treats an inotify event as a hint about one path.
func (w *Watcher) handleEvent(ev fsnotify.Event) {
	path := filepath.Clean(ev.Name)
	w.mu.Lock()
	r := w.rootOf(path)
	if r == nil || r.mode != ModeEvents {
		w.mu.Unlock()
		return
	}
	if ev.Has(fsnotify.Remove) {
		w.unwatch(path) // a pending unit finds out at its next observation
	}
	if path == r.path && (ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename)) {
		w.unwatchTree(path)
		w.requestScan(r) // the scan finds it missing and retries every PollInterval until it is back
		w.mu.Unlock()
		return
	}
	if _, watched := w.watched[path]; watched && ev.Has(fsnotify.Rename) {
		// A renamed directory keeps its inotify watches, registered under the old paths: drop them
		// all; its new name arrives as a Create and is walked and watched again.
		w.unwatchTree(path)
	}
	if parent := filepath.Dir(path); w.unitDirs[parent] {
		// activity at the top level of a watched folder unit
		c := w.pending[hashString(parent)]
		if c != nil && c.path == parent && filepath.Base(path) != c.rule.Marker {
			w.touch(c)
			w.mu.Unlock()
			return
		}
		w.queueDir(r, parent) // walked (an .ome.zarr has thousands of files) by the event walker
		w.mu.Unlock()
		return
	}
	if !ev.Has(fsnotify.Create) && !ev.Has(fsnotify.Write) && !ev.Has(fsnotify.Chmod) {
		w.mu.Unlock()
		return
	}
	h := hashString(path)
	if c := w.pending[h]; c != nil && c.path == path {
		w.touch(c)
		w.mu.Unlock()
		return
	}
	w.mu.Unlock()
	var s unix.Stat_t
	if err := unix.Lstat(path, &s); err != nil {
		return
	}
	switch s.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if ev.Has(fsnotify.Create) {
			w.mu.Lock()
			w.queueDir(r, path)
			w.mu.Unlock()
		}
	case unix.S_IFREG:
		if !rules.IgnoredName(filepath.Base(path)) {
			w.fileEvent(r, h, path, s.Size, mtimeOf(&s))
		}
	}
}

// newDir is a directory an event found, for the event walker.
type newDir struct {
	r    *root
	path string
}

// queueDir hands a directory to the event walker, which classifies it (a folder unit is
// observed, a descended directory watched and walked). Caller holds mu.
func (w *Watcher) queueDir(r *root, path string) {
	w.dirq = append(w.dirq, newDir{r, path})
	select {
	case w.dirReady <- struct{}{}:
	default:
	}
}

// eventWalker watches and walks the directories that events found, one after the other, until
// ctx is done.
func (w *Watcher) eventWalker(ctx context.Context) {
	for {
		w.mu.Lock()
		var d newDir
		ok := len(w.dirq) > 0
		if ok {
			d = w.dirq[0]
			w.dirq[0] = newDir{}
			w.dirq = w.dirq[1:]
		}
		w.mu.Unlock()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-w.dirReady:
			}
			continue
		}
		w.newWalk(d.r, walkOpts{watch: true, workers: 1}).run(ctx, d.path, true)
	}
}

// fileEvent handles a regular file that an event named and that is not pending. It becomes a
// candidate without any lookup: a file moved in quiet is told from new content when it settles.
func (w *Watcher) fileEvent(r *root, h uint64, path string, size, mtime int64) {
	if size == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if c := w.pending[h]; c != nil && c.path == path {
		w.touch(c)
		return
	}
	sig := fileSig(size, mtime)
	if _, ok := w.cached(r, h, sig); ok {
		return
	}
	m, ok, why, denied := w.set.MatchDenied(path)
	if !ok || m.Rule.Unit != rules.UnitFile {
		w.remember(r, h, sig, true)
		w.fileIgnored(path, ok, why, denied)
		return
	}
	w.newFileCand(r, h, path, m.Rule, size, mtime, 0)
}

// watchError handles an error from the inotify reader: always a full rescan of event roots.
// Caller holds mu.
func (w *Watcher) watchError(err error) {
	if errors.Is(err, fsnotify.ErrEventOverflow) {
		w.overflow++
		entry := w.log.WithField("hint", "raise fs.inotify.max_queued_events")
		w.overLog.Failed(entry, "inotify event queue overflowed, rescanning") // never reset: Warn once per run
	} else {
		w.log.WithError(err).Warn("inotify error, rescanning")
	}
	for _, r := range w.roots {
		if r.mode == ModeEvents {
			w.requestScan(r)
		}
	}
}

// requestScan makes a full scan of r due now, or right after the one running. Caller holds mu.
func (w *Watcher) requestScan(r *root) {
	if r.scanning {
		r.again = true
		return
	}
	r.next = time.Now()
}

// watchDir adds an inotify watch on dir when r is event-driven. It takes mu itself, and not
// across the inotify_add_watch call: the walkers of a start scan register 20,000 watches.
func (w *Watcher) watchDir(r *root, dir string, unit bool) {
	w.mu.Lock()
	_, done := w.watched[dir]
	fsw := w.fsw
	if r.mode != ModeEvents || fsw == nil || done {
		w.mu.Unlock()
		return
	}
	w.mu.Unlock()
	err := addWatch(fsw, dir)
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.fsw != fsw || r.mode != ModeEvents:
		// Run ended, or the root ran out of watches meanwhile: this one is not kept
		if err == nil {
			_ = fsw.Remove(dir)
		}
	case err == nil:
		if _, ok := w.watched[dir]; !ok {
			w.watched[dir] = r
			r.watches++
		}
		if unit {
			w.unitDirs[dir] = true
		}
	case errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EMFILE):
		w.watchLimit(r, err)
	case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR):
		// gone meanwhile
	default:
		r.errors++
		r.lastErr = fmt.Sprintf("watch %s: %v", dir, err)
		w.warnOnce("watch:"+dir, w.log.WithError(err).WithField("path", dir), "cannot watch directory; it is covered by rescans")
		w.requestScan(r) // a full rescan after a watch failure
	}
}

// watchLimit switches r to polling after inotify ran out of watches. Caller holds mu.
func (w *Watcher) watchLimit(r *root, err error) {
	r.mode, r.limit = ModePoll, true
	r.reason = fmt.Sprintf("inotify watch limit reached (%v): polling; raise it with %s", err, WatchLimitHint)
	entry := w.log.WithError(err).WithFields(logrus.Fields{"root": r.path, "hint": WatchLimitHint})
	if !w.limitLog {
		w.limitLog = true
		entry.Warn("out of inotify watches, root switched to polling")
	} else {
		entry.Info("out of inotify watches, root switched to polling")
	}
	for dir, wr := range w.watched {
		if wr == r {
			_ = w.fsw.Remove(dir)
			delete(w.watched, dir)
			delete(w.unitDirs, dir)
		}
	}
	r.watches = 0
	w.requestScan(r) // a full rescan after a watch failure
}

// unwatch forgets a watched directory that was removed or renamed. Caller holds mu.
func (w *Watcher) unwatch(dir string) {
	r, ok := w.watched[dir]
	if !ok {
		return
	}
	if w.fsw != nil {
		_ = w.fsw.Remove(dir)
	}
	delete(w.watched, dir)
	delete(w.unitDirs, dir)
	r.watches--
}

// unwatchTree forgets a watched directory and every watched directory below it. Caller holds mu.
func (w *Watcher) unwatchTree(dir string) {
	w.unwatch(dir)
	prefix := dir + "/"
	for p := range w.watched {
		if strings.HasPrefix(p, prefix) {
			w.unwatch(p)
		}
	}
}
