package integrity

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/omero-adi/omero-adi/runner/omero"
	"github.com/omero-adi/omero-adi/runner/redirect"
)

// serverPage is how many files of the server's in-place filesets one hql call reads.
const serverPage = 5000

// ServerDamage is a damaged link of an in-place fileset on the server (made by any importer).
type ServerDamage struct {
	Fileset      int64
	Link, Target string
	Kind, Detail string
}

// Line is the damage in one line, for people.
func (d ServerDamage) Line() string {
	return fmt.Sprintf("fileset %d: %s -> %s %s: %s", d.Fileset, d.Link, d.Target, d.Kind, d.Detail)
}

// serverSession opens an admin session (the admin logs in for itself in group system), which
// `hql --all` needs to see every group.
func (c *Checker) serverSession(ctx context.Context) (*omero.Session, error) {
	if c.d.OMERO == nil || c.d.AdminUser == "" {
		return nil, errors.New("reading the server's filesets needs the OMERO CLI and its admin ([omero] user)")
	}
	return c.d.OMERO.Login(ctx, "integrity-all-filesets", c.d.AdminUser, "system")
}

// serverFiles calls fn with each page of the server's in-place files, at most starts CLI starts
// in all (login and logout included); it reports whether every page was read.
func (c *Checker) serverFiles(ctx context.Context, starts int, fn func([]omero.ServerFile) error) (complete bool, used int, err error) {
	if starts < 3 {
		return false, 0, nil
	}
	s, err := c.serverSession(ctx)
	if err != nil {
		return false, 1, fmt.Errorf("read the server's in-place filesets: %w", err)
	}
	defer c.d.OMERO.Close(ctx, s)
	used = 2
	for offset := 0; used < starts; offset += serverPage {
		page, err := c.d.OMERO.InPlaceFiles(ctx, s, offset, serverPage)
		used++
		if err != nil {
			return false, used, err
		}
		if err := fn(page); err != nil {
			return false, used, err
		}
		if len(page) < serverPage {
			return true, used, nil
		}
	}
	return false, used, nil
}

// checkServer checks the link of every file of the server's in-place filesets (pages within the
// run's CLI budget): the link exists, its target exists, and its size is the one OMERO recorded.
// Files that are not symlinks (hard-linked or copied) have nothing to check.
func (r *run) checkServer(ctx context.Context, found func(ServerDamage)) error {
	complete, used, err := r.c.serverFiles(ctx, r.opts.MaxCLIStarts-r.rep.CLIStarts, func(page []omero.ServerFile) error {
		for _, f := range page {
			if err := r.pace.wait(ctx); err != nil {
				return err
			}
			r.rep.ServerFiles++
			if d := r.c.inspectServerFile(f); d != nil {
				r.rep.ServerBroken++
				if found != nil {
					found(*d)
				}
			}
		}
		return nil
	})
	r.rep.CLIStarts += used
	r.rep.ServerComplete = complete
	return err
}

func (c *Checker) inspectServerFile(f omero.ServerFile) *ServerDamage {
	link := filepath.Join(c.d.ManagedRepo, filepath.FromSlash(f.Path))
	d := &ServerDamage{Fileset: f.Fileset, Link: link}
	fi, err := os.Lstat(link)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		d.Kind, d.Detail = Unlinked, "the link in the ManagedRepository is gone"
		return d
	case err != nil:
		d.Kind, d.Detail = Unread, err.Error()
		return d
	case fi.Mode()&fs.ModeSymlink == 0:
		return nil
	}
	if d.Target, err = redirect.ReadLink(link); err != nil {
		d.Kind, d.Detail = Unread, err.Error()
		return d
	}
	ti, err := os.Stat(d.Target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		d.Kind, d.Detail = Deleted, "the file is gone"
	case err != nil:
		d.Kind, d.Detail = Unread, err.Error()
	case f.Size >= 0 && !ti.IsDir() && ti.Size() < f.Size:
		d.Kind, d.Detail = Truncated, fmt.Sprintf("the file has %d bytes, OMERO recorded %d", ti.Size(), f.Size)
	case f.Size >= 0 && !ti.IsDir() && ti.Size() != f.Size:
		d.Kind, d.Detail = Replaced, fmt.Sprintf("the file has %d bytes, OMERO recorded %d", ti.Size(), f.Size)
	default:
		return nil
	}
	return d
}

// ServerTargets lists, sorted, where every link of the server's in-place filesets points, within
// maxStarts CLI starts; complete is false when the budget ran out first (the list is then not
// safe to decide on).
func (c *Checker) ServerTargets(ctx context.Context, maxStarts int) (targets []string, complete bool, err error) {
	complete, _, err = c.serverFiles(ctx, maxStarts, func(page []omero.ServerFile) error {
		for _, f := range page {
			if t, err := redirect.ReadLink(filepath.Join(c.d.ManagedRepo, filepath.FromSlash(f.Path))); err == nil {
				targets = append(targets, t)
			}
		}
		return nil
	})
	sort.Strings(targets)
	return targets, complete, err
}
