package watcher

// knownEntry is the cache's memory of one path: the signature of the content it last decided on,
// and the full scan that last saw it (entries a full scan did not see are dropped after it).
type knownEntry struct {
	sig  uint64 // bit 0 set: not a unit
	gen  uint32
	root uint16
}

// cached reports whether path hash h with signature sig was decided already: known (ordered) or
// ignored (no unit). A hit is stamped as seen by the current scan of r. Caller holds mu.
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

// remember records the decision on path hash h with signature sig. Caller holds mu.
func (w *Watcher) remember(r *root, h, sig uint64, ignored bool) {
	sig &^= 1
	if ignored {
		sig |= 1
	}
	w.known[h] = knownEntry{sig: sig, gen: r.gen, root: r.idx}
}

// sweep drops the cache entries of r that its last full scan did not see (deleted files).
// Caller holds mu.
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

// folderSig is a folder unit's signature: a hash of its fingerprint (which reads no content).
func folderSig(fp string) uint64 { return (fnvAdd(fnvOffset, fp) | 2) &^ 1 }
