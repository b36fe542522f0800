package redirect

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// tree is a fake import: a temp folder and its .processed twin holding the same files, and a
// ManagedRepository whose fileset folders link into the temp folder, as an ln_s import leaves them.
type tree struct {
	repo, tmp, processed string
}

func newTree(t *testing.T) *tree {
	t.Helper()
	base := t.TempDir()
	tr := &tree{
		repo:      filepath.Join(base, "ManagedRepository"),
		tmp:       filepath.Join(base, "OMERO_inplace", "run-1", "0"),
		processed: filepath.Join(base, "data", "g", ".processed", "order-1"),
	}
	for _, d := range []string{tr.repo, tr.tmp, tr.processed} {
		mkdir(t, d)
	}
	return tr
}

func mkdir(t *testing.T, d string) {
	t.Helper()
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, p, content string) {
	t.Helper()
	mkdir(t, filepath.Dir(p))
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// result writes rel with content into both the temp folder and .processed.
func (tr *tree) result(t *testing.T, rel, content string) {
	t.Helper()
	write(t, filepath.Join(tr.tmp, rel), content)
	write(t, filepath.Join(tr.processed, rel), content)
}

// link makes <repo>/<prefix>/<rel> point at target.
func (tr *tree) link(t *testing.T, prefix, rel, target string) string {
	t.Helper()
	l := filepath.Join(tr.repo, prefix, rel)
	mkdir(t, filepath.Dir(l))
	if err := os.Symlink(target, l); err != nil {
		t.Fatal(err)
	}
	return l
}

func readlink(t *testing.T, l string) string {
	t.Helper()
	target, err := os.Readlink(l)
	if err != nil {
		t.Fatal(err)
	}
	return target
}

const (
	prefixA = "alice_5/2024-01/15/10-30-00.123/"
	prefixB = "alice_5/2024-01/15/10-30-00.124/"
)

func TestRedirectNestedAndSeveralPrefixes(t *testing.T) {
	tr := newTree(t)
	rels := []string{"x.ome.tiff", "w.ome.zarr/.zgroup", "w.ome.zarr/0/0/0.0", "w.ome.zarr/0/1/0.0"}
	for i, rel := range rels {
		tr.result(t, rel, strings.Repeat("p", i+1))
	}
	var links []string
	links = append(links, tr.link(t, prefixA, "x.ome.tiff", filepath.Join(tr.tmp, "x.ome.tiff")))
	for _, rel := range rels[1:] {
		links = append(links, tr.link(t, prefixB, rel, filepath.Join(tr.tmp, rel)))
	}
	changed, err := Redirect(tr.repo, []string{prefixA, prefixB}, map[string]string{tr.tmp: tr.processed})
	if err != nil || changed != len(rels) {
		t.Fatalf("Redirect: %d changed, %v; want %d", changed, err, len(rels))
	}
	for i, l := range links {
		if got, want := readlink(t, l), filepath.Join(tr.processed, rels[i]); got != want {
			t.Errorf("%s -> %s, want %s", l, got, want)
		}
	}
	if changed, err := Redirect(tr.repo, []string{prefixA, prefixB}, map[string]string{tr.tmp: tr.processed}); err != nil || changed != 0 {
		t.Errorf("second Redirect: %d changed, %v; want 0, nil", changed, err)
	}
	// Removing the temp folder now breaks nothing.
	if err := os.RemoveAll(filepath.Dir(tr.tmp)); err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if _, err := os.Stat(l); err != nil {
			t.Errorf("link broken: %v", err)
		}
	}
}

func TestRedirectSeveralTempFolders(t *testing.T) {
	tr := newTree(t)
	tmp2 := filepath.Join(filepath.Dir(tr.tmp), "1")
	processed2 := filepath.Join(t.TempDir(), "other", ".processed", "order-1")
	write(t, filepath.Join(tr.tmp, "a.tiff"), "a")
	write(t, filepath.Join(tr.processed, "a.tiff"), "a")
	write(t, filepath.Join(tmp2, "a.tiff"), "bb")
	write(t, filepath.Join(processed2, "a.tiff"), "bb")
	l1 := tr.link(t, prefixA, "g/a.tiff", filepath.Join(tr.tmp, "a.tiff"))
	l2 := tr.link(t, prefixA, "other/a.tiff", filepath.Join(tmp2, "a.tiff"))
	changed, err := Redirect(tr.repo, []string{prefixA}, map[string]string{tr.tmp: tr.processed, tmp2: processed2})
	if err != nil || changed != 2 {
		t.Fatalf("Redirect: %d, %v", changed, err)
	}
	if got := readlink(t, l1); got != filepath.Join(tr.processed, "a.tiff") {
		t.Errorf("l1 -> %s", got)
	}
	if got := readlink(t, l2); got != filepath.Join(processed2, "a.tiff") {
		t.Errorf("l2 -> %s", got)
	}
}

func TestRedirectLeavesOtherLinksAlone(t *testing.T) {
	tr := newTree(t)
	tr.result(t, "in.tiff", "in")
	elsewhere := filepath.Join(t.TempDir(), "plain.tiff")
	write(t, elsewhere, "plain")
	sibling := filepath.Join(filepath.Dir(tr.tmp), "00", "x.tiff") // shares a name prefix with tmp
	write(t, sibling, "s")
	cases := map[string]string{
		"elsewhere.tiff":       elsewhere,
		"sibling.tiff":         sibling,
		"processed.tiff":       filepath.Join(tr.processed, "in.tiff"),
		"dangling.tiff":        "/nonexistent/file.tiff",
		"relative-other.tiff":  "../neighbour.tiff",
		"already/in-tmp.tiff":  filepath.Join(tr.tmp, "in.tiff"), // this one moves
		"tmp-parent-only.tiff": filepath.Dir(tr.tmp),             // the temp folder itself, not inside it
	}
	links := map[string]string{}
	for rel, target := range cases {
		links[rel] = tr.link(t, prefixA, rel, target)
	}
	write(t, filepath.Join(tr.repo, prefixA, "regular.tiff"), "not a link")
	changed, err := Redirect(tr.repo, []string{prefixA}, map[string]string{tr.tmp: tr.processed})
	if err != nil || changed != 1 {
		t.Fatalf("Redirect: %d changed, %v; want 1", changed, err)
	}
	for rel, target := range cases {
		want := target
		if rel == "already/in-tmp.tiff" {
			want = filepath.Join(tr.processed, "in.tiff")
		}
		if got := readlink(t, links[rel]); got != want {
			t.Errorf("%s -> %s, want %s", rel, got, want)
		}
	}
}

func TestRedirectRelativeLinkIntoTemp(t *testing.T) {
	tr := newTree(t)
	tr.result(t, "r.tiff", "rel")
	l := filepath.Join(tr.repo, prefixA, "r.tiff")
	mkdir(t, filepath.Dir(l))
	rel, err := filepath.Rel(filepath.Dir(l), filepath.Join(tr.tmp, "r.tiff"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(rel, l); err != nil {
		t.Fatal(err)
	}
	if changed, err := Redirect(tr.repo, []string{prefixA}, map[string]string{tr.tmp: tr.processed}); err != nil || changed != 1 {
		t.Fatalf("Redirect: %d, %v", changed, err)
	}
	if got := readlink(t, l); got != filepath.Join(tr.processed, "r.tiff") {
		t.Errorf("-> %s", got)
	}
}

// TestRedirectThroughSymlinkedTempRoot: the temp root is reached through a symlink, and the
// importer recorded the resolved path; such links are still recognised.
func TestRedirectThroughSymlinkedTempRoot(t *testing.T) {
	tr := newTree(t)
	tr.result(t, "s.tiff", "s")
	alias := filepath.Join(t.TempDir(), "inplace-alias")
	if err := os.Symlink(filepath.Dir(tr.tmp), alias); err != nil {
		t.Fatal(err)
	}
	l := tr.link(t, prefixA, "s.tiff", filepath.Join(tr.tmp, "s.tiff")) // resolved path
	aliasTmp := filepath.Join(alias, filepath.Base(tr.tmp))
	if changed, err := Redirect(tr.repo, []string{prefixA}, map[string]string{aliasTmp: tr.processed}); err != nil || changed != 1 {
		t.Fatalf("Redirect: %d, %v", changed, err)
	}
	if got := readlink(t, l); got != filepath.Join(tr.processed, "s.tiff") {
		t.Errorf("-> %s", got)
	}
}

func TestRedirectFailuresListLinks(t *testing.T) {
	tr := newTree(t)
	tr.result(t, "good.tiff", "good")
	write(t, filepath.Join(tr.tmp, "missing.tiff"), "only in tmp")
	write(t, filepath.Join(tr.tmp, "size.tiff"), "12345")
	write(t, filepath.Join(tr.processed, "size.tiff"), "123")
	write(t, filepath.Join(tr.tmp, "kind.ome.zarr", "0"), "dir in tmp")
	write(t, filepath.Join(tr.processed, "kind.ome.zarr"), "file in processed")
	good := tr.link(t, prefixA, "good.tiff", filepath.Join(tr.tmp, "good.tiff"))
	bad := map[string]string{
		tr.link(t, prefixA, "missing.tiff", filepath.Join(tr.tmp, "missing.tiff")):   "no such file",
		tr.link(t, prefixB, "sub/size.tiff", filepath.Join(tr.tmp, "size.tiff")):     "has 3 bytes, the current one 5",
		tr.link(t, prefixB, "kind.ome.zarr", filepath.Join(tr.tmp, "kind.ome.zarr")): "is a",
		tr.link(t, prefixB, "gone.tiff", filepath.Join(tr.tmp, "gone.tiff")):         "current target unreadable",
	}
	changed, err := Redirect(tr.repo, []string{prefixA, prefixB}, map[string]string{tr.tmp: tr.processed})
	if changed != 1 {
		t.Errorf("changed = %d, want 1 (the good link)", changed)
	}
	if !errors.Is(err, ErrIncomplete) {
		t.Fatalf("Redirect: %v, want ErrIncomplete", err)
	}
	var rerr *Error
	if !errors.As(err, &rerr) || len(rerr.Links) != len(bad) {
		t.Fatalf("error %#v, want %d links", err, len(bad))
	}
	msg := err.Error()
	for l, why := range bad {
		if !strings.Contains(msg, l+" -> ") {
			t.Errorf("error does not name %s:\n%s", l, msg)
		}
		if !strings.Contains(msg, why) {
			t.Errorf("error lacks %q:\n%s", why, msg)
		}
		if target := readlink(t, l); !strings.HasPrefix(target, tr.tmp) {
			t.Errorf("failed link %s was changed to %s", l, target)
		}
	}
	if got := readlink(t, good); got != filepath.Join(tr.processed, "good.tiff") {
		t.Errorf("good link -> %s", got)
	}
	if !strings.Contains(msg, "temp folder") || !strings.Contains(msg, "by hand") {
		t.Errorf("error does not say what to do:\n%s", msg)
	}
}

func TestRedirectErrorListIsBounded(t *testing.T) {
	var links []LinkError
	for i := 0; i < 25; i++ {
		links = append(links, LinkError{Link: fmt.Sprintf("/repo/l%d", i), Target: "/tmp/x", Err: errors.New("boom")})
	}
	msg := (&Error{Links: links}).Error()
	if !strings.Contains(msg, "25 link(s)") || !strings.Contains(msg, "and 5 more") || strings.Contains(msg, "/repo/l20 ") {
		t.Errorf("message:\n%s", msg)
	}
}

func TestRedirectMissingPrefix(t *testing.T) {
	tr := newTree(t)
	_, err := Redirect(tr.repo, []string{"nobody_1/2024-01/01/00-00-00.000"}, map[string]string{tr.tmp: tr.processed})
	if !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), "nobody_1") {
		t.Fatalf("Redirect: %v, want ErrIncomplete naming the prefix", err)
	}
}

func TestRedirectRejectsBadArguments(t *testing.T) {
	tr := newTree(t)
	ok := map[string]string{tr.tmp: tr.processed}
	for _, tc := range []struct {
		name     string
		repo     string
		prefixes []string
		dirs     map[string]string
		want     string
	}{
		{"relative repo", "ManagedRepository", []string{prefixA}, ok, "ManagedRepository"},
		{"no prefix", tr.repo, nil, ok, "no templatePrefix"},
		{"escaping prefix", tr.repo, []string{"../etc"}, ok, `"../etc"`},
		{"absolute prefix", tr.repo, []string{"/etc"}, ok, `"/etc"`},
		{"no dirs", tr.repo, []string{prefixA}, nil, "no temp folder"},
		{"relative temp", tr.repo, []string{prefixA}, map[string]string{"tmp": tr.processed}, `temp folder "tmp"`},
		{"root temp", tr.repo, []string{prefixA}, map[string]string{"/": tr.processed}, `temp folder "/"`},
		{"relative processed", tr.repo, []string{prefixA}, map[string]string{tr.tmp: "p"}, `processed folder "p"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Redirect(tc.repo, tc.prefixes, tc.dirs)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Redirect: %v, want ErrInvalid naming %s", err, tc.want)
			}
		})
	}
}

// TestRedirectIsAtomic reads every link while they are redirected: a link never disappears, and
// no temporary link is left behind.
func TestRedirectIsAtomic(t *testing.T) {
	tr := newTree(t)
	const n = 300
	var links []string
	for i := 0; i < n; i++ {
		rel := fmt.Sprintf("d%d/f%d.tiff", i%7, i)
		tr.result(t, rel, strings.Repeat("x", i))
		links = append(links, tr.link(t, prefixA, rel, filepath.Join(tr.tmp, rel)))
	}
	stop := make(chan struct{})
	var misses, reads atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				for _, l := range links {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := os.Stat(l); err != nil {
						misses.Add(1)
					}
					reads.Add(1)
				}
			}
		}()
	}
	changed, err := Redirect(tr.repo, []string{prefixA}, map[string]string{tr.tmp: tr.processed})
	close(stop)
	wg.Wait()
	if err != nil || changed != n {
		t.Fatalf("Redirect: %d, %v", changed, err)
	}
	if misses.Load() != 0 {
		t.Errorf("%d of %d reads found a link missing during the redirect", misses.Load(), reads.Load())
	}
	err = filepath.WalkDir(tr.repo, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ".redirect-") {
			t.Errorf("temporary link left: %s", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestRemoveTemp(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "OMERO_inplace")
	outside := filepath.Join(base, "precious")
	write(t, filepath.Join(outside, "keep.txt"), "keep")
	mkdir(t, root)
	if err := os.Symlink(outside, filepath.Join(root, "link-out")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(base, filepath.Join(root, "up")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, root, dir string
	}{
		{"outside", root, outside},
		{"the root itself", root, root},
		{"dot dot", root, root + "/../precious"},
		{"relative", root, "OMERO_inplace/x"},
		{"symlink below root", root, filepath.Join(root, "link-out")},
		{"through a symlink", root, filepath.Join(root, "up", "precious")},
		{"root is /", "/", outside},
		{"name prefix", root, root + "-other/x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := RemoveTemp(tc.root, tc.dir); !errors.Is(err, ErrRefused) {
				t.Fatalf("RemoveTemp(%q, %q): %v, want ErrRefused", tc.root, tc.dir, err)
			}
			if _, err := os.Stat(filepath.Join(outside, "keep.txt")); err != nil {
				t.Fatalf("outside file touched: %v", err)
			}
		})
	}
	run := filepath.Join(root, "run-1")
	write(t, filepath.Join(run, "0", "a.ome.zarr", "0", "0.0"), "x")
	if err := RemoveTemp(root, run); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(run); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp folder still there: %v", err)
	}
	if err := RemoveTemp(root, run); err != nil {
		t.Errorf("RemoveTemp of a missing folder: %v", err)
	}
}

// BenchmarkRedirect redirects 1000 links (a large fileset, e.g. an OME-Zarr) per iteration.
func BenchmarkRedirect(b *testing.B) {
	base := b.TempDir()
	repo, tmp, processed := filepath.Join(base, "repo"), filepath.Join(base, "tmp", "0"), filepath.Join(base, "processed")
	const n = 1000
	for i := 0; i < n; i++ {
		rel := fmt.Sprintf("x.ome.zarr/0/%d/0.%d", i/50, i)
		for _, d := range []string{tmp, processed} {
			p := filepath.Join(d, rel)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("chunk"), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	relink := func() {
		for i := 0; i < n; i++ {
			rel := fmt.Sprintf("x.ome.zarr/0/%d/0.%d", i/50, i)
			l := filepath.Join(repo, prefixA, rel)
			os.Remove(l)
			if err := os.MkdirAll(filepath.Dir(l), 0o755); err != nil {
				b.Fatal(err)
			}
			if err := os.Symlink(filepath.Join(tmp, rel), l); err != nil {
				b.Fatal(err)
			}
		}
	}
	for b.Loop() {
		b.StopTimer()
		relink()
		b.StartTimer()
		changed, err := Redirect(repo, []string{prefixA}, map[string]string{tmp: processed})
		if err != nil || changed != n {
			b.Fatalf("Redirect: %d, %v", changed, err)
		}
	}
}

// TestTargets lists where a fileset's links point: absolute, clean, sorted, relative links
// resolved against their folder; files that are not links are left out.
func TestTargets(t *testing.T) {
	tr := newTree(t)
	tr.result(t, "b.tif", "b")
	tr.result(t, "z/a.tif", "a")
	tr.link(t, prefixA, "b.tif", filepath.Join(tr.tmp, "b.tif"))
	rel, err := filepath.Rel(filepath.Join(tr.repo, prefixA, "sub"), filepath.Join(tr.tmp, "z", "a.tif"))
	if err != nil {
		t.Fatal(err)
	}
	tr.link(t, prefixA, "sub/a.tif", rel)
	write(t, filepath.Join(tr.repo, prefixA, "import.log"), "not a link")
	tr.link(t, prefixB, "other.tif", "/elsewhere/other.tif")

	got, err := Targets(tr.repo, prefixA)
	want := []string{filepath.Join(tr.tmp, "b.tif"), filepath.Join(tr.tmp, "z", "a.tif")}
	if err != nil || strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("Targets = %q, %v; want %q", got, err, want)
	}
	for _, tc := range []struct {
		name, repo, prefix string
		want               error
	}{
		{"missing prefix", tr.repo, "nobody_1/2024-01/01/00-00-00.000/", fs.ErrNotExist},
		{"escaping prefix", tr.repo, "../etc", ErrInvalid},
		{"relative repo", "ManagedRepository", prefixA, ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Targets(tc.repo, tc.prefix); !errors.Is(err, tc.want) {
				t.Fatalf("Targets: %v, want %v", err, tc.want)
			}
		})
	}
}
