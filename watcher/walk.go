package watcher

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/omero-adi/omero-adi/rules"
)

// The walk. A full scan lists (getdents) and stats (fstatat) each directory without the lock,
// with scanWorkers goroutines taking directories from a shared stack, and takes the lock only
// to hold what it found against the pending units and the cache, one directory at a time, so
// events and the walks of other roots go on meanwhile. Nothing is read: a new unit becomes a
// candidate on its size and mtime; one found quiet for its settle already (after a restart) is
// looked up with Sink.KnownSignature between two holds of the lock, so that an ordered tree
// keeps no candidate per file.

// scanWorkers is how many goroutines list and stat one root's directories during a full scan.
const scanWorkers = 4

// walkOpts says how a walk treats what it finds.
type walkOpts struct {
	watch   bool // add inotify watches (event-driven roots)
	probe   bool // look units found quiet up with the Sink (full scans)
	sync    bool // hand settled units over from the walk itself (Scan), not via the Sink workers
	workers int
}

// scanRoot runs a full scan of one root.
func (w *Watcher) scanRoot(ctx context.Context, r *root, opts walkOpts, st *ScanStats) error {
	start := time.Now()
	var s unix.Stat_t
	err := unix.Stat(r.path, &s)
	if err == nil && s.Mode&unix.S_IFMT != unix.S_IFDIR {
		err = unix.ENOTDIR
	}
	w.mu.Lock()
	if err == nil {
		err = w.decideMode(r)
	}
	if err != nil {
		r.errors++
		r.lastErr = fmt.Sprintf("scan %s: %v", r.path, err)
		entry := w.log.WithError(err).WithField("root", r.path)
		if !r.missingWarn {
			r.missingWarn = true
			entry.Warn("cannot scan root; retrying")
		} else {
			entry.Debug("cannot scan root; retrying")
		}
		w.mu.Unlock()
		return fmt.Errorf("scan root %s: %w", r.path, err)
	}
	r.missingWarn = false
	r.gen++
	gen := r.gen
	w.mu.Unlock()

	rs := w.newWalk(r, opts).run(ctx, r.path, false)

	w.mu.Lock()
	defer w.mu.Unlock()
	if ctx.Err() == nil && r.gen == gen {
		w.sweep(r)
	}
	r.lastScan = time.Now()
	r.lastDur = r.lastScan.Sub(start)
	rs.Duration = r.lastDur
	st.Seen += rs.Seen
	st.Settled += rs.Settled
	st.AlreadyOrdered += rs.AlreadyOrdered
	st.Ignored += rs.Ignored
	st.Duration += rs.Duration
	return ctx.Err()
}

// walk is one walk of a root's directories by one or more walkers.
type walk struct {
	w    *Watcher
	r    *root
	opts walkOpts

	mu     sync.Mutex
	cond   sync.Cond
	stack  []walkItem
	active int
	st     ScanStats
}

// walkItem is a directory to walk: a descended one, or (classify) one to classify first.
type walkItem struct {
	dir      string
	classify bool
}

func (w *Watcher) newWalk(r *root, opts walkOpts) *walk {
	wk := &walk{w: w, r: r, opts: opts}
	wk.cond.L = &wk.mu
	return wk
}

// run walks from dir until every directory found is done and returns what it saw.
func (wk *walk) run(ctx context.Context, dir string, classify bool) ScanStats {
	wk.stack = append(wk.stack, walkItem{dir, classify})
	if wk.opts.workers <= 1 {
		wk.work(ctx)
		return wk.st
	}
	var g sync.WaitGroup
	for range wk.opts.workers {
		g.Go(func() { wk.work(ctx) })
	}
	g.Wait()
	return wk.st
}

func (wk *walk) work(ctx context.Context) {
	wr := &walker{walk: wk, ctx: ctx, dr: dirReaders.Get().(*dirReader)}
	defer dirReaders.Put(wr.dr)
	for {
		it, ok := wk.pop(ctx)
		if !ok {
			break
		}
		if it.classify {
			wr.dirFound(it.dir)
		} else {
			wr.dir(it.dir)
		}
		wk.done()
	}
	wk.mu.Lock()
	wk.st.Seen += wr.st.Seen
	wk.st.Settled += wr.st.Settled
	wk.st.AlreadyOrdered += wr.st.AlreadyOrdered
	wk.st.Ignored += wr.st.Ignored
	wk.mu.Unlock()
}

func (wk *walk) push(it walkItem) {
	wk.mu.Lock()
	wk.stack = append(wk.stack, it)
	wk.mu.Unlock()
	wk.cond.Signal()
}

// pop takes the next directory, waiting while others may still find some.
func (wk *walk) pop(ctx context.Context) (walkItem, bool) {
	wk.mu.Lock()
	defer wk.mu.Unlock()
	for len(wk.stack) == 0 && wk.active > 0 && ctx.Err() == nil {
		wk.cond.Wait()
	}
	if len(wk.stack) == 0 || ctx.Err() != nil {
		return walkItem{}, false
	}
	it := wk.stack[len(wk.stack)-1]
	wk.stack = wk.stack[:len(wk.stack)-1]
	wk.active++
	return it, true
}

func (wk *walk) done() {
	wk.mu.Lock()
	wk.active--
	last := wk.active == 0
	wk.mu.Unlock()
	if last {
		wk.cond.Broadcast()
	}
}

var dirReaders = sync.Pool{New: func() any { return newDirReader() }}

// walker is one goroutine of a walk, with its buffers.
type walker struct {
	*walk
	ctx   context.Context
	dr    *dirReader
	names []byte  // the names of the directory being walked
	ents  []entry // its entries
	news  []newFile
	ps    []probe
	buf   []byte // fingerprint buffer (sync walks)
	st    ScanStats
}

// entry is a directory entry: a subdirectory or a non-empty regular file.
type entry struct {
	off, n      int32 // name in walker.names
	dir         bool
	size, mtime int64
	h           uint64 // hash of the path
}

// newFile is a file that is neither pending nor in the cache, with its match.
type newFile struct {
	e      *entry
	path   string
	m      rules.Match
	ok     bool
	why    string
	denied bool
}

func (wr *walker) name(e *entry) []byte { return wr.names[e.off : e.off+e.n] }

// dir watches (when asked) and lists one descended directory, observes its files, and queues its
// subdirectories.
func (wr *walker) dir(dir string) {
	w, r, ctx := wr.w, wr.r, wr.ctx
	if ctx.Err() != nil {
		return
	}
	if wr.opts.watch {
		w.watchDir(r, dir, false) // watch first, then list: nothing created in between is missed
	}
	fd, err := openDir(dir, dir != r.path)
	if err != nil {
		if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ELOOP) && !errors.Is(err, unix.ENOTDIR) {
			w.listFailed(r, dir, err)
		}
		return
	}
	wr.names, wr.ents = wr.names[:0], wr.ents[:0]
	dh := fnvAdd(fnvOffset, dir)
	if dir != "/" {
		dh = fnvAdd(dh, "/")
	}
	err = wr.dr.each(fd, func(name []byte, namePtr *byte, typ uint8) error {
		if rules.IgnoredName(bstr(name)) {
			wr.st.Ignored++
			return nil
		}
		e := entry{off: int32(len(wr.names)), n: int32(len(name))}
		switch typ {
		case unix.DT_DIR:
			e.dir = true
		case unix.DT_REG, unix.DT_UNKNOWN:
			var s unix.Stat_t
			if fstatat(fd, name, namePtr, &s) != nil {
				return nil // gone meanwhile
			}
			switch {
			case s.Mode&unix.S_IFMT == unix.S_IFDIR:
				e.dir = true
			case s.Mode&unix.S_IFMT != unix.S_IFREG || s.Size == 0:
				wr.st.Ignored++
				return nil
			default:
				e.size, e.mtime, e.h = s.Size, mtimeOf(&s), fnvAddBytes(dh, name)
			}
		default:
			wr.st.Ignored++ // symlinks, sockets, devices
			return nil
		}
		wr.names = append(wr.names, name...)
		wr.ents = append(wr.ents, e)
		return nil
	})
	unix.Close(fd)
	if err != nil {
		w.listFailed(r, dir, err)
	}

	// Pending and known files, under the lock; what is left is new.
	wr.news = wr.news[:0]
	w.mu.Lock()
	for i := range wr.ents {
		e := &wr.ents[i]
		if e.dir {
			continue
		}
		if c := w.pending[e.h]; c != nil && samePath(c.path, dir, wr.name(e)) {
			wr.st.Seen++
			w.observedFile(c, e.size, e.mtime)
			continue
		}
		if ignored, ok := w.cached(r, e.h, fileSig(e.size, e.mtime)); ok {
			if ignored {
				wr.st.Ignored++
			} else {
				wr.st.Seen++
				wr.st.AlreadyOrdered++
			}
			continue
		}
		wr.news = append(wr.news, newFile{e: e})
	}
	w.mu.Unlock()
	if len(wr.news) > 0 {
		wr.newFiles(dir)
	}
	wr.handOver()
	for i := range wr.ents {
		if e := &wr.ents[i]; e.dir {
			wr.dirFound(joinPath(dir, string(wr.name(e))))
		}
	}
}

// newFiles matches the new files of dir against the rules (without the lock), makes candidates
// of the units, and looks those found quiet up with the Sink when the walk probes.
func (wr *walker) newFiles(dir string) {
	w, r := wr.w, wr.r
	for i := range wr.news {
		f := &wr.news[i]
		f.path = joinPath(dir, string(wr.name(f.e)))
		f.m, f.ok, f.why, f.denied = w.set.MatchDenied(f.path)
	}
	wr.ps = wr.ps[:0]
	w.mu.Lock()
	for i := range wr.news {
		f, e := &wr.news[i], wr.news[i].e
		if c := w.pending[e.h]; c != nil && c.path == f.path { // found by an event meanwhile
			wr.st.Seen++
			w.observedFile(c, e.size, e.mtime)
			continue
		}
		if !f.ok || f.m.Rule.Unit != rules.UnitFile {
			w.remember(r, e.h, fileSig(e.size, e.mtime), true)
			wr.st.Ignored++
			w.fileIgnored(f.path, f.ok, f.why, f.denied)
			continue
		}
		wr.st.Seen++
		if wr.opts.probe && quiet(e.mtime, f.m.Rule.Settle) {
			wr.ps = append(wr.ps, probe{h: e.h, path: f.path, rule: f.m.Rule, size: e.size, mtime: e.mtime})
			continue
		}
		w.newFileCand(r, e.h, f.path, f.m.Rule, e.size, e.mtime, 0)
	}
	w.mu.Unlock()
	clear(wr.news) // no matches kept alive
	if len(wr.ps) == 0 {
		return
	}
	w.askSignatures(wr.ctx, wr.ps)
	w.mu.Lock()
	w.applyProbes(r, wr.ps, &wr.st)
	w.mu.Unlock()
	clear(wr.ps)
}

// handOver hands over, in a sync walk (Scan), the units that settled during it.
func (wr *walker) handOver() {
	if !wr.opts.sync {
		return
	}
	if wr.buf == nil {
		wr.buf = make([]byte, hashChunk)
	}
	wr.w.drain(wr.ctx, wr.buf, &wr.st)
}

// dirFound classifies a directory below a descended one: a folder unit is observed, a descended
// directory queued for the walk.
func (wr *walker) dirFound(dir string) {
	w, r := wr.w, wr.r
	role := w.set.Dir(dir)
	switch {
	case role.Unit != nil:
		if wr.opts.watch {
			w.watchDir(r, dir, true)
		}
		w.observeUnit(wr.ctx, r, *role.Unit, wr.dr, wr.opts.probe, &wr.st)
		wr.handOver()
		if role.Descend {
			wr.push(walkItem{dir: dir})
		}
	case role.Descend:
		wr.push(walkItem{dir: dir})
	default:
		wr.st.Ignored++
		entry := w.log.WithFields(logrus.Fields{"path": dir, "why": role.Why})
		if role.Denied {
			w.mu.Lock()
			w.warnOnce("deny:"+dir, entry, "folder names no allowed user or group; ignored")
			w.mu.Unlock()
		} else {
			entry.Debug("folder ignored")
		}
	}
}

// observeUnit walks a folder unit (without the lock) and applies the observation to its
// candidate. A unit found quiet for its settle is looked up with Sink.Known first when probe is
// set (the walk's fingerprint reads no content), so an ordered folder unit keeps no candidate.
func (w *Watcher) observeUnit(ctx context.Context, r *root, m rules.Match, dr *dirReader, probe bool, st *ScanStats) {
	fw, err := walkUnit(dr, m)
	h := hashString(m.UnitPath)
	sig := folderSig(fw.fp)
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.pending[h]
	if c != nil && c.path != m.UnitPath {
		c = nil
	}
	if err != nil {
		if c != nil {
			w.dropPending(c)
		}
		if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) {
			r.errors++
			r.lastErr = err.Error()
			w.warnOnce("unit:"+m.UnitPath, w.log.WithError(err).WithField("path", m.UnitPath), "cannot walk folder unit")
		}
		return
	}
	st.Seen++
	var askedSig uint64
	if c == nil {
		if ignored, ok := w.cached(r, h, sig); ok && !ignored {
			st.AlreadyOrdered++
			return
		}
		if probe && len(fw.files) > 0 && quiet(fw.newest, m.Rule.Settle) {
			w.mu.Unlock()
			known, kerr := w.sink.Known(ctx, m.Rule.Name, m.UnitPath, fw.fp)
			w.mu.Lock()
			if kerr != nil {
				w.log.WithError(kerr).WithFields(logrus.Fields{"rule": m.Rule.Name, "path": m.UnitPath}).Debug("cannot ask whether unit is known")
			} else if known {
				w.remember(r, h, sig, false)
				st.AlreadyOrdered++
				return
			} else {
				askedSig = sig
			}
			if c = w.pending[h]; c != nil && c.path != m.UnitPath { // found by an event meanwhile?
				c = nil
			}
		}
		if c == nil {
			c = &cand{path: m.UnitPath, hash: h, rule: m.Rule, root: r, folder: true, idx: -1}
			w.addPending(c)
		}
	}
	if c.busy {
		if fw.fp != c.fp {
			c.touched = true
		}
		return
	}
	if askedSig != 0 {
		c.askedSig = askedSig
	}
	c.unit = &unitState{match: m, files: fw.files, marker: fw.marker}
	c.fp = fw.fp
	w.observed(c, sig, fw.newest, len(fw.files) == 0)
}

// listFailed records a directory that cannot be listed.
func (w *Watcher) listFailed(r *root, dir string, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	r.errors++
	r.lastErr = fmt.Sprintf("list %s: %v", dir, err)
	w.warnOnce("list:"+dir, w.log.WithError(err).WithField("path", dir), "cannot list directory")
}

// fileIgnored logs why a file is no unit. Caller holds mu.
func (w *Watcher) fileIgnored(path string, matched bool, why string, denied bool) {
	entry := w.log.WithFields(logrus.Fields{"path": path, "why": why})
	switch {
	case denied:
		w.warnOnce("deny:"+path, entry, "file names no allowed user or group; ignored")
	case matched:
		entry.Debug("file directly in a folder rule's folder; ignored")
	default:
		entry.Debug("file ignored")
	}
}

func joinPath(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}

func samePath(p, dir string, name []byte) bool {
	return len(p) == len(dir)+1+len(name) && p[:len(dir)] == dir && p[len(dir)] == '/' && p[len(dir)+1:] == string(name)
}
