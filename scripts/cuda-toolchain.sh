#!/usr/bin/env bash
# A CUDA *build* toolchain from PyPI, kept outside the repo, so that
# `cargo build --workspace --features cuda` works on a machine with no GPU,
# no driver and no system CUDA (CI, laptops). Usage:
#
#   eval "$(scripts/cuda-toolchain.sh)"        # installs once, prints the env
#   cargo build --workspace --features cuda
#
# What it does (docs/cuda.md has the why):
#   1. `pip install --target` of nvcc, its crt headers and NVVM (cicc,
#      libdevice), the CUDA runtime headers + libcudart, and CCCL (cub, thrust,
#      libcu++) — CUDA 13.0, the release of the device machines' driver (580):
#      candle loads its kernels as PTX, and PTX from a newer nvcc is refused by
#      an older driver. About 104 MB of wheels, 270 MB unpacked.
#   2. Link stubs for the libraries candle links dynamically through cudarc
#      (libcuda, libcublas, libcublasLt, libcurand, libnvrtc, libcudnn): tiny
#      shared objects with the real sonames whose symbols are the ones cudarc
#      declares (read from the locked cudarc's sources). They only satisfy the
#      linker; a binary built with them loads the real libraries at run time
#      (the driver's libcuda.so.1, CUDA 13's libcublas.so.13, ...), and the
#      stub folder is never put on LD_LIBRARY_PATH.
#   3. Prints `export` lines (stdout; progress goes to stderr):
#      CUDA_ROOT/CUDA_PATH/CUDA_HOME, NVCC, PATH, CUDA_COMPUTE_CAP (default 90,
#      the H100/H200; override by exporting it first), CUDARC_CUDA_VERSION and
#      CUDAFORGE_THREADS (parallel nvcc jobs; cudaforge's default is half the
#      cores).
#      nvcc uses the g++ on PATH as host compiler (CUDA 13.0 takes GCC 12);
#      export NVCC_CCBIN to pick another.
#
# Env: MUQ_CUDA_CACHE (default ~/.cache/muq-cuda), CUDA_COMPUTE_CAP,
#      PIP (default `python3 -m pip`).
# Idempotent: a complete install is reused (a stamp file marks it); delete
# the folder to start over.
set -euo pipefail

NVCC_VERSION=13.0.88     # nvidia-cuda-nvcc, nvidia-cuda-crt, nvidia-nvvm
RUNTIME_VERSION=13.0.96  # nvidia-cuda-runtime (headers, libcudart.so.13)
CCCL_VERSION=13.0.85     # nvidia-cuda-cccl (cub, thrust, libcu++)
CUDARC_CUDA_VERSION=13000

cd "$(dirname "$0")/.."
cache=${MUQ_CUDA_CACHE:-$HOME/.cache/muq-cuda}
prefix=$cache/cuda-$NVCC_VERSION
root=$prefix/site/nvidia/cu13
stamp=$prefix/.complete
log() { echo "cuda-toolchain: $*" >&2; }

if [ ! -f "$stamp" ]; then
  t0=$SECONDS
  log "installing CUDA $NVCC_VERSION build tools from PyPI into $prefix"
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache/.install.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  ${PIP:-python3 -m pip} install --quiet --no-deps --no-compile --disable-pip-version-check --root-user-action=ignore \
    --target "$tmp/site" \
    "nvidia-cuda-nvcc==$NVCC_VERSION" "nvidia-cuda-crt==$NVCC_VERSION" \
    "nvidia-nvvm==$NVCC_VERSION" "nvidia-cuda-runtime==$RUNTIME_VERSION" \
    "nvidia-cuda-cccl==$CCCL_VERSION" >&2
  troot=$tmp/site/nvidia/cu13
  [ -x "$troot/bin/nvcc" ] || { log "no nvcc in $troot/bin after pip install"; exit 1; }
  # The usual toolkit layout that build scripts probe: lib64, unversioned cudart.
  ln -sfn lib "$troot/lib64"
  ln -sfn libcudart.so.13 "$troot/lib/libcudart.so"
  rm -rf "$prefix"
  chmod 755 "$tmp"
  mv "$tmp" "$prefix"
  trap - EXIT
  touch "$stamp"
  log "pip install done in $((SECONDS - t0)) s"
fi

# Link stubs, keyed by the cudarc version in Cargo.lock (its bindings name the symbols).
cudarc=$(sed -n '/^name = "cudarc"$/{n;s/^version = "\(.*\)"$/\1/p;q}' Cargo.lock)
[ -n "$cudarc" ] || { log "cudarc is not in Cargo.lock"; exit 1; }
stubs=$root/lib/stubs
if [ ! -f "$stubs/.cudarc-$cudarc" ]; then
  cargo_home=${CARGO_HOME:-$HOME/.cargo}
  crate=$(ls "$cargo_home"/registry/cache/*/"cudarc-$cudarc.crate" 2>/dev/null | head -n1 || true)
  if [ -z "$crate" ]; then
    log "fetching crates (cudarc $cudarc's sources name the stub symbols)"
    cargo fetch --locked >&2
    crate=$(ls "$cargo_home"/registry/cache/*/"cudarc-$cudarc.crate" | head -n1)
  fi
  src=$(mktemp -d)
  tar -xzf "$crate" -C "$src" --wildcards "cudarc-$cudarc/src/*/sys/mod.rs"
  rm -rf "$stubs"
  mkdir -p "$stubs"
  # module in cudarc, library name, soname on a CUDA 13 system
  while read -r module lib soname; do
    syms=$(grep -ohE '^pub unsafe fn [A-Za-z_][A-Za-z0-9_]*' "$src/cudarc-$cudarc/src/$module/sys/mod.rs" |
      awk '{ print $4 }' | sort -u)
    [ -n "$syms" ] || { log "no symbols for $module in cudarc $cudarc"; exit 1; }
    printf 'void %s(void) { __builtin_trap(); }\n' $syms >"$src/$lib.c"
    cc -shared -fPIC -O0 -w -Wl,-soname,"$soname" -o "$stubs/lib$lib.so" "$src/$lib.c"
  done <<'EOF'
driver cuda libcuda.so.1
cublas cublas libcublas.so.13
cublaslt cublasLt libcublasLt.so.13
curand curand libcurand.so.10
nvrtc nvrtc libnvrtc.so.13
cudnn cudnn libcudnn.so.9
EOF
  rm -rf "$src"
  touch "$stubs/.cudarc-$cudarc"
  log "link stubs for cudarc $cudarc in $stubs"
fi

cat <<EOF
export CUDA_ROOT='$root'
export CUDA_PATH='$root'
export CUDA_HOME='$root'
export NVCC='$root/bin/nvcc'
export PATH='$root/bin':"\$PATH"
export CUDA_COMPUTE_CAP='${CUDA_COMPUTE_CAP:-90}'
export CUDARC_CUDA_VERSION='$CUDARC_CUDA_VERSION'
export CUDAFORGE_THREADS='${CUDAFORGE_THREADS:-$(nproc)}'
EOF
