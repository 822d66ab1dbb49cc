#!/usr/bin/env bash
# Where a Tessera server's CPU goes under closed-loop load: samples the whole
# machine with perf (cpu-clock, DWARF call graphs) while `tessera-bench
# single` runs, keeps the server's process and prints its samples by thread
# and layer (scripts/profile-layers.py). Needs perf (Debian: linux-perf) and
# a release build: cargo build --release -p tessera-cli -p tessera-bench.
# Usage: bash scripts/profile-server.sh [seconds] [clients] [bench options]  > profile.md
# (bench options as `tessera-bench single` takes them, e.g. --signed)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-6}"
clients="${2:-32}"
shift $(( $# < 2 ? $# : 2 ))
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
perf record -e cpu-clock -F 997 -a --call-graph dwarf,8192 -o "$work/perf.data" -- \
  target/release/tessera-bench single --seconds "$seconds" --warmup-s 1 --clients "$clients" "$@" \
  > "$work/bench.md" 2> "$work/perf.log"
# The server is the process with the grant store's thread.
perf script -i "$work/perf.data" -F comm,pid 2>/dev/null > "$work/threads.txt"
pid="$(awk '$1 == "tessera-store" { print $2; exit }' "$work/threads.txt")"
perf script -i "$work/perf.data" --pid "$pid" -F comm,tid,ip,sym,dso 2>/dev/null > "$work/stacks.txt"
grep -E '^\| tessera \| cycle|CPU per' "$work/bench.md"
python3 scripts/profile-layers.py "$work/stacks.txt"
