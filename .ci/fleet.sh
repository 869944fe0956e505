#!/bin/sh
# The small fleet (issue 16): 5 `printgate run` gateways x 4 simulated
# printers, 100 jobs, behind the seed's job handler, on a real mosquitto,
# plus the duplicate-claim scenario. Installs mosquitto first if missing
# (Debian/Ubuntu; idempotent). FLEET_REQUIRE_MOSQUITTO=1 turns the test's
# skip-without-mosquitto into a failure, so CI cannot pass it unrun.
# Prints the fleet's figures. Run from the repository root.
set -eu

if ! command -v mosquitto >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq mosquitto
fi

FLEET_REQUIRE_MOSQUITTO=1 cargo test --test fleet -- --nocapture
