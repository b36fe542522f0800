package runner

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/runner/child"
	"github.com/omero-adi/omero-adi/runner/omero"
)

// Registrar is what the runner needs to register OME-Zarr in place (omero.Client implements it).
// An Importer that is no Registrar cannot take orders whose Zarrs are to be registered.
type Registrar interface {
	RegisterArgs(s *omero.Session, req omero.RegisterRequest, zarr string) []string
	Register(ctx context.Context, s *omero.Session, req omero.RegisterRequest) (omero.RegisterResult, error)
	PrepareImages(ctx context.Context, s *omero.Session, p omero.ImagesPrep) (omero.PreparedImages, error)
	ZarrPluginVersion() string
}

var _ Registrar = (*omero.Client)(nil)

// zarrMode is what the order does with its Zarrs: its rule's zarr setting (by the order's
// source), else the agent's (omero.zarr).
func (r *Runner) zarrMode(o db.Order) order.ZarrMode {
	if m, ok := r.cfg.ZarrRules[o.Source]; ok && m != "" {
		return m
	}
	if r.cfg.Zarr == "" {
		return order.ZarrRegister
	}
	return r.cfg.Zarr
}

// zarrPlan decides, per path, whether the order registers Zarrs (order.PlanZarrs): it returns the
// Zarr folders to register (nil: the order imports as usual) or the failure of an order that
// cannot run.
func (r *Runner) zarrPlan(j *job) ([]string, error) {
	setting := "omero.zarr"
	if _, ok := r.cfg.ZarrRules[j.Order.Source]; ok {
		setting = "rule " + strconv.Quote(j.Order.Source)
	}
	zarrs, err := order.PlanZarrs(order.ZarrOrder{Files: j.Files, Target: j.Target, Preprocessing: j.Order.Preprocessing != nil,
		Mode: r.zarrMode(j.Order), Setting: setting, Tool: r.zarrTool()})
	if err == nil && zarrs != nil && r.reg == nil {
		return nil, failf("files: %s is an OME-Zarr, and this agent's importer cannot register Zarrs.", zarrs[0])
	}
	return zarrs, err
}

// zarrTool names the registering tool with its version: "omero-cli-zarr 0.8.0".
func (r *Runner) zarrTool() string {
	if r.reg != nil {
		if v := r.reg.ZarrPluginVersion(); v != "" {
			return "omero-cli-zarr " + v
		}
	}
	return "omero-cli-zarr"
}

// zarrDryRun is the dry run of a registration: the `omero zarr import` of each Zarr.
func (r *Runner) zarrDryRun(j *job, zarrs []string) string {
	sess := previewSession(j)
	req := omero.RegisterRequest{OrderUUID: j.Order.UUID, Target: j.Target, Zarrs: zarrs}
	var cmds []string
	for _, z := range zarrs {
		cmds = append(cmds, child.Quote(r.reg.RegisterArgs(sess, req, z)))
	}
	return dryRunText(j, cmds)
}

// register registers the order's Zarrs in place: log in, one `omero zarr import` run for every
// Zarr, then the annotation batch (each Image's MapAnnotation and its ExternalInfo read back) and
// the batch of key-value pairs: at most four CLI starts, as an import. No file is linked or copied.
func (r *Runner) register(ctx context.Context, j *job, zarrs []string) (string, error) {
	o := j.Order
	sess, err := r.imp.Login(ctx, o.UUID, o.User, o.Group)
	if err != nil {
		return "", describeOMERO("log in to OMERO as user "+strconv.Quote(o.User)+" in group "+strconv.Quote(o.Group), err)
	}
	defer r.imp.Close(context.WithoutCancel(ctx), sess)
	j.out.person = sess.Person // the requester's name and address for the notifier
	what := fmt.Sprintf("register %s into %s", plural(len(zarrs), "OME-Zarr"), j.Target)
	res, err := r.reg.Register(ctx, sess, omero.RegisterRequest{OrderUUID: o.UUID, Target: j.Target, Zarrs: zarrs})
	ids := db.Result{Images: res.Images()}
	if len(ids.Images) > 0 {
		if err := r.saveResult(ctx, j, ids); err != nil {
			return "", err
		}
	}
	if err != nil {
		ferr := describeOMERO(what, err)
		if len(ids.Images) > 0 {
			ferr = failf("%v %s reached OMERO before the failure: remove them in OMERO before a retry, which registers every Zarr again.", ferr, objectList(ids))
		}
		return "", ferr
	}
	for _, z := range res.Zarrs {
		if z.Kind == "Plate" {
			return "", &failure{imported: len(ids.Images) > 0, desc: fmt.Sprintf("%s: %s is an OME-Zarr plate (HCS), which %s does not register "+
				"(\"Plate import not yet supported\"): nothing was created from it%s", what, z.Path, r.zarrTool(), reachedNote(ids))}
		}
	}
	p := omero.ImagesPrep{Images: ids.Images, NS: r.cfg.AnnotationNamespace}
	for _, id := range ids.Images {
		p.Targets = append(p.Targets, "Image:"+strconv.FormatInt(id, 10))
	}
	for _, z := range res.Zarrs {
		if !z.Linked && j.Target.Name != "" {
			// As omero import -T Dataset:name:NAME, a missing Dataset is created.
			p.NewDataset, p.Unlinked = j.Target.Name, append(p.Unlinked, z.Images...)
		}
	}
	prep, perr := r.reg.PrepareImages(ctx, sess, p)
	w := omero.Write{Values: map[string][][2]string{}}
	stamp := time.Now().UTC().Format("2006-01-02 15:04:05")
	var missing, unconfirmed, unlinked []string
	for _, z := range res.Zarrs {
		kv := r.keyValues(j, j.origin(z.Path), nil, stamp)
		for i, id := range z.Images {
			t := "Image:" + strconv.FormatInt(id, 10)
			if ann, ok := prep.Annotations[t]; ok {
				w.Values[ann] = kv
			} else {
				missing = append(missing, t)
			}
			// The lsid names the image's multiscales: the Zarr, or a series below it.
			want := z.Path
			got, ok := prep.ExtInfo[id]
			ok = ok && got.EntityType == omero.ZarrEntityType && filepath.IsAbs(got.Lsid) && order.Within(z.Path, filepath.Clean(got.Lsid))
			if i < len(z.Lsids) {
				want = z.Lsids[i]
				ok = ok && got.Lsid == want
			}
			if !ok {
				unconfirmed = append(unconfirmed, fmt.Sprintf("%s (ExternalInfo %q at %q, want %q at %q)", t, got.EntityType, got.Lsid, omero.ZarrEntityType, want))
			}
		}
		if !z.Linked && prep.Dataset == 0 {
			unlinked = append(unlinked, z.Path)
		}
	}
	if len(missing) > 0 {
		r.event(ctx, j, fmt.Sprintf("annotation of %s failed: %v", strings.Join(missing, ", "), perr))
	}
	if err := r.imp.Finish(ctx, sess, w); err != nil {
		r.event(ctx, j, fmt.Sprintf("writing the annotations failed: %v", err))
	}
	into := j.Target.String()
	if prep.Dataset != 0 {
		into += fmt.Sprintf(" (created: Dataset %d)", prep.Dataset)
	}
	done := fmt.Sprintf("registered %s from %s into %s with %s", plural(len(ids.Images), "image"), plural(len(zarrs), "OME-Zarr"), into, r.zarrTool())
	switch {
	case len(unconfirmed) > 0:
		detail := ""
		if perr != nil {
			detail = fmt.Sprintf(" (%v)", perr)
		}
		return "", &failure{imported: true, desc: fmt.Sprintf("%s (%s), but reading their ExternalInfo back did not confirm %s%s: "+
			"the server reads a registered image's pixels through it; check the images in OMERO", done, objectList(ids), strings.Join(unconfirmed, ", "), detail)}
	case len(unlinked) > 0:
		detail := ""
		if perr != nil && p.NewDataset != "" {
			detail = fmt.Sprintf(", and creating it failed (%v)", perr)
		}
		return "", &failure{imported: true, desc: fmt.Sprintf("%s (%s), but %s linked them to no %s (\"Target not found\")%s: they are orphaned images of user %q; "+
			"link them to the Dataset in OMERO", done, objectList(ids), r.zarrTool(), j.Target, detail, o.User)}
	}
	return done + " (" + objectList(ids) + ")", nil
}

func reachedNote(ids db.Result) string {
	if len(ids.Images) == 0 {
		return ""
	}
	return fmt.Sprintf("; %s of the order's other Zarrs reached OMERO", objectList(ids))
}

// origin is the order's file, as given, that names the Zarr at root (resolved): the file itself
// when it is the Zarr, else its part down to the Zarr's folder.
func (j *job) origin(root string) string {
	for _, f := range j.Files {
		if !order.Within(root, f.Real) {
			continue
		}
		below := strings.TrimPrefix(f.Real, root)
		if strings.HasSuffix(f.Path, below) {
			return strings.TrimSuffix(f.Path, below)
		}
	}
	return root
}
