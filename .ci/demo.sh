#!/usr/bin/env bash
# Runs `printgate demo --plain` end to end (simulated printers, embedded MQTT
# broker, queue manager, robot, the gateway; all in one process on
# 127.0.0.1) and checks that it printed every sample job.
#
# The debug binary by default: `cargo test` has built it already, and the
# demo's pace is set by the simulators, not by the optimiser (release saves
# under a second and costs minutes of LTO). PROFILE=release times the
# release binary instead. Run from anywhere; exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${PROFILE:-debug}"
case "$profile" in
  debug) cargo build --quiet --bin printgate ;;
  release) cargo build --quiet --release --bin printgate ;;
  *) echo "PROFILE must be debug or release, not $profile" >&2; exit 2 ;;
esac
bin="target/$profile/printgate"
jobs=6

out="$(mktemp)"
err="$(mktemp)"
trap 'rm -f "$out" "$err"' EXIT

start=$(date +%s%N)
status=0
# The demo ends on its own (every job printed, or nothing moving for 60 s);
# the outer limit only guards against a hang.
timeout 300 "$bin" demo --plain --jobs "$jobs" >"$out" 2>"$err" || status=$?
wall_ms=$(( ($(date +%s%N) - start) / 1000000 ))

if [ "$status" -ne 0 ] || ! grep -q "^  jobs printed: $jobs/$jobs\$" "$out"; then
  echo "demo failed (exit $status)" >&2
  echo "--- stdout" >&2; cat "$out" >&2
  echo "--- stderr" >&2; cat "$err" >&2
  exit 1
fi
sed -n '/^summary$/,$p' "$out"
echo "  wall time ($profile binary, build excluded): $((wall_ms / 1000)).$(( (wall_ms % 1000) / 100 )) s"
