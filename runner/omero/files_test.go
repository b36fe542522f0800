package omero

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/omero-adi/omero-adi/order"
)

// OriginalFiles reads each imported file's size and SHA-1 as the import recorded them, paged (the
// page size is lowered so that two pages are read), and only in the session's group.
func TestOriginalFiles(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	s := f.login(t, "order-1")
	data := files(t, "a.tif", "b,with comma.tif")
	res, err := f.c.Import(ctx, s, ImportRequest{OrderUUID: "order-1", Target: order.Target{Kind: "Dataset", ID: 151}, Paths: []string{data}})
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for _, fs := range res.Filesets {
		ids = append(ids, fs.ID)
	}
	got, starts, err := f.c.OriginalFiles(ctx, s, ids)
	if err != nil || starts != 1 || len(got) != 2 {
		t.Fatalf("OriginalFiles = %+v, %d starts, %v; want 2 files in one start", got, starts, err)
	}
	st := f.d.State(t)
	byPath := map[string]OriginalFile{}
	for _, of := range got {
		byPath[of.Path] = of
	}
	for _, fs := range st.Filesets {
		for _, rp := range fs.RepoPaths {
			name := rp[strings.LastIndex(rp, "/")+1:]
			sum := sha1.Sum([]byte(name)) // files() writes each file's name as its content
			of := byPath[rp]
			if of.Size != int64(len(name)) || of.Hasher != "SHA1-160" || of.Hash != hex.EncodeToString(sum[:]) {
				t.Errorf("original file %s = %+v, want %d bytes, SHA1-160 %x", rp, of, len(name), sum)
			}
		}
	}
	other, err := f.c.Login(ctx, "order-2", "carol", "Other")
	if err != nil {
		t.Fatal(err)
	}
	defer f.c.Close(ctx, other)
	if got, _, err := f.c.OriginalFiles(ctx, other, ids); err != nil || len(got) != 0 {
		t.Errorf("another group's session read %+v, %v; want nothing", got, err)
	}
	defer func(n int) { filesPage = n }(filesPage)
	filesPage = 1
	if paged, starts, err := f.c.OriginalFiles(ctx, s, ids); err != nil || starts != 3 || len(paged) != 2 || paged[1] != got[1] {
		t.Errorf("OriginalFiles in pages of 1 = %+v, %d starts, %v; want the same 2 files in 3 starts", paged, starts, err)
	}
	if _, err := f.c.InPlaceFiles(ctx, s, 0, 10); err == nil || !strings.Contains(err.Error(), "not an admin") {
		t.Errorf("InPlaceFiles (hql --all) as alice: %v, want refused: not an admin", err)
	}
	if _, _, err := f.c.OriginalFiles(ctx, s, []int64{0}); err == nil {
		t.Error("fileset id 0 accepted")
	}
}

func TestParseFiles(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		want      []OriginalFile
		bad       bool
	}{
		// As omero-py's PlainStyle prints them: csv rows ending "\r\n", joined with "\n".
		{name: "no rows", out: "\n"},
		{name: "nulls", out: "0,None,None,None,u_1/x/a.tif\r\n\n", want: []OriginalFile{{Path: "u_1/x/a.tif", Size: -1}}},
		{name: "comma and quote in path", out: "0,5,SHA1-160,ab,\"u_1/x/a,b.tif\"\r\n\n1,6,File-Size-64,cd,\"u_1/x/c\"\"d.tif\"\r\n\n",
			want: []OriginalFile{{Path: "u_1/x/a,b.tif", Size: 5, Hasher: "SHA1-160", Hash: "ab"}, {Path: `u_1/x/c"d.tif`, Size: 6, Hasher: "File-Size-64", Hash: "cd"}}},
		{name: "plain newlines", out: "0,None,None,None,u_1/x/a.tif\n", want: []OriginalFile{{Path: "u_1/x/a.tif", Size: -1}}},
		{name: "unquoted comma", out: "0,5,SHA1-160,ab,u_1/x/a,b.tif\r\n\n", bad: true},
		{name: "no index", out: "x,5,SHA1-160,ab,p\r\n\n", bad: true},
		{name: "short row", out: "0,5,SHA1-160\n", bad: true},
		{name: "bad size", out: "0,five,SHA1-160,ab,p\n", bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseFiles(tc.out)
			if (err != nil) != tc.bad {
				t.Fatalf("parseFiles error %v, want error %v", err, tc.bad)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("parseFiles = %+v, want %+v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("row %d = %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}
