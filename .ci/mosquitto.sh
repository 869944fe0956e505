#!/bin/sh
# Runs the MQTT link against a real mosquitto (plain, password, TLS, mutual
# TLS). Installs mosquitto, its clients and openssl first if missing
# (Debian/Ubuntu; idempotent). Run from the repository root.
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

PRINTGATE_MOSQUITTO=1 cargo test --test mqtt_mosquitto -- --nocapture
