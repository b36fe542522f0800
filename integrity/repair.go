package integrity

import (
	"context"
	"os"
	"strings"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/runner/omero"
	"github.com/omero-adi/omero-adi/runner/redirect"
)

// repairable reports whether some damage names a single candidate for a moved target.
func repairable(damage []db.Damage) bool {
	for _, d := range damage {
		if d.MovedTo != "" {
			return true
		}
	}
	return false
}

// repair re-points each link whose target moved to a single candidate that OMERO's SHA-1 proves
// to be the same file (same size, same hash), atomically as the redirect does, and records the
// new target; it returns the damage that is left. With DryRun it only lists what it would do.
// Nothing else is ever changed.
func (r *run) repair(ctx context.Context, uuid string, links []db.Link, damage []db.Damage, originals map[string]omero.OriginalFile) ([]db.Damage, error) {
	rec := map[string]db.Link{}
	for _, l := range links {
		rec[l.Path] = l
	}
	var left []db.Damage
	for _, d := range damage {
		if d.MovedTo == "" {
			left = append(left, d)
			continue
		}
		rp := Repair{UUID: uuid, Link: d.Link, From: d.Target, To: d.MovedTo}
		l := rec[d.Link]
		of, ok := originals[r.c.repoPath(d.Link)]
		switch {
		case !ok || of.Hasher != sha1Hasher || of.Hash == "":
			rp.Refused = "OMERO holds no SHA-1 of this file (imported with --skip checksum?), so the match cannot be proven"
		case of.Size >= 0 && of.Size != l.Size:
			rp.Refused = "the size OMERO recorded differs from the size at import"
		default:
			sum, err := sha1Of(d.MovedTo)
			r.rep.Hashed++
			switch {
			case err != nil:
				rp.Refused = "cannot read the candidate: " + err.Error()
			case !strings.EqualFold(sum, of.Hash):
				rp.Refused = "the candidate's SHA-1 differs from OMERO's: it is another file"
			}
		}
		if rp.Refused == "" && !r.opts.DryRun {
			fi, err := os.Stat(d.MovedTo)
			if err == nil {
				err = redirect.Repoint(r.c.d.ManagedRepo, d.Link, d.Target, d.MovedTo, false, l.Size)
			}
			if err != nil {
				rp.Refused = err.Error()
			} else {
				l.Target, l.ModTime = d.MovedTo, fi.ModTime()
				l.Dev, l.Ino = redirect.FileID(fi)
				if err := r.c.d.Store.RepointLink(ctx, uuid, l); err != nil {
					return nil, err
				}
				rp.Done = true
				r.c.log.WithField("order", uuid).WithField("link", d.Link).WithField("target", d.MovedTo).Info("link re-pointed to its moved file")
			}
		}
		r.rep.Repairs = append(r.rep.Repairs, rp)
		if !rp.Done {
			left = append(left, d)
		}
	}
	return left, nil
}
