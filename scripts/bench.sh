#!/usr/bin/env bash
# make bench: Go benchmarks of every package plus the harness that compares against reference
# tools measured in the same run. Our machines are noisy: each number is a median of several runs.
# BENCH_COUNT (5) runs per Go benchmark; the watcher part also reads BENCH_TREE, BENCH_SCAN_RUNS (7:
# rescan and start scan), BENCH_RSS_RUNS (3), BENCH_IDLE (60s) and BENCH_DROPS (20).
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${BENCH_COUNT:-5}

section() { printf '\n== %s\n' "$*"; }

section "order queue: claim + finish, 8 workers, 5,000 orders (targets: >= 3,000/s PostgreSQL, >= 5,000/s SQLite)"
go test -run '^$' -bench 'ClaimFinish' -benchtime 5000x -count "$COUNT" ./db | scripts/median.awk

section "runner: omero CLI starts per order, through the double: 1 file, 10 files, a 384-image plate, an OME-Zarr registered, a partial order of 3 files and its retry, each also with notifications on (-notify) (target <= 4 each; before: 7, 25, 775)"
go test -run '^$' -bench 'CLIStarts' -benchtime 1x -count "$COUNT" ./runner | scripts/median.awk

section "runner: INSERT -> Import Started latency, end-to-end orders/s, overhead per order"
go test -run '^$' -bench 'Runner(PickupLatency|EndToEnd|Overhead)' -benchtime 1x -count "$COUNT" ./runner | scripts/median.awk

section "notify: final stage -> mail accepted by a real SMTP server (python3-aiosmtpd), digest off (target: median <= 1 s)"
go test -run '^$' -bench 'FinishToMail' -benchtime 1x -count "$COUNT" ./notify | scripts/median.awk

section "runner: orders/s through the double with notifications off and on (mails sent meanwhile), alternated (target: on within 5 % of off, ratio of medians)"
go test -run '^$' -bench 'RunnerNotify' -benchtime 1x -count "$COUNT" -timeout 60m ./runner | scripts/median.awk | tee /dev/stderr |
	awk '$1 == "BenchmarkRunnerNotify" && $3 == "off-orders/s" { off = $2 } $1 == "BenchmarkRunnerNotify" && $3 == "on-orders/s" { on = $2 }
	END { if (off > 0) printf "on/off orders/s: %.3f (target >= 0.95: %s)\n", on / off, (on / off >= 0.95 ? "ok" : "MISSED") }'

section "status page: 100,000 orders in PostgreSQL, median server time (targets: My orders and /api/orders <= 50 ms, queue <= 100 ms; plans printed); 200 open event streams at idle (target < 5 %cpu)"
go test -run '^$' -bench 'StatusPage' -benchtime 1x -count 1 ./web | scripts/median.awk

section "process guard: cost of starting a program under the guard vs plainly (/bin/true; the omero CLI itself takes seconds)"
go test -run '^$' -bench 'Start' -benchtime 200x -count "$COUNT" ./runner/guard | scripts/median.awk

section "agent process: resident memory while draining 10,000 orders with 8 workers (target <= 100 MB, flat)"
go test -run '^$' -bench 'AgentMemory' -benchtime 1x -count 1 ./cmd/omero-adi | scripts/median.awk

# The watcher's numbers, on a tree of 200,000 files in 20,000 folders built once and kept at
# $BENCH_TREE (delete it to rebuild; the orders database cached next to it goes with it).
TREE=${BENCH_TREE:-${TMPDIR:-/tmp}/omero-adi-bench-tree}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# record runs a command, shows its output and keeps its "summary:" lines for the table at the end.
record() {
	"$@" | tee "$work/out"
	grep '^summary:' "$work/out" >>"$work/summary" || true
}
[ -x bin/omero-adi ] || make build
go build -o "$work/benchtree" ./internal/bench/benchtree

section "watcher: the benchmark tree ($TREE, built when missing, about a minute)"
"$work/benchtree" build -dir "$TREE"

section "watcher: full rescan of the unchanged tree vs find -printf '%s %T@ %p\n' on it, warm cache (target <= 1.3x find)"
record "$work/benchtree" rescan -dir "$TREE" -runs "${BENCH_SCAN_RUNS:-7}"

section "watcher: start scan (in process, watches included) and 'omero-adi scan' of the tree with no unit settled vs find -printf, alternated, warm cache (target <= 1.5x find; no file opened)"
record "$work/benchtree" startscan -bin bin/omero-adi -dir "$TREE" -runs "${BENCH_SCAN_RUNS:-7}"

section "watcher: event latency and drop -> order in front of a database answering in 2 s per call (in process)"
record "$work/benchtree" slowsink -delay 2s

section "watcher: registering inotify watches on 20,000 folders (target < 1 s); drop -> settled in process (settle 1 s)"
ADI_BENCH_WATCH_FOLDERS=20000 go test -run '^$' -bench 'WatchRegistration|DropToSettled' -benchtime 1x -count "$COUNT" ./watcher |
	scripts/median.awk | tee "$work/out"
awk -v count="$COUNT" '$1 == "BenchmarkWatchRegistration" && $3 == "ns/op" {
	ms = $2 / 1e6
	printf "summary: %-52s %-16s target %-10s %-6s (%s)\n", "inotify watch registration, 20,000 folders", sprintf("%.0f ms", ms),
		"< 1000 ms", (ms < 1000 ? "ok" : "MISSED"), sprintf("median of %s runs; 20,201 watches: folders, top folders, root", count)
}' "$work/out" | tee -a "$work/summary"

section "watcher: peak memory of 'omero-adi scan' on the tree, empty SQLite database (target <= 150 MB)"
mkdir -p "$work/scan"
cat >"$work/scan/settings.toml" <<EOF
ingest_tracking_db = "sqlite:///$work/scan/adi.db"
base_dir = "$(dirname "$TREE")"
log_dir = "$work/scan/log"
listen = ""
[groups.Bench]
roots = ["$(dirname "$TREE")"]
[[rules]]
name = "bench"
group = "Bench"
path = "$TREE"
user = "bench"
include = ["**/*.tif"]
settle = "1s"
destination = "Dataset:1"
EOF
record "$work/benchtree" rss -runs "${BENCH_RSS_RUNS:-3}" -target-mb 150 -name "peak RSS of omero-adi scan, 200,000 files" -- \
	bin/omero-adi --config "$work/scan/settings.toml" scan

section "watcher: the agent (omero-adi run --role watcher, SQLite) on the tree: peak RSS (target <= 60 MB on the ordered tree), drops during the start scan (target <= settle + 1 s), idle CPU over ${BENCH_IDLE:-60s} (target < 1 %), drop -> order latency (target <= settle + 250 ms)"
record "$work/benchtree" agent -bin bin/omero-adi -dir "$TREE" -idle "${BENCH_IDLE:-60s}" -drops "${BENCH_DROPS:-20}"

section "integrity: a check of 200,000 recorded links (one per file of the tree, in <tree>.links, built once) without hashing vs find -L over the links, warm cache (target <= 1.5x); peak heap with 2,000 vs 20,000 orders (flat); CPU of a check paced at max_stat_per_s (target < 1 %)"
record "$work/benchtree" integrity -dir "$TREE" -runs "${BENCH_SCAN_RUNS:-7}"

section "watcher summary"
cat "$work/summary"
