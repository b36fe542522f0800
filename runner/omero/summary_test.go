package omero

import (
	"reflect"
	"testing"
)

// The lines are as the Java importer prints them (ome/omero-blitz LoggingImportMonitor
// ImportSummary.report and entityCountToString, ImportCandidates, util.ErrorHandler with the
// logback pattern of examples/logback-cli.xml).
func TestParseLog(t *testing.T) {
	const pre = "2026-12-03 12:00:00,123 ERROR [     ome.formats.importer.cli.ErrorHandler] (      main) "
	for _, tc := range []struct {
		name, log string
		want      Log
	}{
		{"empty", "", Log{Found: -1, Failed: map[string]string{}}},
		{"no summary", "2026-12-03 12:00:00,000 INFO  [importer] No imports due to errors!\n",
			Log{Found: -1, Failed: map[string]string{}}},
		{"singular", "\n==> Summary\n1 file uploaded, 1 fileset created, 1 image imported, 0 errors in 0:00:05.123\n",
			Log{Summary: "1 file uploaded, 1 fileset created, 1 image imported, 0 errors in 0:00:05.123",
				Files: 1, Filesets: 1, Images: 1, Found: -1, Failed: map[string]string{}}},
		{"plates", "\n==> Summary\n4 files uploaded, 2 filesets, 1 plate created, 7 images imported, 1 error in 12:03:00.001\n",
			Log{Summary: "4 files uploaded, 2 filesets, 1 plate created, 7 images imported, 1 error in 12:03:00.001",
				Files: 4, Filesets: 2, Plates: 1, Images: 7, Errors: 1, Found: -1, Failed: map[string]string{}}},
		{"the last summary counts", "==> Summary\n0 files uploaded, 0 filesets created, 0 images imported, 0 errors in 0:00:00.001\n" +
			"==> Summary\n3 files uploaded, 2 filesets created, 5 images imported, 0 errors in 0:00:03.000\n",
			Log{Summary: "3 files uploaded, 2 filesets created, 5 images imported, 0 errors in 0:00:03.000",
				Files: 3, Filesets: 2, Images: 5, Found: -1, Failed: map[string]string{}}},
		{"text the importer never prints", "1 files uploaded, 1 fileset created, 1 images imported, 0 errors in 00:00:01.2\n",
			Log{Found: -1, Failed: map[string]string{}}},
		{"found and failed",
			"2026-12-03 12:00:00,001 INFO  [ ome.formats.importer.ImportCandidates] (      main) 3 file(s) parsed into 2 group(s) with 3 call(s) to setId in 12ms. (15ms total) [0 unknowns]\n" +
				pre + "FILE_EXCEPTION: /data/g/b.tif\n" +
				"loci.formats.FormatException: bad header\n\tat loci.formats.in.TiffReader.initFile(TiffReader.java:1)\n" +
				pre + "INTERNAL_EXCEPTION: /data/g/c,d.tif\n" +
				"java.lang.RuntimeException: Failure response on import!\nCategory: ::omero::grid::ImportRequest\n",
			Log{Found: 2, Failed: map[string]string{
				"/data/g/b.tif":   "the importer failed on it (FILE_EXCEPTION): loci.formats.FormatException: bad header",
				"/data/g/c,d.tif": "the server failed to import it (INTERNAL_EXCEPTION): java.lang.RuntimeException: Failure response on import!",
			}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseLog([]byte(tc.log)); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("parseLog =\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

func TestParseEntries(t *testing.T) {
	got, err := parseEntries([]string{"0,55,data/g/a.tif", "1,55,data/g/a.tif.log", "", `0,56,"data/g/c,d.tif"`})
	want := map[int64][]string{55: {"/data/g/a.tif", "/data/g/a.tif.log"}, 56: {"/data/g/c,d.tif"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("parseEntries = %v, %v; want %v", got, err, want)
	}
	for _, bad := range []string{"alice_5/2026-12/03/", "0,x,data/a.tif", "0,55"} {
		if _, err := parseEntries([]string{bad}); err == nil {
			t.Errorf("parseEntries(%q) accepted it", bad)
		}
	}
}

func TestClientPath(t *testing.T) {
	for in, want := range map[string]string{
		"/data/g/a.tif":              "/data/g/a.tif",
		"/data/g/12:30 \"x\"|y?.tif": "/data/g/12;30 'x'!y%.tif",
		"/data/CON/con.txt":          "/data/CON_/_con.txt",
		"/data/$RECYCLE/a\tb":        "/data/_$RECYCLE/a_b",
		"/data/COM10.tif":            "/data/COM10.tif",
	} {
		if got := ClientPath(in); got != want {
			t.Errorf("ClientPath(%q) = %q, want %q", in, got, want)
		}
	}
}
