package omero

import (
	"bufio"
	"bytes"
	"regexp"
	"strconv"
	"strings"
)

// Log is what the importer's log (the --errs file) says about an import, read from the lines the
// Java importer prints (ome/omero-blitz):
//   - the closing summary of LoggingImportMonitor.ImportSummary.report, printed after a failure too:
//     "N file(s) uploaded, N fileset(s)[, N plate(s)] created, N image(s) imported, N error(s) in
//     H:mm:ss.SSS", each count singular when it is 1, the plates only when some were created;
//   - ImportCandidates' "N file(s) parsed into G group(s) …" line: G is the number of filesets the
//     importer found and tries;
//   - the ErrorHandler lines "KIND: PATH" (FILE_EXCEPTION — also while candidates are scanned,
//     where the file is dropped and counted as an error while the run still ends 0 —,
//     INTERNAL_EXCEPTION for a fileset the server failed, UNREADABLE_FILE, MISSING_LIBRARY,
//     UNKNOWN_FORMAT), followed by the exception's first line.
type Log struct {
	// Summary is the last summary line as printed ("" when there is none); the counts are its.
	Summary                                 string
	Files, Filesets, Plates, Images, Errors int
	// Found is G of the "parsed into G group(s)" line, -1 when the log has none.
	Found int
	// Failed maps each path an error line names to what it says, in plain words.
	Failed map[string]string
}

var (
	summaryRE = regexp.MustCompile(`^(\d+) files? uploaded, (\d+) filesets?(?:, (\d+) plates?)? created, (\d+) images? imported, (\d+) errors? in (\d+:\d\d:\d\d\.\d\d\d)$`)
	parsedRE  = regexp.MustCompile(`(\d+) file\(s\) parsed into (\d+) group\(s\)`)
	errorRE   = regexp.MustCompile(`\b(FILE_EXCEPTION|INTERNAL_EXCEPTION|UNREADABLE_FILE|MISSING_LIBRARY|UNKNOWN_FORMAT): (/.*)$`)
	causeRE   = regexp.MustCompile(`^(?:Caused by: )?[A-Za-z_$][\w$]*(?:\.[\w$]+)+(?:: .*)?$`)
)

// errorKinds say in plain words what an ErrorHandler event means for its file.
var errorKinds = map[string]string{
	"FILE_EXCEPTION":     "the importer failed on it (FILE_EXCEPTION)",
	"INTERNAL_EXCEPTION": "the server failed to import it (INTERNAL_EXCEPTION)",
	"UNREADABLE_FILE":    "the importer could not read it (missing or not readable)",
	"MISSING_LIBRARY":    "the reader for its format needs a library that is missing (MISSING_LIBRARY)",
	"UNKNOWN_FORMAT":     "it is not in a format OMERO reads (UNKNOWN_FORMAT)",
}

// readLog reads the importer's log at path (at most errsScanMax bytes).
func readLog(path string) Log {
	return parseLog(readBounded(path, errsScanMax))
}

func parseLog(b []byte) Log {
	l := Log{Found: -1, Failed: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	pending := "" // the path of an error line whose exception line may follow
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		trimmed := strings.TrimSpace(line)
		if pending != "" {
			if causeRE.MatchString(trimmed) {
				l.Failed[pending] += ": " + trimmed
			}
			pending = ""
		}
		if m := summaryRE.FindStringSubmatch(trimmed); m != nil {
			l.Summary = trimmed
			l.Files, l.Filesets, l.Plates, l.Images, l.Errors = atoi(m[1]), atoi(m[2]), atoi(m[3]), atoi(m[4]), atoi(m[5])
			continue
		}
		if m := parsedRE.FindStringSubmatch(line); m != nil {
			l.Found = atoi(m[2])
			continue
		}
		if m := errorRE.FindStringSubmatch(line); m != nil {
			path := strings.TrimSpace(m[2])
			if _, seen := l.Failed[path]; !seen {
				l.Failed[path] = errorKinds[m[1]]
				pending = path
			}
		}
	}
	return l
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
