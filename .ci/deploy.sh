#!/usr/bin/env bash
# CI step for deployment: static aarch64 build, checks on the binary, a run
# under qemu, the systemd unit's syntax and hardening score, and the .deb.
#
#   bash .ci/deploy.sh                      # aarch64 (Pi 3/4/5, 64-bit OS)
#   PRINTGATE_CI_ARM32=1 bash .ci/deploy.sh # also armv7 and ARMv6 (Pi Zero/1)
#
# Idempotent: installs only what is missing (apt, pip, cargo install).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD

MAX_BYTES=$((5 * 1024 * 1024)) # the binary must stay under 5 MiB
MAX_EXPOSURE=2.0               # systemd-analyze security score, 0 (best) .. 10
triple=aarch64-unknown-linux-musl
bin="target/$triple/release/printgate"

fail() { echo "deploy: FAIL: $*" >&2; exit 1; }
timings=()
step_start=0
step() {
  step_name=$1
  step_start=$(date +%s)
  echo "==> deploy: $step_name"
}
step_done() {
  local secs=$(($(date +%s) - step_start))
  echo "<== deploy: $step_name: ${secs}s"
  timings+=("$(printf '%-46s %5ss' "$step_name" "$secs")")
}

# --- tools --------------------------------------------------------------------
step "install tools"
missing=()
command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
command -v file >/dev/null || missing+=(file)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v dpkg-deb >/dev/null || missing+=(dpkg)
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || fail "apt-get update failed"
  apt-get install -y -qq "${missing[@]}" >/dev/null || fail "apt-get install ${missing[*]} failed"
fi
CARGO_DEB_VERSION=3.8.0 # pinned: a new upload cannot change the package
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
  nice -n 19 cargo install --locked cargo-deb --version "$CARGO_DEB_VERSION" ||
    fail "cargo install cargo-deb $CARGO_DEB_VERSION failed"
fi
# cross/build.sh installs the rust target, Zig and cargo-zigbuild itself.
step_done

# --- aarch64 build and binary checks ------------------------------------------
check_binary() { # <triple> <qemu command...>
  local t=$1 b="target/$1/release/printgate"
  shift
  local desc size
  desc=$(file -b "$b")
  echo "file: $desc"
  case "$desc" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) fail "$b is not statically linked: $desc" ;;
  esac
  size=$(stat -c %s "$b")
  echo "size: $t $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.2f MiB", s / 1048576 }'))"
  [ "$size" -le "$MAX_BYTES" ] || fail "$b is $size bytes, over the $MAX_BYTES byte limit"
  local out
  out=$("$@" "$b" --version) || fail "$b --version failed under $*"
  echo "qemu: $out"
  case "$out" in printgate\ *) ;; *) fail "unexpected --version output: $out" ;; esac
}

step "build $triple"
nice -n 19 cross/build.sh "$triple"
step_done

step "check $triple binary"
check_binary "$triple" qemu-aarch64-static
step_done

step "cold start to READY under qemu ($triple)"
python3 .ci/ready-time.py qemu-aarch64-static "$bin"
step_done

if [ "${PRINTGATE_CI_ARM32:-0}" = 1 ]; then
  for t in armv7-unknown-linux-musleabihf arm-unknown-linux-musleabihf; do
    step "build $t"
    nice -n 19 cross/build.sh "$t"
    step_done
    step "check $t binary"
    if [ "$t" = arm-unknown-linux-musleabihf ]; then
      check_binary "$t" qemu-arm-static -cpu arm1176 # Pi Zero / Pi 1 core
    else
      check_binary "$t" qemu-arm-static -cpu cortex-a7
    fi
    step_done
  done
fi

# --- the shipped default config must be accepted by the shipped binary -------
if qemu-aarch64-static "$bin" check-config --help >/dev/null 2>&1; then
  step "default config"
  out=$(qemu-aarch64-static "$bin" check-config packaging/printgate.toml 2>&1) ||
    { echo "$out" >&2; fail "packaging/printgate.toml is rejected by check-config"; }
  echo "check-config: $out"
  # Its commented-out examples must be valid too, once uncommented.
  example=$(mktemp)
  sed -E 's/^# (\[|id |port |baud |filament |host |url )/\1/' packaging/printgate.toml >"$example"
  out=$(qemu-aarch64-static "$bin" check-config "$example" 2>&1) ||
    { echo "$out" >&2; fail "the uncommented examples in packaging/printgate.toml are rejected"; }
  echo "check-config (examples uncommented): $out"
  rm -f "$example"
  step_done
fi

# --- a short print under qemu (once `sim` and `send` exist) -------------------
if qemu-aarch64-static "$bin" sim --help >/dev/null 2>&1 &&
  qemu-aarch64-static "$bin" send --help >/dev/null 2>&1; then
  step "sim workload under qemu"
  work=$(mktemp -d)
  gcode="$work/cube.gcode"
  {
    echo "G28"
    for i in $(seq 1 300); do echo "G1 X$((i % 100)) Y$((i * 7 % 100)) E0.05 F3000"; done
    echo "M84"
  } >"$gcode"
  sim_args=(sim --link "$work/tty" --baud 250000)
  # Let the simulator log what it executed, when this build's sim can.
  if qemu-aarch64-static "$bin" sim --help 2>/dev/null | grep -q -- '--received'; then
    sim_args+=(--received "$work/received.gcode")
  fi
  qemu-aarch64-static "$bin" "${sim_args[@]}" >"$work/sim.log" 2>&1 &
  sim_pid=$!
  for _ in $(seq 1 100); do [ -e "$work/tty" ] && break; sleep 0.2; done
  if [ ! -e "$work/tty" ]; then
    kill "$sim_pid" 2>/dev/null || true
    cat "$work/sim.log" >&2
    fail "printgate sim did not create $work/tty"
  fi
  send_rc=0
  timeout 300 qemu-aarch64-static "$bin" send --port "$work/tty" --baud 250000 "$gcode" \
    >"$work/send.log" 2>&1 || send_rc=$?
  cat "$work/send.log"
  if [ "$send_rc" != 0 ] && grep -q 'Function not implemented' "$work/send.log"; then
    # qemu-user (7.2 in Debian 12) does not implement the TCSETS2 ioctl that
    # the serialport crate uses to set the baud rate, so the ARM `send` cannot
    # open a port under qemu. Drive the ARM simulator with the host build's
    # `send` instead (cargo test has built it); on a real Pi TCSETS2 works.
    echo "deploy: note: $(qemu-aarch64-static --version | head -n 1) lacks TCSETS2; ARM send not testable here"
    host_bin=target/debug/printgate
    if [ -x "$host_bin" ] && "$host_bin" send --help >/dev/null 2>&1; then
      send_rc=0
      timeout 300 "$host_bin" send --port "$work/tty" --baud 250000 "$gcode" || send_rc=$?
    else
      echo "deploy: note: no host build at $host_bin either; only the ARM simulator's start-up was checked"
      send_rc=0
      rm -f "$work/received.gcode"
    fi
  fi
  kill "$sim_pid" 2>/dev/null || true
  wait "$sim_pid" 2>/dev/null || true
  if [ "$send_rc" != 0 ]; then
    cat "$work/sim.log" >&2
    fail "printgate send (to the ARM simulator under qemu) exited with $send_rc"
  fi
  if [ -f "$work/received.gcode" ]; then
    # Every move exactly once (the host may add its own M105/M110 lines).
    moves=$(grep -c '^G1 ' "$work/received.gcode" || true)
    [ "$moves" = 300 ] || fail "the simulator executed $moves of the 300 G1 moves"
    echo "sim: executed all 300 moves once"
  fi
  rm -rf "$work"
  step_done
else
  echo "deploy: skipping the qemu sim workload (this build has no 'sim'/'send' subcommands yet)"
fi

# --- systemd unit ---------------------------------------------------------------
step "systemd unit"
# `verify` insists that ExecStart's binary exists, and /usr/bin/printgate is
# not installed on a CI machine: verify a copy that points at the built one.
unit_dir=$(mktemp -d)
sed "s|^ExecStart=/usr/bin/printgate |ExecStart=$root/$bin |" systemd/printgate.service \
  >"$unit_dir/printgate.service"
grep -q "^ExecStart=$root/$bin " "$unit_dir/printgate.service" ||
  fail "could not point the unit copy's ExecStart at $bin"
verify_out=$(systemd-analyze verify "$unit_dir/printgate.service" 2>&1) || {
  echo "$verify_out" >&2
  fail "systemd-analyze verify found problems in systemd/printgate.service"
}
[ -z "$verify_out" ] || { echo "$verify_out" >&2; fail "systemd-analyze verify printed warnings"; }
echo "systemd-analyze verify: clean"
security=$(systemd-analyze security --offline=yes --no-pager systemd/printgate.service 2>&1) ||
  { echo "$security" >&2; fail "systemd-analyze security failed"; }
echo "$security" | grep '✗' || true
exposure=$(echo "$security" | sed -n 's/.*Overall exposure level for printgate.service: \([0-9.]*\).*/\1/p')
[ -n "$exposure" ] || { echo "$security" >&2; fail "no exposure level in systemd-analyze security output"; }
echo "exposure: $exposure (limit $MAX_EXPOSURE)"
awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e <= m) }' ||
  fail "unit exposure $exposure is above $MAX_EXPOSURE"
rm -rf "$unit_dir"
step_done

# --- Debian package ----------------------------------------------------------------
check_deb() { # <triple> <expected dpkg architecture>
  local t=$1 arch=$2 deb_out deb contents ctl
  # The binary is already stripped by the release profile (strip = true).
  deb_out=$(cargo deb --target "$t" --no-build --no-strip 2>&1) ||
    { echo "$deb_out" >&2; fail "cargo deb --target $t failed"; }
  deb=$(echo "$deb_out" | grep '\.deb$' | tail -n 1)
  [ -f "$deb" ] || { echo "$deb_out" >&2; fail "cargo deb did not report a .deb file"; }
  echo "package: $deb ($(stat -c %s "$deb") bytes)"
  dpkg-deb --info "$deb"
  contents=$(dpkg-deb --contents "$deb")
  echo "$contents"
  for f in ./usr/bin/printgate ./etc/printgate/printgate.toml ./usr/lib/modules-load.d/printgate.conf; do
    echo "$contents" | grep -q " $f\$" || fail "$deb lacks $f"
  done
  # cargo-deb 3 installs units under /usr/lib (merged /usr); older ones under /lib.
  echo "$contents" | grep -Eq ' \.(/usr)?/lib/systemd/system/printgate\.service$' ||
    fail "$deb lacks the systemd unit printgate.service"
  dpkg-deb --field "$deb" Architecture | grep -qx "$arch" || fail "$deb is not Architecture: $arch"
  ctl=$(mktemp -d)
  dpkg-deb --control "$deb" "$ctl"
  grep -qx /etc/printgate/printgate.toml "$ctl/conffiles" || fail "the config is not a conffile"
  grep -q useradd "$ctl/postinst" || fail "postinst does not create the printgate user"
  if cat "$ctl"/postrm "$ctl"/prerm 2>/dev/null | grep -v '^[[:space:]]*#' | grep -q 'rm .*/var/lib/printgate'; then
    fail "a maintainer script deletes /var/lib/printgate"
  fi
  rm -rf "$ctl"
  # Informational: lintian is not installed by this script. Expected findings:
  # no-changelog and no-manual-page (statically-linked-binary is overridden).
  if command -v lintian >/dev/null 2>&1; then
    lintian "$deb" 2>&1 | grep -v 'root privileges' || true
  fi
}

step "deb $triple"
check_deb "$triple" arm64
step_done

if [ "${PRINTGATE_CI_ARM32:-0}" = 1 ]; then
  # One armhf package for every 32-bit Pi: the ARMv6 build also runs on
  # ARMv7/v8 cores, while an armv7 build dies with SIGILL on a Pi Zero/1.
  step "deb arm-unknown-linux-musleabihf"
  check_deb arm-unknown-linux-musleabihf armhf
  step_done
fi

echo "deploy: timings"
printf '  %s\n' "${timings[@]}"
echo "deploy: OK"
