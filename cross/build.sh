#!/usr/bin/env bash
# Static (musl) release build of printgate for a Raspberry Pi class board,
# linked with Zig through cargo-zigbuild: no Docker, no cross gcc.
#
#   cross/build.sh aarch64-unknown-linux-musl        # Pi 3/4/5, Zero 2 W, 64-bit OS
#   cross/build.sh armv7-unknown-linux-musleabihf    # Pi 2/3/4, 32-bit OS
#   cross/build.sh arm-unknown-linux-musleabihf      # Pi 1, Zero, Zero W (ARMv6)
#
# Installs what it needs, idempotently: the rustup target (aarch64) or the
# rust-src component (32-bit ARM: their prebuilt std is not downloadable, so
# std is rebuilt with -Zbuild-std), Zig from PyPI (`ziglang`) behind a `zig`
# wrapper, and cargo-zigbuild. Output: target/<triple>/release/printgate.
#
# Extra arguments after the triple go to cargo (e.g. --features ...).
# Set PRINTGATE_NO_INSTALL=1 to fail instead of installing missing tools.
#
# Tool versions are pinned (supply chain: a new upload cannot change what
# builds the release); a different installed version is replaced.
set -euo pipefail

ZIGLANG_VERSION=0.15.2       # PyPI package ziglang (Zig 0.15.2)
CARGO_ZIGBUILD_VERSION=0.24.1

die() { echo "cross/build.sh: error: $*" >&2; exit 1; }
say() { echo "cross/build.sh: $*" >&2; }

usage="usage: cross/build.sh <aarch64-unknown-linux-musl|armv7-unknown-linux-musleabihf|arm-unknown-linux-musleabihf> [cargo args...]"
[ $# -ge 1 ] || die "$usage"
triple=$1
shift

case "$triple" in
  aarch64-unknown-linux-musl) build_std=0 ;;
  armv7-unknown-linux-musleabihf | arm-unknown-linux-musleabihf) build_std=1 ;;
  -h | --help) echo "$usage"; exit 0 ;;
  *) die "unsupported target '$triple'; $usage" ;;
esac

# Run from the repository root so rust-toolchain.toml picks the pinned toolchain.
cd "$(dirname "$0")/.."
root=$PWD

need_install() {
  [ "${PRINTGATE_NO_INSTALL:-0}" != 1 ] || die "$1 is missing and PRINTGATE_NO_INSTALL=1"
}

command -v cargo >/dev/null || die "cargo not found; install Rust with rustup first"
command -v rustup >/dev/null || die "rustup not found; the pinned toolchain (rust-toolchain.toml) needs rustup"
command -v python3 >/dev/null || die "python3 not found; it runs Zig (PyPI package ziglang)"

# --- Rust standard library for the target --------------------------------
if [ "$build_std" = 0 ]; then
  if ! rustup target list --installed | grep -qx "$triple"; then
    need_install "rust target $triple"
    say "rustup target add $triple"
    rustup target add "$triple" || die "rustup target add $triple failed"
  fi
else
  if ! rustup component list --installed | grep -q '^rust-src'; then
    need_install "rust-src component"
    say "rustup component add rust-src (std is rebuilt for $triple)"
    rustup component add rust-src || die "rustup component add rust-src failed"
  fi
fi

# --- Zig (from PyPI) behind a `zig` wrapper on PATH --------------------------
if [ "$(python3 -m ziglang version 2>/dev/null)" != "$ZIGLANG_VERSION" ]; then
  need_install "PyPI package ziglang==$ZIGLANG_VERSION"
  say "python3 -m pip install ziglang==$ZIGLANG_VERSION"
  python3 -m pip install --quiet "ziglang==$ZIGLANG_VERSION" ||
    die "pip install ziglang==$ZIGLANG_VERSION failed"
fi
if ! command -v zig >/dev/null 2>&1; then
  wrapdir="$root/target/zig-wrapper"
  mkdir -p "$wrapdir"
  cat >"$wrapdir/zig" <<'WRAP'
#!/bin/sh
exec python3 -m ziglang "$@"
WRAP
  chmod +x "$wrapdir/zig"
  export PATH="$wrapdir:$PATH"
fi
zig version >/dev/null 2>&1 || die "zig does not run (python3 -m ziglang version fails)"

# --- cargo-zigbuild -----------------------------------------------------------
if [ "$(cargo-zigbuild --version 2>/dev/null | head -n1)" != "cargo-zigbuild $CARGO_ZIGBUILD_VERSION" ]; then
  need_install "cargo-zigbuild $CARGO_ZIGBUILD_VERSION"
  say "cargo install --locked cargo-zigbuild --version $CARGO_ZIGBUILD_VERSION"
  cargo install --locked cargo-zigbuild --version "$CARGO_ZIGBUILD_VERSION" ||
    die "cargo install cargo-zigbuild $CARGO_ZIGBUILD_VERSION failed"
fi

# --- build ---------------------------------------------------------------------
args=(zigbuild --release --no-default-features --target "$triple")
if [ "$build_std" = 1 ]; then
  # No prebuilt std for these targets here: rebuild it from rust-src. That
  # needs -Z flags, allowed on the pinned stable toolchain by RUSTC_BOOTSTRAP.
  # Zig supplies musl's crt objects and libc, so rustc must not add its own
  # self-contained ones (they only ship with the prebuilt std).
  export RUSTC_BOOTSTRAP=1
  args+=("-Zbuild-std=std,panic_abort")
  flags_var="CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_RUSTFLAGS"
  export "$flags_var=${!flags_var:-} -C link-self-contained=no"
  if [ -n "${RUSTFLAGS:-}" ]; then
    say "warning: RUSTFLAGS is set and overrides $flags_var; the link may fail"
  fi
fi

say "zig $(zig version), $(cargo-zigbuild --version 2>/dev/null | head -n1), $(rustc --version)"
say "cargo ${args[*]} $*"
start=$(date +%s)
cargo "${args[@]}" "$@" || die "cargo zigbuild for $triple failed (see the errors above)"
secs=$(($(date +%s) - start))

bin="${CARGO_TARGET_DIR:-target}/$triple/release/printgate"
[ -x "$bin" ] || die "build succeeded but $bin is missing"
size=$(stat -c %s "$bin")
echo "built: $bin"
echo "size: $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.2f MiB", s / 1048576 }'))"
echo "build time: ${secs}s"
if command -v file >/dev/null 2>&1; then
  echo "file: $(file -b "$bin")"
else
  say "warning: 'file' is not installed; cannot show the binary type"
fi
