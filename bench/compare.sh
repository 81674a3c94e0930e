#!/usr/bin/env bash
# Runs `muq bench` (muq's kernels; with --stock also candle's stock ops) and
# bench/pytorch_reference.py one after the other on the same settings, then
# prints a Markdown table of the figures and the ratios to PyTorch.
#
#   bench/compare.sh [--stock] [--winograd] [--out DIR] [-- ARGS...]
#
# --winograd adds `muq bench --kernels winograd` (muq's kernels with
# Winograd F(4×4, 3×3) 3×3 convolutions) as a column of its own.
#
# ARGS go to both programs: --width N --batch N --steps N --warmup N
# --grad-images N --seed N --ops. The JSON of each run is kept in DIR
# (default target/bench/<date-time>). Python: $PYTHON, else
# /opt/torchvenv/bin/python, else python3; it needs torch (CPU build).
# MUQ_BIN=path times that muq binary instead of building this checkout.
# Run it on a quiet machine: nothing else compiling or training.
set -euo pipefail
cd "$(dirname "$0")/.."

stock=0
winograd=0
out="target/bench/$(date +%Y%m%d-%H%M%S)"
while [ $# -gt 0 ]; do
  case "$1" in
    --stock) stock=1; shift ;;
    --winograd) winograd=1; shift ;;
    --out) out="$2"; shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
args=("$@")

if [ -z "${PYTHON:-}" ]; then
  if [ -x /opt/torchvenv/bin/python ]; then PYTHON=/opt/torchvenv/bin/python; else PYTHON=python3; fi
fi
mkdir -p "$out"

# MUQ_BIN: a muq binary to time instead of building this checkout's.
if [ -n "${MUQ_BIN:-}" ]; then
  muq=$MUQ_BIN
else
  cargo build --release -p muq --quiet
  muq=target/release/muq
fi

echo "== machine" >&2
lscpu | grep -E '^(Model name|CPU\(s\)|Flags)' | sed 's/\(Flags:\).*\(avx512f\).*/\1 … \2 …/' >&2 || true
echo "== muq bench --kernels muq ${args[*]}" >&2
"$muq" bench --json --kernels muq "${args[@]}" > "$out/muq.json"
if [ "$winograd" = 1 ]; then
  echo "== muq bench --kernels winograd ${args[*]}" >&2
  "$muq" bench --json --kernels winograd "${args[@]}" > "$out/winograd.json"
fi
if [ "$stock" = 1 ]; then
  echo "== muq bench --kernels stock ${args[*]}" >&2
  "$muq" bench --json --kernels stock "${args[@]}" > "$out/stock.json"
fi
echo "== $PYTHON bench/pytorch_reference.py ${args[*]}" >&2
if ! "$PYTHON" bench/pytorch_reference.py --json "${args[@]}" > "$out/pytorch.json"; then
  echo "PyTorch reference did not run (is torch importable by $PYTHON?)" >&2
  rm -f "$out/pytorch.json"
fi

"$PYTHON" - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
runs = {}
for name in ("muq", "winograd", "stock", "pytorch"):
    p = os.path.join(out, name + ".json")
    if os.path.exists(p):
        with open(p) as f:
            runs[name] = json.load(f)
ref = runs.get("pytorch")
cols = [n for n in ("stock", "muq", "winograd", "pytorch") if n in runs]
keys = [("train_step_ms", "training step, ms"), ("train_step_cpu_ms", "  CPU time (all threads), ms"),
        ("forward_ms", "  forward, ms"),
        ("backward_ms", "  backward, ms"), ("optimizer_ms", "  optimiser, ms"),
        ("eval_batch_ms", "eval batch, ms"), ("grad_sum_ms", "grad_sum, ms"),
        ("peak_rss_mib", "peak RSS, MiB"), ("epoch_min", "epoch (391 steps), min")]
def fmt(v):
    return "–" if v is None else (f"{v:.0f}" if v >= 100 else f"{v:.1f}")
head = "| | " + " | ".join(cols)
if ref:
    head += " | " + " | ".join(f"{c} / pytorch" for c in cols if c != "pytorch")
print(f"\nresults in {out}\n")
print(head + " |")
print("|---" * (head.count("|")) + "|")
for k, label in keys:
    row = f"| {label} | " + " | ".join(fmt(runs[c].get(k)) for c in cols)
    if ref:
        for c in cols:
            if c == "pytorch":
                continue
            a, b = runs[c].get(k), ref.get(k)
            row += " | " + ("–" if a is None or not b else f"{a / b:.2f}")
    print(row + " |")
for c in cols:
    k = runs[c].get("kernel_ms")
    if k and sum(k.values()) > 0:
        other = runs[c]["train_step_ms"] - sum(k.values())
        print(f"\n{c}: per step in muq kernels (ms): " + ", ".join(f"{n[:-3]} {v:.0f}" for n, v in k.items())
              + f"; everything else {other:.0f}")
ops = {c: {(o["op"], o["shape"]): o["ms"] for o in runs[c].get("ops", [])} for c in cols}
if any(ops.values()):
    names = next(v for v in ops.values() if v)
    print("\n| op | shape | " + " | ".join(f"{c}, ms" for c in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for key in names:
        print(f"| {key[0]} | {key[1]} | " + " | ".join(fmt(ops[c].get(key)) for c in cols) + " |")
PY
