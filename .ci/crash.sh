#!/usr/bin/env bash
# The long crash campaign: 200 random kill -9s of a printing daemon, with the
# invariants checked after every restart (tests/crash_campaign.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
status=0
PRINTGATE_CRASH_KILLS="${PRINTGATE_CRASH_KILLS:-200}" \
  cargo test --test crash_campaign -- --nocapture >"$log" 2>&1 || status=$?
grep -E 'crash campaign:|test result|panicked' "$log" || true
[ "$status" -eq 0 ] || { tail -50 "$log"; exit "$status"; }
