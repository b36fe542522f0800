package watcher

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/omero-adi/omero-adi/rules"
)

// hashChunk is how much of a file's head and of its tail the fingerprint hashes.
const hashChunk = 64 << 10

// errChanged says a file changed while it was fingerprinted.
var errChanged = errors.New("changed while fingerprinting")

// fileSignature is the part of a file's fingerprint that needs no read: "size:mtime:". The
// Sink's KnownSignature matches it against the fingerprints it stored.
func fileSignature(size, mtime int64) string {
	var out [48]byte
	b := strconv.AppendInt(out[:0], size, 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, mtime, 10)
	b = append(b, ':')
	return string(b)
}

// fileFingerprint hashes head and tail of a file (buf holds hashChunk bytes); it fails with
// errChanged when the file's size or mtime is no longer the observed signature. It works on the
// raw descriptor (no *os.File, no poller registration). It is the only place where the watcher
// opens a file that may be data, and it runs only for a unit that is settling.
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
	b := append(out[:0], fileSignature(size, mtime)...)
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

type unitFile struct {
	rel   string
	size  int64
	mtime int64
}

// folderWalk is what walking a folder unit found.
type folderWalk struct {
	files  []string // absolute, sorted; without the marker, empty files and ignored names
	fp     string   // "count:total:newest:hash(sorted list of path, size, mtime)"; no content read
	newest int64
	marker bool
}

// walkUnit lists a folder unit with dr: its files (selected by the rule), the fingerprint, the
// newest mtime, and whether the marker exists. It reads no file.
func walkUnit(dr *dirReader, m rules.Match) (folderWalk, error) {
	rule := m.Rule
	unitRel := m.UnitPath[len(m.Folder)+1:] // relative to the rule folder
	var list []unitFile
	var out folderWalk
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
		err = dr.each(fd, func(name []byte, namePtr *byte, typ uint8) error {
			n := bstr(name)
			if top && rule.Marker != "" && n == rule.Marker {
				out.marker = true
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
		return folderWalk{}, err
	}
	sort.Slice(list, func(i, j int) bool { return list[i].rel < list[j].rel })
	h := sha256.New()
	var total int64
	out.files = make([]string, len(list))
	var line []byte
	for i, f := range list {
		out.files[i] = m.UnitPath + f.rel
		total += f.size
		out.newest = max(out.newest, f.mtime)
		line = append(line[:0], f.rel[1:]...)
		line = append(line, 0)
		line = strconv.AppendInt(line, f.size, 10)
		line = append(line, 0)
		line = strconv.AppendInt(line, f.mtime, 10)
		line = append(line, '\n')
		h.Write(line)
	}
	sum := h.Sum(nil)
	out.fp = fmt.Sprintf("%d:%d:%d:%s", len(list), total, out.newest, hex.EncodeToString(sum[:16]))
	return out, nil
}
