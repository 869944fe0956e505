#!/bin/sh
# Runs the MQTT link against a real mosquitto (plain, password, TLS, mutual
# TLS). Installs mosquitto, its clients and openssl first if missing
# (Debian/Ubuntu; idempotent). Run from the repository root. Fails if any
# test reported itself SKIPPED (a tool missing): here they must run.
set -eu

missing=""
for tool in mosquitto mosquitto_passwd openssl; do
    command -v "$tool" >/dev/null 2>&1 || missing=1
done
if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq mosquitto mosquitto-clients openssl
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Default features, then the gateway build that ships (its `printgate run`
# is the one the Last Will test kills).
for features in "" "--no-default-features"; do
    echo "mosquitto.sh: cargo test $features --test mqtt_mosquitto"
    status=0
    # shellcheck disable=SC2086 # $features is one flag or nothing
    PRINTGATE_MOSQUITTO=1 cargo test $features --test mqtt_mosquitto -- --nocapture >"$log" 2>&1 || status=$?
    cat "$log"
    [ "$status" -eq 0 ] || exit "$status"
    if grep -q 'SKIPPED: mqtt_mosquitto::' "$log"; then
        echo "mosquitto.sh: FAIL: mosquitto tests were skipped:" >&2
        grep -o 'SKIPPED: mqtt_mosquitto::[a-z_]*: .*' "$log" >&2
        exit 1
    fi
    if ! grep -Eq '^test result: ok\. [1-9][0-9]* passed' "$log"; then
        echo "mosquitto.sh: FAIL: no mosquitto test ran" >&2
        exit 1
    fi
done
