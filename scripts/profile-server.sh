#!/usr/bin/env bash
# Where a Tessera server's CPU goes under closed-loop load: samples the
# server's process with perf (cpu-clock, DWARF call graphs) while
# `tessera-bench single` runs, from the end of its warm-up for `seconds`,
# and prints its samples by thread and layer (scripts/profile-layers.py).
# The server's start (its first touch of memory, the report log's queue)
# and the warm-up are left out: they are not what a cycle costs. Needs perf
# (Debian: linux-perf) and a release build:
# cargo build --release -p tessera-cli -p tessera-bench.
# Usage: bash scripts/profile-server.sh [seconds] [clients] [bench options]  > profile.md
# (bench options as `tessera-bench single` takes them, e.g. --signed)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-6}"
clients="${2:-32}"
shift $(( $# < 2 ? $# : 2 ))
warmup=2
work="$(mktemp -d)"
bench=""
trap '[ -n "$bench" ] && kill "$bench" 2>/dev/null; rm -rf "$work"' EXIT
# The bench measures a little longer than perf samples, so that every
# sample falls in its measured part.
target/release/tessera-bench single --seconds "$((seconds + 2))" --warmup-s "$warmup" \
  --clients "$clients" --no-progress "$@" > "$work/bench.md" 2> "$work/bench.log" &
bench=$!
# The server is the bench's child `tessera server` (the set-up commands
# before it are children named `tessera` too).
pid=""
for _ in $(seq 1 300); do
  pid="$(pgrep -P "$bench" -f '/tessera server ' | head -n 1 || true)"
  [ -n "$pid" ] && break
  kill -0 "$bench" 2>/dev/null || { cat "$work/bench.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$pid" ] || { echo "no tessera server started" >&2; exit 1; }
# Its start, then the warm-up.
sleep "$((warmup + 1))"
perf record -e cpu-clock -F 997 -p "$pid" --call-graph dwarf,8192 -o "$work/perf.data" \
  -- sleep "$seconds" > /dev/null 2> "$work/perf.log" || { cat "$work/perf.log" >&2; exit 1; }
wait "$bench"
bench=""
perf script -i "$work/perf.data" -F comm,tid,ip,sym,dso 2>/dev/null > "$work/stacks.txt"
[ -n "${KEEP_STACKS:-}" ] && cp "$work/stacks.txt" "$KEEP_STACKS"
grep -E '^\| tessera \| cycle|CPU per' "$work/bench.md"
python3 scripts/profile-layers.py "$work/stacks.txt"
