#!/usr/bin/env bash
# muq-resnet on aarch64 (Apple Silicon, Graviton): cross-compiles the crate
# and its tests for aarch64-unknown-linux-gnu and runs them under user-mode
# QEMU. Off x86_64 muq's kernels have one instruction-set level, the
# target's baseline (NEON on aarch64); this checks that it builds, that it
# is the level dispatched, and that the kernels, the fused SGD and model
# training are correct there (docs/benchmarks.md, "Instruction-set levels
# and other architectures").
#
# Usage: scripts/aarch64-check.sh [all]
#   (no argument)  the library's unit tests (kernels at every level the
#                  target has, SGD, model, init, checkpoints) and
#                  tests/model.rs and tests/torch_interop.rs
#   all            every muq-resnet test, tests/kernels.rs and
#                  tests/train.rs included (slow under emulation)
#
# Needs (Debian/Ubuntu, as root):
#   apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
#   rustup target add aarch64-unknown-linux-gnu
# It installs nothing itself. Build output goes to ./target/aarch64-unknown-
# linux-gnu (a cold build took ~11 min on 2 busy cores).
set -euo pipefail
cd "$(dirname "$0")/.."

target=aarch64-unknown-linux-gnu
missing=()
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=("gcc-aarch64-linux-gnu (apt)")
command -v qemu-aarch64 >/dev/null || missing+=("qemu-user (apt)")
[ -d /usr/aarch64-linux-gnu/lib ] || missing+=("libc6-dev-arm64-cross (apt)")
rustup target list --installed 2>/dev/null | grep -qx "$target" ||
  missing+=("the Rust target: rustup target add $target")
if [ ${#missing[@]} -gt 0 ]; then
  printf 'aarch64-check: missing %s\n' "${missing[@]}" >&2
  exit 2
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
# The process-wide level must be the target's own; an x86 setting would be
# refused (and must not leak in from the caller).
unset MUQ_CPU_LEVEL

run() {
  echo "==> $*" >&2
  "$@"
}

if [ "${1:-}" = all ]; then
  run cargo test -p muq-resnet --target "$target"
else
  run cargo test -p muq-resnet --target "$target" --lib --test model --test torch_interop
fi
# The levels the tests ran at, as the library reports them.
run cargo test -q -p muq-resnet --target "$target" --lib \
  kernels::tests::every_supported_level -- --nocapture 2>&1 | grep '^levels this machine runs:'
echo "aarch64-check: ok"
