package watcher

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func statSig(t *testing.T, path string) (uint64, int64, int64) {
	t.Helper()
	var s unix.Stat_t
	if err := unix.Lstat(path, &s); err != nil {
		t.Fatal(err)
	}
	return fileSig(s.Size, mtimeOf(&s)), s.Size, mtimeOf(&s)
}

func TestFileFingerprint(t *testing.T) {
	dir := t.TempDir()
	buf := make([]byte, hashChunk)
	tests := []struct {
		name string
		size int
	}{
		{"tiny", 10},
		{"one chunk", hashChunk},
		{"head and part of a tail", hashChunk + 1000},
		{"head and tail", 1 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := dir + "/" + strconv.Itoa(tt.size)
			data := make([]byte, tt.size)
			for i := range data {
				data[i] = byte(i * 31)
			}
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			sig, size, mtime := statSig(t, path)
			got, err := fileFingerprint(path, sig, buf)
			if err != nil {
				t.Fatal(err)
			}
			// the contract: size, mtime, and sha256 of the first 64 KiB and of the last 64 KiB
			// not already hashed
			h := sha256.New()
			h.Write(data[:min(len(data), hashChunk)])
			if len(data) > hashChunk {
				h.Write(data[max(len(data)-hashChunk, hashChunk):])
			}
			want := strconv.FormatInt(size, 10) + ":" + strconv.FormatInt(mtime, 10) + ":" + hex.EncodeToString(h.Sum(nil)[:16])
			if got != want {
				t.Fatalf("fingerprint %s, want %s", got, want)
			}
			if _, err := fileFingerprint(path, sig^4, buf); !errors.Is(err, errChanged) {
				t.Fatalf("fingerprint with a stale signature: %v, want errChanged", err)
			}
		})
	}

	// the middle of a big file is not hashed; its tail is
	big := make([]byte, 1<<20)
	mtime := time.Now().Add(-time.Minute)
	write := func(name string, mutate func([]byte)) string {
		b := append([]byte(nil), big...)
		mutate(b)
		p := dir + "/" + name
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		sig, _, _ := statSig(t, p)
		fp, err := fileFingerprint(p, sig, buf)
		if err != nil {
			t.Fatal(err)
		}
		return fp
	}
	base := write("base", func([]byte) {})
	if fp := write("middle", func(b []byte) { b[len(b)/2] = 1 }); fp != base {
		t.Fatalf("a change in the middle changed the fingerprint: %s vs %s", fp, base)
	}
	if fp := write("tail", func(b []byte) { b[len(b)-1] = 1 }); fp == base {
		t.Fatal("a change in the tail kept the fingerprint")
	}
	if fp := write("head", func(b []byte) { b[0] = 1 }); fp == base {
		t.Fatal("a change in the head kept the fingerprint")
	}
}

func TestFolderFingerprintSurvivesRename(t *testing.T) {
	data := t.TempDir()
	set := compile(t, data, folderRule(data, time.Second, "done"))
	for _, f := range []string{"a.tif", "b/c.tif", "b/d/e.tif"} {
		writeFile(t, data+"/plates/p1/"+f, 100)
	}
	writeFile(t, data+"/plates/p1/done", 1)
	walk := func(unit string) ([]string, string, bool) {
		m, ok, why := set.Match(unit)
		if !ok {
			t.Fatalf("match %s: %s", unit, why)
		}
		fw, err := walkUnit(newDirReader(), m)
		if err != nil {
			t.Fatal(err)
		}
		return fw.files, fw.fp, fw.marker
	}
	files, fp, marker := walk(data + "/plates/p1")
	if len(files) != 3 || !marker || files[0] != data+"/plates/p1/a.tif" || files[2] != data+"/plates/p1/b/d/e.tif" {
		t.Fatalf("files %v marker %v", files, marker)
	}
	if err := os.Rename(data+"/plates/p1", data+"/plates/p2"); err != nil {
		t.Fatal(err)
	}
	files2, fp2, _ := walk(data + "/plates/p2")
	if fp2 != fp || files2[0] != data+"/plates/p2/a.tif" {
		t.Fatalf("after rename: fingerprint %s (was %s), files %v", fp2, fp, files2)
	}
	writeFile(t, data+"/plates/p2/b/c.tif", 101)
	if _, fp3, _ := walk(data + "/plates/p2"); fp3 == fp {
		t.Fatal("a changed file kept the folder fingerprint")
	}
}
