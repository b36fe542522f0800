package watcher

import (
	"container/heap"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/omero-adi/omero-adi/rules"
)

// hashChunk is how much of a file's head and of its tail the fingerprint hashes.
const hashChunk = 64 << 10

// cand is a pending unit: observed, not yet settled. It is kept small, as every file of a new
// tree is one until it settles: a file's rules.Match (with its map of variables) is made again
// when the unit is handed over, only a folder unit keeps its match and its last walk.
type cand struct {
	path  string
	hash  uint64
	rule  *rules.Compiled
	root  *root
	unit  *unitState // folder units only
	sig   uint64     // signature of the last observation (0: none yet)
	fpSig uint64     // the signature a file's fp was taken for
	since int64      // times on the watcher's monotonic clock (see Watcher.now)
	last  int64
	due   int64
	idx   int // in the queue; -1 when not scheduled
	// fp is the fingerprint: a folder unit's from its last walk, a file's for signature fpSig.
	fp     string
	asked  bool // the Sink's Known said no for fp
	folder bool
}

// unitState is what a folder unit's candidate keeps: its match and its last walk.
type unitState struct {
	match  rules.Match
	files  []string
	marker bool
}

func (c *cand) settle() time.Duration { return c.rule.Settle.Duration }

// candHeap orders candidates by due time.
type candHeap []*cand

func (h candHeap) Len() int           { return len(h) }
func (h candHeap) Less(i, j int) bool { return h[i].due < h[j].due }
func (h candHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].idx = i; h[j].idx = j }
func (h *candHeap) Push(x any)        { c := x.(*cand); c.idx = len(*h); *h = append(*h, c) }
func (h *candHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	c.idx = -1
	return c
}

func (w *Watcher) addPending(c *cand) {
	w.pending[c.hash] = c
	c.root.pending++
}

func (w *Watcher) dropPending(c *cand) {
	if w.pending[c.hash] == c {
		delete(w.pending, c.hash)
		c.root.pending--
	}
	w.unschedule(c)
}

func (w *Watcher) schedule(c *cand, at int64) {
	if w.cfg.MinObserve > 0 {
		if min := c.last + int64(w.cfg.MinObserve); at < min {
			at = min
		}
	}
	c.due = at
	if c.idx >= 0 {
		heap.Fix(&w.queue, c.idx)
	} else {
		heap.Push(&w.queue, c)
	}
}

func (w *Watcher) unschedule(c *cand) {
	if c.idx >= 0 {
		heap.Remove(&w.queue, c.idx)
	}
}

// touch records an event on a pending unit: it changed now, so the quiet period restarts.
func (w *Watcher) touch(c *cand) {
	now := w.now()
	c.since = now
	w.schedule(c, now+int64(c.settle()))
}

// reobserve looks at a due candidate again.
func (w *Watcher) reobserve(ctx context.Context, c *cand, st *ScanStats) {
	if c.folder {
		w.unitFound(ctx, c.root, c.unit.match, st)
		return
	}
	var s unix.Stat_t
	if err := unix.Lstat(c.path, &s); err != nil || s.Mode&unix.S_IFMT != unix.S_IFREG {
		w.log.WithFields(logrus.Fields{"path": c.path, "rule": c.rule.Name}).Debug("pending file gone")
		w.dropPending(c)
		return
	}
	w.observedFile(ctx, c, s.Size, mtimeOf(&s), st)
}

// observedFile applies one observation (size, mtime) of a file candidate.
func (w *Watcher) observedFile(ctx context.Context, c *cand, size, mtime int64, st *ScanStats) {
	if size == 0 {
		w.dropPending(c) // empty: not a unit (yet); a write event or rescan brings it back
		return
	}
	w.observed(ctx, c, fileSig(size, mtime), mtime, false, st)
}

// observed applies one observation with signature sig to a candidate and settles it, schedules
// it, or (an empty folder unit that stayed empty) drops it.
func (w *Watcher) observed(ctx context.Context, c *cand, sig uint64, newest int64, empty bool, st *ScanStats) {
	now := w.now()
	if sig != c.sig {
		first := c.sig == 0
		c.sig, c.since = sig, now
		if first && w.cfg.TrustMtime && newest > 0 {
			if age := time.Since(time.Unix(0, newest)); age > 0 {
				c.since = now - int64(age)
			}
		}
	}
	c.last = now
	switch {
	case c.folder && c.unit.marker && !empty:
		w.settleUnit(ctx, c, st)
	case now-c.since >= int64(c.settle()):
		if empty {
			w.dropPending(c)
			return
		}
		w.settleUnit(ctx, c, st)
	default:
		w.schedule(c, c.since+int64(c.settle()))
	}
}

// errChanged says a file changed while it was fingerprinted.
var errChanged = errors.New("changed while fingerprinting")

// settleUnit fingerprints a settled candidate, asks the Sink whether it is known and hands it over.
func (w *Watcher) settleUnit(ctx context.Context, c *cand, st *ScanStats) {
	rule := c.rule
	entry := w.log.WithFields(logrus.Fields{"rule": rule.Name, "path": c.path})
	fp, ok := w.fingerprint(c, entry)
	if !ok {
		return
	}
	if !c.asked { // Known is asked once per content
		known, err := w.sink.Known(ctx, rule.Name, c.path, fp)
		if err != nil {
			w.retry(c, entry.WithError(err), "cannot ask whether unit is known; retrying")
			return
		}
		if known {
			w.remember(c.root, c.hash, c.sig, false)
			st.AlreadyOrdered++
			w.dropPending(c)
			entry.Debug("unit already ordered")
			return
		}
		c.asked = true
	}
	var m rules.Match
	var files []string
	if c.folder {
		m, files = c.unit.match, c.unit.files
	} else {
		var ok bool
		m, ok, _ = w.set.Match(c.path) // the same answer as when it was found: rules do not change
		if !ok || m.Rule != rule {
			entry.Warn("settled file no longer matches its rule; dropped")
			w.dropPending(c)
			return
		}
		files = []string{c.path}
	}
	u := Unit{Rule: rule, Match: m, Path: c.path, Files: files, Fingerprint: fp}
	if err := w.sink.Settled(ctx, u); err != nil {
		w.retry(c, entry.WithError(err), "cannot hand over settled unit; retrying")
		return
	}
	w.remember(c.root, c.hash, c.sig, false)
	st.Settled++
	w.settled++
	w.dropPending(c)
	entry.WithFields(logrus.Fields{"files": len(files), "fingerprint": fp}).Debug("unit settled")
}

// fingerprint returns the candidate's fingerprint for its current signature, hashing a file at
// most once per signature. ok is false when the candidate changed (rescheduled) or vanished
// (dropped).
func (w *Watcher) fingerprint(c *cand, entry *logrus.Entry) (string, bool) {
	if c.folder || (c.fp != "" && c.fpSig == c.sig) {
		return c.fp, true
	}
	if w.hbuf == nil {
		w.hbuf = make([]byte, hashChunk)
	}
	fp, err := fileFingerprint(c.path, c.sig, w.hbuf)
	switch {
	case errors.Is(err, errChanged):
		w.touch(c)
		return "", false
	case err != nil:
		entry.WithError(err).Debug("cannot fingerprint pending file; dropped")
		w.dropPending(c)
		return "", false
	}
	c.fp, c.fpSig, c.asked = fp, c.sig, false
	return fp, true
}

// askKnown asks the Sink about every pending unit not asked yet for its current content, and
// drops those already ordered. Scan does this so that a one-shot scan tells "already ordered"
// from "pending" without waiting for the units to settle; the fingerprints are kept, so nothing
// is hashed twice.
func (w *Watcher) askKnown(ctx context.Context, st *ScanStats) {
	for _, c := range w.pending {
		if ctx.Err() != nil {
			return
		}
		if c.folder && len(c.unit.files) == 0 {
			continue
		}
		entry := w.log.WithFields(logrus.Fields{"rule": c.rule.Name, "path": c.path})
		fp, ok := w.fingerprint(c, entry)
		if !ok || c.asked {
			continue
		}
		known, err := w.sink.Known(ctx, c.rule.Name, c.path, fp)
		if err != nil {
			entry.WithError(err).Debug("cannot ask whether unit is known")
			continue
		}
		c.asked = true
		if known {
			w.remember(c.root, c.hash, c.sig, false)
			st.AlreadyOrdered++
			w.dropPending(c)
		}
	}
}

// retry reschedules a candidate whose hand-over failed.
func (w *Watcher) retry(c *cand, entry *logrus.Entry, msg string) {
	w.warnOnce("sink:"+c.path, entry, msg)
	c.root.errors++
	c.root.lastErr = msg
	d := c.settle()
	if d < time.Second {
		d = time.Second
	}
	w.schedule(c, w.now()+int64(d))
}

// fileFingerprint hashes head and tail of a file (buf holds hashChunk bytes); it fails with
// errChanged when the file's size or mtime is no longer the observed signature. It works on the
// raw descriptor (no *os.File, no poller registration): after a restart it runs once per file of
// the tree.
func fileFingerprint(path string, sig uint64, buf []byte) (string, error) {
	// no symlink swapped in since the stat, and never block on a FIFO
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open file %s: %w", path, err)
	}
	defer unix.Close(fd)
	var s unix.Stat_t
	if err := unix.Fstat(fd, &s); err != nil {
		return "", fmt.Errorf("stat file %s: %w", path, err)
	}
	if s.Mode&unix.S_IFMT != unix.S_IFREG {
		return "", fmt.Errorf("open file: %s is no longer a regular file", path)
	}
	size, mtime := s.Size, mtimeOf(&s)
	if fileSig(size, mtime) != sig {
		return "", errChanged
	}
	h := sha256.New()
	n, err := preadFull(fd, buf[:min(int64(hashChunk), size)], 0)
	if err != nil {
		return "", fmt.Errorf("read file %s: %w", path, err)
	}
	h.Write(buf[:n])
	if size > hashChunk {
		off := max(size-hashChunk, hashChunk)
		n, err := preadFull(fd, buf[:size-off], off)
		if err != nil {
			return "", fmt.Errorf("read file %s: %w", path, err)
		}
		h.Write(buf[:n])
	}
	if err := unix.Fstat(fd, &s); err != nil {
		return "", fmt.Errorf("stat file %s: %w", path, err)
	}
	if s.Size != size || mtimeOf(&s) != mtime {
		return "", errChanged
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	var out [80]byte
	b := strconv.AppendInt(out[:0], size, 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, mtime, 10)
	b = append(b, ':')
	b = hex.AppendEncode(b, sum[:16])
	return string(b), nil
}

// preadFull reads len(b) bytes at off, or fewer when the file ends first (it shrank: the second
// Fstat reports the change).
func preadFull(fd int, b []byte, off int64) (int, error) {
	n := 0
	for n < len(b) {
		m, err := unix.Pread(fd, b[n:], off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n, nil
}

// unitFound observes a folder unit: walk it, compute its signature, and update its candidate.
func (w *Watcher) unitFound(ctx context.Context, r *root, m rules.Match, st *ScanStats) {
	h := hashString(m.UnitPath)
	c := w.pending[h]
	if c != nil && c.path != m.UnitPath {
		c = nil
	}
	files, fp, newest, marker, err := w.walkUnit(m)
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
	sig := fnvAdd(fnvOffset, fp) | 2
	sig &^= 1
	asked := false
	if c == nil {
		if ignored, ok := w.cached(r, h, sig); ok && !ignored {
			st.AlreadyOrdered++
			return
		}
		// Quiet for its settle already (newest mtime), as after a restart: asked at once, so that
		// an ordered folder unit keeps no candidate (and no list of files). The walk's fingerprint
		// reads no content; the mtime settles nothing.
		if len(files) > 0 && time.Since(time.Unix(0, newest)) >= m.Rule.Settle.Duration {
			var known bool
			if known, asked = w.askAtSight(ctx, m.Rule, m.UnitPath, fp); known {
				w.remember(r, h, sig, false)
				st.AlreadyOrdered++
				return
			}
		}
		c = &cand{path: m.UnitPath, hash: h, rule: m.Rule, root: r, folder: true, idx: -1}
		w.addPending(c)
	}
	if fp != c.fp {
		c.asked = asked
	}
	c.unit = &unitState{match: m, files: files, marker: marker}
	c.fp = fp
	w.observed(ctx, c, sig, newest, len(files) == 0, st)
}

type unitFile struct {
	rel   string
	size  int64
	mtime int64
}

// walkUnit lists a folder unit: its files (selected by the rule; without the marker, empty files
// and ignored names), the fingerprint, the newest mtime, and whether the marker exists.
func (w *Watcher) walkUnit(m rules.Match) ([]string, string, int64, bool, error) {
	rule := m.Rule
	unitRel := m.UnitPath[len(m.Folder)+1:] // relative to the rule folder
	var list []unitFile
	marker := false
	var walk func(dir, rel string, top bool) error
	walk = func(dir, rel string, top bool) error {
		fd, err := openDir(dir, true)
		if err != nil {
			if !top && (errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP)) {
				return nil
			}
			return fmt.Errorf("walk folder unit: %w", err)
		}
		var subdirs []string
		err = w.dr.each(fd, func(name []byte, namePtr *byte, typ uint8) error {
			n := bstr(name)
			if top && rule.Marker != "" && n == rule.Marker {
				marker = true
				return nil
			}
			if rules.IgnoredName(n) {
				return nil
			}
			if typ == unix.DT_DIR {
				subdirs = append(subdirs, string(name))
				return nil
			}
			if typ != unix.DT_REG && typ != unix.DT_UNKNOWN {
				return nil
			}
			var s unix.Stat_t
			if fstatat(fd, name, namePtr, &s) != nil {
				return nil
			}
			if s.Mode&unix.S_IFMT == unix.S_IFDIR {
				subdirs = append(subdirs, string(name))
				return nil
			}
			if s.Mode&unix.S_IFMT != unix.S_IFREG || s.Size == 0 {
				return nil
			}
			frel := rel + "/" + n
			if !rule.Selects(unitRel + frel) {
				return nil
			}
			list = append(list, unitFile{rel: frel, size: s.Size, mtime: mtimeOf(&s)})
			return nil
		})
		unix.Close(fd)
		if err != nil {
			return err
		}
		for _, sd := range subdirs {
			if err := walk(dir+"/"+sd, rel+"/"+sd, false); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(m.UnitPath, "", true); err != nil {
		return nil, "", 0, false, err
	}
	sort.Slice(list, func(i, j int) bool { return list[i].rel < list[j].rel })
	h := sha256.New()
	var total, newest int64
	files := make([]string, len(list))
	var line []byte
	for i, f := range list {
		files[i] = m.UnitPath + f.rel
		total += f.size
		newest = max(newest, f.mtime)
		line = append(line[:0], f.rel[1:]...)
		line = append(line, 0)
		line = strconv.AppendInt(line, f.size, 10)
		line = append(line, 0)
		line = strconv.AppendInt(line, f.mtime, 10)
		line = append(line, '\n')
		h.Write(line)
	}
	sum := h.Sum(nil)
	fp := fmt.Sprintf("%d:%d:%d:%s", len(list), total, newest, hex.EncodeToString(sum[:16]))
	return files, fp, newest, marker, nil
}

// knownEntry is the cache's memory of one path: the signature of the content it last decided on,
// and the full scan that last saw it (entries a full scan did not see are dropped after it).
type knownEntry struct {
	sig  uint64 // bit 0 set: not a unit
	gen  uint32
	root uint16
}

// cached reports whether path hash h with signature sig was decided already: known (ordered) or
// ignored (no unit). A hit is stamped as seen by the current scan of r.
func (w *Watcher) cached(r *root, h, sig uint64) (ignored, ok bool) {
	e, found := w.known[h]
	if !found || e.sig&^1 != sig {
		return false, false
	}
	if e.gen != r.gen {
		e.gen = r.gen
		w.known[h] = e
	}
	return e.sig&1 == 1, true
}

// remember records the decision on path hash h with signature sig.
func (w *Watcher) remember(r *root, h, sig uint64, ignored bool) {
	sig &^= 1
	if ignored {
		sig |= 1
	}
	w.known[h] = knownEntry{sig: sig, gen: r.gen, root: r.idx}
}

// sweep drops the cache entries of r that its last full scan did not see (deleted files).
func (w *Watcher) sweep(r *root) {
	for h, e := range w.known {
		if e.root == r.idx && e.gen != r.gen {
			delete(w.known, h)
		}
	}
}

// FNV-1a, 64 bit.
const (
	fnvOffset uint64 = 14695981039346656037
	fnvPrime  uint64 = 1099511628211
)

func fnvAdd(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

func fnvAddBytes(h uint64, b []byte) uint64 {
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return h
}

func hashString(path string) uint64 { return fnvAdd(fnvOffset, path) }

// fileSig mixes size and mtime into a non-zero signature with bit 0 clear (the cache uses bit 0).
func fileSig(size, mtime int64) uint64 {
	x := uint64(size)*0x9E3779B97F4A7C15 ^ uint64(mtime)
	x ^= x >> 30
	x *= 0xBF58476D1CE4E5B9
	x ^= x >> 27
	x *= 0x94D049BB133111EB
	x ^= x >> 31
	return (x | 2) &^ 1
}
