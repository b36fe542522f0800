package convtest

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// lastJSON runs argv and decodes the last non-empty stdout line.
func lastJSON(t *testing.T, argv ...string) []map[string]any {
	t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).Output()
	if err != nil {
		t.Fatalf("%v: %v", argv, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var res []map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("last line %q: %v", lines[len(lines)-1], err)
	}
	return res
}

func TestBinary(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "a.lif")
	if err := os.WriteFile(in, []byte("pixels"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, alt := filepath.Join(dir, "out"), filepath.Join(dir, "alt")
	for _, d := range []string{out, alt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	res := lastJSON(t, Binary(t), "--inputfile", in, "--results", "2", "--keyvalues", "object", "--x", "y",
		"--outputfolder", out, "--altoutputfolder", alt)
	if len(res) != 2 || res[1]["full_path"] != filepath.Join(out, "a_1.ome.tiff") || res[1]["alt_path"] != filepath.Join(alt, "a_1.ome.tiff") {
		t.Fatalf("results %v", res)
	}
	kv, _ := res[0]["keyvalues"].(map[string]any)
	if kv["param_x"] != "y" || kv["source"] != "a.lif" {
		t.Errorf("keyvalues %v", res[0]["keyvalues"])
	}
	b, err := os.ReadFile(filepath.Join(alt, "a_1.ome.tiff"))
	if err != nil || string(b) != "pixels" {
		t.Errorf("alt copy %q, %v", b, err)
	}
}

func TestImage(t *testing.T) {
	image := Image(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "b.lif"), []byte("b"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "out"), 0o755); err != nil {
		t.Fatal(err)
	}
	argv := append([]string{"podman", "run", "--rm"}, PodmanArgs()...)
	argv = append(argv, "-v", dir+":/data", image, "--inputfile", "/data/b.lif", "--nested", "yes", "--outputfolder", "/data/out")
	res := lastJSON(t, argv...)
	if len(res) != 1 || res[0]["full_path"] != "/data/out/b.ome.zarr" {
		t.Fatalf("results %v", res)
	}
	if _, err := os.Stat(filepath.Join(dir, "out", "b.ome.zarr", "0", "0", "0.0")); err != nil {
		t.Error(err)
	}
	if Image(t) != image {
		t.Error("Image built twice")
	}
}
