#!/usr/bin/env bash
# The GPU check of the CUDA path, in two halves (docs/cuda.md):
#
#   scripts/device-check.sh prepare [--cudnn]
#       Here, on a machine without a GPU: builds the CUDA binaries with
#       scripts/cuda-toolchain.sh's toolchain (CUDA 13.0, sm_90) into
#       .device-bin/bins.tar.xz (git-ignored through .git/info/exclude), stripped:
#       `muq` (--features cuda) and the CUDA tests (crates/muq/tests/cuda.rs),
#       both release builds,
#       and with --cudnn also `muq-cudnn` (--features cudnn). The GPU machine
#       has CUDA's libraries and PyTorch but no network and (by KINDS.md) no Rust,
#       so the build happens here and the binaries travel.
#
#   scripts/device-check.sh run
#       On the GPU machine (device tool: carry [".device-bin"], timeout_s 420):
#       GPU facts, the CPU↔CUDA tests, `muq bench --device cuda --width 64
#       --batch 128` and bench/pytorch_reference.py on the same settings on the
#       GPU (when it takes --device), then a Markdown summary with the ratios.
#       Everything goes to $OUT (at most 8 files): gpu.txt, ldd.txt,
#       cuda-tests.log, muq-cuda.json, [muq-cudnn.json], torch-cuda.json,
#       summary.md, run.log. Each stage has its own time limit and a failure
#       of one does not stop the others; the exit status is non-zero if any
#       failed.
#
# Env (run): BENCH_ARGS (default "--width 64 --batch 128 --steps 5 --warmup 2
# --grad-images 2500"), PYTHON (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=.device-bin

prepare() {
  set -e
  local cudnn=0
  [ "${1:-}" = "--cudnn" ] && cudnn=1
  grep -qx '/.device-bin/' .git/info/exclude 2>/dev/null || echo '/.device-bin/' >>.git/info/exclude
  eval "$(scripts/cuda-toolchain.sh)"
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${MUQ_CUDA_CACHE:-$HOME/.cache/muq-cuda}/target}
  local t0=$SECONDS staging
  staging=$(mktemp -d)
  cargo build --release --locked -p muq --features cuda
  strip -o "$staging/muq" "$CARGO_TARGET_DIR/release/muq"
  local tests
  tests=$(cargo test --release --locked -p muq --features cuda --test cuda --no-run --message-format=json |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)
  [ -n "$tests" ] || { echo "device-check: no test executable" >&2; exit 1; }
  strip -o "$staging/cuda-tests" "$tests"
  if [ "$cudnn" = 1 ]; then
    cargo build --release --locked -p muq --features cudnn
    strip -o "$staging/muq-cudnn" "$CARGO_TARGET_DIR/release/muq"
  fi
  git rev-parse HEAD >"$staging/commit"
  # Each binary holds candle's kernels (~30 MB of SASS and PTX); xz shrinks a
  # stripped one from ~55 MB to ~7 MB, under the device tool's 64 MiB carry.
  rm -rf "$bin" && mkdir -p "$bin"
  tar -C "$staging" -cJf "$bin/bins.tar.xz" .
  rm -rf "$staging"
  echo "device-check: built in $((SECONDS - t0)) s:" >&2
  du -h "$bin/bins.tar.xz" >&2
  echo "device-check: now run(command=\"bash scripts/device-check.sh run\", carry=[\"$bin\"], timeout_s=420)" >&2
}

run() {
  : "${OUT:?run is for the GPU machine, where \$OUT is set}"
  local py=${PYTHON:-python3} failed=0
  [ -f "$bin/bins.tar.xz" ] ||
    { echo "device-check: no $bin/bins.tar.xz: run 'scripts/device-check.sh prepare' first and carry $bin" >&2; exit 2; }
  exec > >(tee "$OUT/run.log") 2>&1
  local bin=/tmp/muq-device-bin
  rm -rf "$bin" && mkdir -p "$bin"
  "$py" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' .device-bin/bins.tar.xz "$bin" ||
    { echo "device-check: cannot unpack .device-bin/bins.tar.xz"; exit 2; }
  local bench_args=${BENCH_ARGS:-"--width 64 --batch 128 --steps 5 --warmup 2 --grad-images 2500"}
  stage() { # name, limit (s), command...
    local name=$1 limit=$2 t0=$SECONDS
    shift 2
    echo "==> $name"
    if timeout "$limit" "$@"; then
      echo "<== ok ($((SECONDS - t0)) s): $name"
    else
      echo "<== FAILED (status $?, $((SECONDS - t0)) s): $name"
      failed=1
    fi
  }

  # CUDA 13 libraries: the toolkit's if any, else PyTorch's wheels; the driver's libcuda.
  local libs
  libs=$("$py" - <<'EOF'
import glob, os, site
dirs = []
for root in ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/local/nvidia/lib64"]:
    if os.path.isdir(root):
        dirs.append(root)
for sp in site.getsitepackages():
    for so in sorted(glob.glob(os.path.join(sp, "nvidia", "**", "lib*.so*"), recursive=True)):
        d = os.path.dirname(so)
        if d not in dirs:
            dirs.append(d)
print(":".join(dirs))
EOF
  ) || libs=""
  export LD_LIBRARY_PATH=${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  echo "built from $(cat "$bin/commit" 2>/dev/null || echo '?'); LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

  { nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total,clocks.max.sm --format=csv
    nvcc --version 2>/dev/null | tail -n2
    "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())'
  } >"$OUT/gpu.txt" 2>&1
  cat "$OUT/gpu.txt"
  { for b in "$bin"/*; do [ -x "$b" ] && { echo "== $b"; ldd "$b" | grep -E 'cu|nvrtc|not found'; }; done; } >"$OUT/ldd.txt" 2>&1
  if grep -q 'not found' "$OUT/ldd.txt"; then
    echo "device-check: missing libraries:"; grep 'not found' "$OUT/ldd.txt"; failed=1
  fi

  stage "CPU↔CUDA tests" 240 bash -o pipefail -c "'$bin/cuda-tests' --test-threads=1 --nocapture 2>&1 | tee '$OUT/cuda-tests.log'"
  # shellcheck disable=SC2086
  stage "muq bench --device cuda" 180 bash -c "'$bin/muq' bench --device cuda $bench_args --json >'$OUT/muq-cuda.json'"
  if [ -x "$bin/muq-cudnn" ]; then
    # shellcheck disable=SC2086
    stage "muq bench --device cuda (cudnn)" 180 bash -c "'$bin/muq-cudnn' bench --device cuda $bench_args --json >'$OUT/muq-cudnn.json'"
  fi
  if [ -f bench/pytorch_reference.py ] && "$py" bench/pytorch_reference.py --help 2>/dev/null | grep -q -- '--device'; then
    # shellcheck disable=SC2086
    stage "pytorch_reference.py --device cuda" 180 bash -c "'$py' bench/pytorch_reference.py --device cuda $bench_args --json >'$OUT/torch-cuda.json'"
  else
    echo "device-check: bench/pytorch_reference.py is missing or takes no --device: no PyTorch GPU figures"
  fi

  "$py" - "$OUT" <<'EOF' | tee "$OUT/summary.md"
import json, os, sys
out = sys.argv[1]
rows = []
for name, label in [("muq-cuda.json", "muq (candle, CUDA)"), ("muq-cudnn.json", "muq (candle, CUDA + cuDNN)"),
                    ("torch-cuda.json", "PyTorch eager (CUDA)")]:
    p = os.path.join(out, name)
    try:
        rows.append((label, json.load(open(p))))
    except Exception as e:  # missing or broken: say so
        if os.path.exists(p):
            print(f"<!-- {name}: {e} -->")
keys = [("train_step_ms", "ms / training step"), ("forward_ms", "ms forward"), ("backward_ms", "ms backward"),
        ("optimizer_ms", "ms SGD"), ("eval_batch_ms", "ms / eval batch"), ("grad_sum_ms", "ms / gradient sum"),
        ("epoch_min", "s / epoch (391 steps)"), ("peak_rss_mib", "peak host RSS MiB")]
torch = dict(rows).get("PyTorch eager (CUDA)")
print("| | " + " | ".join(l for l, _ in rows) + (" | muq ÷ PyTorch |" if torch and rows[0][0] != "PyTorch eager (CUDA)" else " |"))
print("|---" * (len(rows) + 1 + (1 if torch else 0)) + "|")
for k, label in keys:
    vals = []
    for _, r in rows:
        v = r.get(k)
        if v is not None and k == "epoch_min":
            v = v * 60
        vals.append("–" if v is None else f"{v:.2f}")
    line = f"| {label} | " + " | ".join(vals) + " |"
    if torch and rows[0][0] != "PyTorch eager (CUDA)":
        a, b = rows[0][1].get(k), torch.get(k)
        line += f" {a / b:.2f} |" if a and b else " – |"
    print(line)
if rows:
    r = rows[0][1]
    print(f"\nwidth {r.get('width')}, batch {r.get('batch')}, {r.get('steps')} timed steps (median), "
          f"gradient sum over {r.get('grad_images')} images.")
EOF
  echo "device-check: done; failed=$failed"
  return $failed
}

case "${1:-}" in
  prepare) shift; prepare "$@" ;;
  run) run ;;
  *) sed -n '2,24p' "$0"; exit 2 ;;
esac
