#!/usr/bin/env bash
# The long run of the farm simulation (cargo test runs 500 seeds; this runs
# 20,000 optimised: the `sim` profile in Cargo.toml). A failing seed prints its trace and how to replay it.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS="${SIM_SEEDS:-20000}" cargo test --profile sim --lib farm::sim::tests::seeded_runs_keep_every_invariant -- --nocapture
