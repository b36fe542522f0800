// Package redirect owns what the agent reads and changes below OMERO's ManagedRepository: it
// lists where a fileset's symlinks point (Targets), repoints them from the local temp copy of
// preprocessed files to the same files in .processed on the share (preprocessing.md), and removes
// the temp folder afterwards.
//
// After an in-place (ln_s) import from a temp folder, every file of each fileset is a symlink
// below <ManagedRepository>/<templatePrefix> pointing into the temp folder. Redirect walks each
// prefix, and every link whose target lies inside one of the given temp folders gets, atomically,
// the target with the same relative path below the matching processed folder (subfolders kept,
// so nested formats such as OME-Zarr survive). The caller deletes the temp folder with RemoveTemp
// only when Redirect reported no error.
package redirect

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/omero-adi/omero-adi/order"
)

// Sentinel errors, checked with errors.Is.
var (
	ErrInvalid    = errors.New("invalid redirect request")
	ErrIncomplete = errors.New("symlinks still point into the temp folder")
	ErrRefused    = errors.New("refused to delete")
)

// LinkError is a link Redirect left unchanged, and why.
type LinkError struct {
	Link   string // the symlink (or the folder that could not be read)
	Target string // its current target
	Err    error
}

func (e LinkError) String() string {
	if e.Target == "" {
		return fmt.Sprintf("%s: %v", e.Link, e.Err)
	}
	return fmt.Sprintf("%s -> %s: %v", e.Link, e.Target, e.Err)
}

// Error lists the links left pointing into a temp folder; it matches ErrIncomplete. Its text is
// written for an order's description.
type Error struct {
	Links []LinkError
}

// maxListed bounds how many links the error text names; Links holds them all.
const maxListed = 20

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "redirect symlinks: %d link(s) in the ManagedRepository still point into the temp folder, which is kept so that they work: ", len(e.Links))
	for i, l := range e.Links {
		if i == maxListed {
			fmt.Fprintf(&b, "; and %d more", len(e.Links)-maxListed)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(l.String())
	}
	b.WriteString(". Point each link at the same file below the .processed folder by hand (or fix the cause and rerun), then delete the temp folder")
	return b.String()
}

// Is makes errors.Is(err, ErrIncomplete) true.
func (e *Error) Is(target error) bool { return target == ErrIncomplete }

// Redirect repoints every symlink below each <managedRepo>/<prefix> whose target lies inside one of
// the temp folders of dirs to the same relative path below that folder's processed folder. dirs
// maps absolute temp folders to absolute processed folders (preprocess.Result.Redirects; for one
// folder: map[string]string{tmpDir: processedDir}). Each new target must exist, with the same size
// (regular files) or kind (folders) as the old one; each link is replaced atomically (a new link
// under a temporary name beside it, renamed over it). Links pointing elsewhere are left alone, so
// a second call changes nothing. It returns how many links it changed, and an *Error listing
// those it could not change (the caller then keeps the temp folders).
func Redirect(managedRepo string, prefixes []string, dirs map[string]string) (changed int, err error) {
	if len(prefixes) == 0 {
		return 0, fmt.Errorf("%w: no templatePrefix given", ErrInvalid)
	}
	roots := make([]string, len(prefixes))
	for i, p := range prefixes {
		if roots[i], err = prefixDir(managedRepo, p); err != nil {
			return 0, err
		}
	}
	maps, err := aliases(dirs)
	if err != nil {
		return 0, err
	}
	var failed []LinkError
	for _, root := range roots {
		werr := filepath.WalkDir(root, func(link string, d fs.DirEntry, err error) error {
			if err != nil {
				failed = append(failed, LinkError{Link: link, Err: fmt.Errorf("cannot read: %w", err)})
				return nil
			}
			if d.Type()&fs.ModeSymlink == 0 {
				return nil
			}
			ok, lerr := redirectLink(link, maps)
			if lerr != nil {
				failed = append(failed, *lerr)
			} else if ok {
				changed++
			}
			return nil
		})
		if werr != nil {
			failed = append(failed, LinkError{Link: root, Err: werr})
		}
	}
	if len(failed) > 0 {
		return changed, &Error{Links: failed}
	}
	return changed, nil
}

// Targets lists the targets of the symlinks below <managedRepo>/<prefix>, made absolute and
// clean, sorted: the client paths the files of the fileset with that templatePrefix came from.
func Targets(managedRepo, prefix string) ([]string, error) {
	var out []string
	err := walkLinks(managedRepo, prefix, func(_, abs string) error {
		out = append(out, abs)
		return nil
	})
	sort.Strings(out)
	return out, err
}

// walkLinks calls fn with every symlink below <managedRepo>/<prefix> and its absolute, clean
// target, in lexical order; an error of fn or of reading stops the walk.
func walkLinks(managedRepo, prefix string, fn func(link, abs string) error) error {
	dir, err := prefixDir(managedRepo, prefix)
	if err != nil {
		return err
	}
	err = filepath.WalkDir(dir, func(link string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink == 0 {
			return err
		}
		_, abs, err := readLink(link)
		if err != nil {
			return err
		}
		return fn(link, abs)
	})
	if err != nil {
		return fmt.Errorf("read links below %s: %w", dir, err)
	}
	return nil
}

// Link is one symlink below a fileset's folder and its target as they are now: what the agent
// records of an in-place import.
type Link struct {
	Path    string // the symlink
	Target  string // its target, absolute and clean
	Dir     bool   // the target is a folder
	Size    int64
	ModTime time.Time
	Dev     uint64 // the target's device and inode
	Ino     uint64
}

// FileID returns the device and inode of fi (0, 0 where the system has none).
func FileID(fi fs.FileInfo) (dev, ino uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), st.Ino
	}
	return 0, 0
}

// Links lists every symlink below <managedRepo>/<prefix> with its target's kind, size and
// modification time (os.Stat through the link), sorted by path. A link whose target cannot be
// read is an error: a fresh import must not be recorded broken.
func Links(managedRepo, prefix string) ([]Link, error) {
	var out []Link
	err := walkLinks(managedRepo, prefix, func(link, abs string) error {
		fi, err := os.Stat(link)
		if err != nil {
			return fmt.Errorf("target of %s: %w", link, err)
		}
		dev, ino := FileID(fi)
		out = append(out, Link{Path: link, Target: abs, Dir: fi.IsDir(), Size: fi.Size(), ModTime: fi.ModTime(), Dev: dev, Ino: ino})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ReadLink returns where link points, made absolute (relative to the link's folder) and clean.
func ReadLink(link string) (string, error) {
	_, abs, err := readLink(link)
	return abs, err
}

// Repoint points link, which must be a symlink below managedRepo that points at from, at to,
// atomically as Redirect does. to must exist with the kind of from's recorded target (dir) and,
// for a file, size bytes; the caller has proved it holds the same content. ErrInvalid when the
// link is not below managedRepo; ErrIncomplete when the link points elsewhere now (someone changed
// it since the check) or to does not match.
func Repoint(managedRepo, link, from, to string, dir bool, size int64) error {
	if !filepath.IsAbs(managedRepo) || !order.Below(filepath.Clean(managedRepo), link) {
		return fmt.Errorf("%w: %s is not below the ManagedRepository %s", ErrInvalid, link, managedRepo)
	}
	fi, err := os.Lstat(link)
	if err != nil {
		return fmt.Errorf("repoint %s: %w", link, err)
	}
	if fi.Mode()&fs.ModeSymlink == 0 {
		return fmt.Errorf("%w: %s is not a symlink", ErrInvalid, link)
	}
	if _, abs, err := readLink(link); err != nil || abs != filepath.Clean(from) {
		return fmt.Errorf("repoint %s: %w: it points at %s now, not %s", link, ErrIncomplete, abs, from)
	}
	ti, err := os.Stat(to)
	switch {
	case err != nil:
		return fmt.Errorf("repoint %s: %w: new target: %v", link, ErrIncomplete, err)
	case ti.IsDir() != dir || (!dir && (!ti.Mode().IsRegular() || ti.Size() != size)):
		return fmt.Errorf("repoint %s: %w: new target %s is not a %s of %d bytes", link, ErrIncomplete, to, kindName(dir), size)
	}
	if err := replace(link, filepath.Clean(to)); err != nil {
		return fmt.Errorf("repoint %s: %w", link, err)
	}
	return nil
}

func kindName(dir bool) string {
	if dir {
		return "folder"
	}
	return "file"
}

// prefixDir is the folder of a templatePrefix (relative to the ManagedRepository, as OMERO
// reports it) below managedRepo.
func prefixDir(managedRepo, prefix string) (string, error) {
	if !filepath.IsAbs(managedRepo) {
		return "", fmt.Errorf("%w: ManagedRepository %q is not an absolute path", ErrInvalid, managedRepo)
	}
	if !filepath.IsLocal(filepath.Clean(prefix)) {
		return "", fmt.Errorf("%w: templatePrefix %q must be a relative path inside the ManagedRepository", ErrInvalid, prefix)
	}
	return filepath.Join(managedRepo, filepath.Clean(prefix)), nil
}

// readLink returns a link's target as written and made absolute (relative to the link's folder)
// and clean.
func readLink(link string) (target, abs string, err error) {
	target, err = os.Readlink(link)
	if err != nil {
		return "", "", err
	}
	abs = target
	if !filepath.IsAbs(abs) {
		abs = filepath.Join(filepath.Dir(link), abs)
	}
	return target, filepath.Clean(abs), nil
}

// mapping is one temp folder (as written, or symlinks resolved) and its processed folder.
type mapping struct{ tmp, processed string }

// aliases validates dirs and lists each temp folder under its written and resolved names, longest
// first so that the deepest folder wins.
func aliases(dirs map[string]string) ([]mapping, error) {
	if len(dirs) == 0 {
		return nil, fmt.Errorf("%w: no temp folder given", ErrInvalid)
	}
	var maps []mapping
	for tmp, proc := range dirs {
		if !filepath.IsAbs(tmp) || filepath.Clean(tmp) != tmp || tmp == "/" {
			return nil, fmt.Errorf("%w: temp folder %q: want a clean absolute path below /", ErrInvalid, tmp)
		}
		if !filepath.IsAbs(proc) || filepath.Clean(proc) != proc {
			return nil, fmt.Errorf("%w: processed folder %q: want a clean absolute path", ErrInvalid, proc)
		}
		maps = append(maps, mapping{tmp, proc})
		if real, err := filepath.EvalSymlinks(tmp); err == nil && real != tmp && real != "/" {
			maps = append(maps, mapping{real, proc})
		}
	}
	sort.Slice(maps, func(i, j int) bool { return len(maps[i].tmp) > len(maps[j].tmp) })
	return maps, nil
}

// redirectLink repoints one link when it points into a temp folder; it reports whether it did.
func redirectLink(link string, maps []mapping) (bool, *LinkError) {
	target, abs, err := readLink(link)
	if err != nil {
		return false, &LinkError{Link: link, Err: err}
	}
	var newTarget string
	for _, m := range maps {
		if order.Below(m.tmp, abs) {
			newTarget = filepath.Join(m.processed, abs[len(m.tmp)+1:])
			break
		}
	}
	if newTarget == "" {
		return false, nil
	}
	fail := func(err error) (bool, *LinkError) { return false, &LinkError{Link: link, Target: target, Err: err} }
	oldInfo, err := os.Stat(abs)
	if err != nil {
		return fail(fmt.Errorf("current target unreadable: %w", err))
	}
	newInfo, err := os.Stat(newTarget)
	if err != nil {
		return fail(fmt.Errorf("new target %s: %w", newTarget, err))
	}
	switch {
	case oldInfo.Mode().IsRegular() && newInfo.Mode().IsRegular():
		if oldInfo.Size() != newInfo.Size() {
			return fail(fmt.Errorf("new target %s has %d bytes, the current one %d", newTarget, newInfo.Size(), oldInfo.Size()))
		}
	case oldInfo.IsDir() && newInfo.IsDir():
	default:
		return fail(fmt.Errorf("new target %s is a %s, the current one a %s", newTarget, newInfo.Mode().Type(), oldInfo.Mode().Type()))
	}
	if err := replace(link, newTarget); err != nil {
		return fail(err)
	}
	return true, nil
}

// replace points link at newTarget atomically: a new link under a temporary name beside it,
// renamed over it.
func replace(link, newTarget string) error {
	tmpName, err := tempName(link)
	if err != nil {
		return err
	}
	if err := os.Symlink(newTarget, tmpName); err != nil {
		return fmt.Errorf("create new link: %w", err)
	}
	if err := os.Rename(tmpName, link); err != nil {
		os.Remove(tmpName)
		return fmt.Errorf("replace link: %w", err)
	}
	return nil
}

func tempName(link string) (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(link), "."+filepath.Base(link)+".redirect-"+hex.EncodeToString(b[:])), nil
}

// RemoveTemp deletes tmpDir and everything in it, refusing (ErrRefused) anything that is not
// strictly below root, also after resolving symlinks, or that is itself a symlink. A missing
// tmpDir is not an error.
func RemoveTemp(root, tmpDir string) error {
	if !filepath.IsAbs(root) || filepath.Clean(root) != root || root == "/" {
		return fmt.Errorf("%w: temp root %q: want a clean absolute path below /", ErrRefused, root)
	}
	if !filepath.IsAbs(tmpDir) || filepath.Clean(tmpDir) != tmpDir || !order.Below(root, tmpDir) {
		return fmt.Errorf("%w: %q is not a folder below the temp root %s", ErrRefused, tmpDir, root)
	}
	fi, err := os.Lstat(tmpDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove temp folder: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: %s is not a folder", ErrRefused, tmpDir)
	}
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return fmt.Errorf("remove temp folder: %w", err)
	}
	realParent, err := filepath.EvalSymlinks(filepath.Dir(tmpDir))
	if err != nil {
		return fmt.Errorf("remove temp folder: %w", err)
	}
	if real := filepath.Join(realParent, filepath.Base(tmpDir)); realRoot == "/" || !order.Below(realRoot, real) {
		return fmt.Errorf("%w: %s resolves to %s, outside the temp root %s", ErrRefused, tmpDir, real, realRoot)
	}
	if err := os.RemoveAll(tmpDir); err != nil {
		return fmt.Errorf("remove temp folder: %w", err)
	}
	return nil
}
