#!/usr/bin/env bash
# make bench: Go benchmarks of every package plus the harness that compares against reference
# tools measured in the same run. Our machines are noisy: each number is a median of several runs.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${BENCH_COUNT:-5}

section() { printf '\n== %s\n' "$*"; }

section "order queue: claim + finish, 8 workers, 5,000 orders (targets: >= 3,000/s PostgreSQL, >= 5,000/s SQLite)"
go test -run '^$' -bench 'ClaimFinish' -benchtime 1x -count "$COUNT" ./db | scripts/median.awk

section "runner: INSERT -> Import Started latency, end-to-end orders/s, overhead per order"
go test -run '^$' -bench 'Runner' -benchtime 1x -count "$COUNT" ./runner | scripts/median.awk

section "agent process: resident memory while draining 10,000 orders with 8 workers (target <= 100 MB, flat)"
go test -run '^$' -bench 'AgentMemory' -benchtime 1x -count 1 ./cmd/omero-adi | scripts/median.awk

section "watcher: rescan vs find, watch registration, drop -> order latency"
go test -run '^$' -bench 'Watcher|Scan|Watch|Drop' -benchtime 1x -count "$COUNT" ./watcher | scripts/median.awk
