#!/usr/bin/env bash
# The Slurm array that `muq sweep --slurm` writes, submitted to a real Slurm
# scheduler: a one-node cluster on this machine (Debian's slurm-wlm and munge,
# installed if missing), a tiny grid on a synthetic CIFAR-10 layout, the
# array's results checked bit for bit against the same grid run locally with
# plain `muq sweep`, then `muq report` on the cluster's output.
#
# Needs root (slurmd runs as root) and no systemd: every daemon is started
# here, in the background and in its own session (a Ctrl-C reaches only this
# script, which then cancels the job and stops the daemons in order), and
# stopped by its PID on exit (also on failure and Ctrl-C), with the scratch
# folder that holds everything (munge key and socket, slurm.conf, state,
# spool, logs, data, results).
#
# Environment:
#   MUQ_SLURM_TIMEOUT  seconds the array may take (default 900)
#   MUQ_SLURM_KEEP=1   keep the scratch folder (daemons are stopped anyway)
set -euo pipefail
cd "$(dirname "$0")/.."

JOB_TIMEOUT=${MUQ_SLURM_TIMEOUT:-900}
# The grid: random + label x seeds 1, 2 (4 runs), a tiny model, one epoch.
# shellcheck disable=SC2054 # the commas are muq's value lists
GRID=(
  --axis modality.kind=random,label --seeds 1,2
  --set model.width=4 --set train.epochs=1 --set train.batch_size=50
  --set data.retain_eval=50 --set eval.batch_size=100
)

say() { echo "[slurm-check] $*"; }
die() {
  echo "[slurm-check] FAILED: $*" >&2
  exit 1
}

# Phase timing: `phase NAME` ends the running phase and starts NAME.
T0=$EPOCHREALTIME
PHASE=""
PHASE_T=$T0
TIMES=()
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
phase() {
  local now=$EPOCHREALTIME
  if [ -n "$PHASE" ]; then
    TIMES+=("$(printf '%-36s %7s s' "$PHASE" "$(elapsed "$PHASE_T" "$now")")")
    say "$PHASE: $(elapsed "$PHASE_T" "$now") s"
  fi
  PHASE=$1
  PHASE_T=$now
  [ -z "$PHASE" ] || say "== $PHASE"
}

SCRATCH=""
PIDS=()  # daemons started here, in start order
JOB=""   # the submitted array job

stop_pid() { # PID NAME: SIGTERM, then SIGKILL after 15 s
  local pid=$1 name=$2 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "$name (pid $pid) ignored SIGTERM for 15 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  say "stopped $name (pid $pid)"
}

cleanup() {
  local rc=$? i
  set +e
  trap - EXIT INT TERM
  if [ "$rc" -ne 0 ] && [ -n "$SCRATCH" ]; then
    for f in "$SCRATCH"/log/*.log "$SCRATCH"/cluster/logs/*.out; do
      [ -s "$f" ] || continue
      echo "---- last lines of $f" >&2
      tail -n 15 "$f" >&2
    done
  fi
  [ -z "$PHASE" ] || phase teardown
  # Jobs first, while the controller still runs: their slurmstepd processes
  # are not the daemons' children.
  if [ -n "$JOB" ] && kill -0 "${PIDS[1]%%:*}" 2>/dev/null &&
    [ -n "$(squeue -h -j "$JOB" -o %i 2>/dev/null)" ]; then
    say "cancelling job $JOB"
    scancel "$JOB"
    for ((i = 0; i < 30; i++)); do
      [ -n "$(squeue -h -j "$JOB" -o %i 2>/dev/null)" ] || break
      sleep 1
    done
  fi
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    stop_pid "${PIDS[i]%%:*}" "${PIDS[i]#*:}"
  done
  # A job step whose controller died before it could report (slurmstepd
  # daemonizes, so it is nobody's child here) still writes into the scratch
  # folder: found by its open files there, stopped by its PID.
  if [ -n "$SCRATCH" ]; then
    for d in /proc/[0-9]*; do
      p=${d#/proc/}
      [ "$p" = $$ ] && continue
      holds=0
      for fd in "$d"/fd/*; do
        case $(readlink "$fd" 2>/dev/null) in "$SCRATCH"/*) holds=1 && break ;; esac
      done
      [ "$holds" = 1 ] || continue
      say "left over: pid $p ($(cat "$d/comm" 2>/dev/null)) holds files in $SCRATCH"
      kill -TERM "$p" 2>/dev/null
      sleep 2
      kill -KILL "$p" 2>/dev/null && say "stopped pid $p"
    done
  fi
  if [ -n "$SCRATCH" ]; then
    if [ "${MUQ_SLURM_KEEP:-0}" = 1 ]; then
      say "kept $SCRATCH"
    else
      rm -rf "$SCRATCH"
    fi
  fi
  phase ""
  TIMES+=("$(printf '%-36s %7s s' total "$(elapsed "$T0" "$EPOCHREALTIME")")")
  say "timings:"
  printf '  %s\n' "${TIMES[@]}"
  if [ "$rc" -eq 0 ]; then say "PASSED"; else say "FAILED (exit $rc)"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Nothing from an enclosing Slurm job or the user's defaults leaks in.
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^(SLURM|SBATCH|SQUEUE|SINFO|SCONTROL)_' || true)

# ---------------------------------------------------------------------------
phase "install (if missing)"
[ "$(id -u)" = 0 ] || die "needs root: slurmd runs as root (SlurmUser=root)"
missing=()
for tool in slurmctld slurmd sbatch squeue sinfo scontrol scancel munged munge; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "missing ${missing[*]}: apt-get install -y slurm-wlm munge"
  command -v apt-get >/dev/null || die "no apt-get: install Slurm (slurmctld, slurmd) and munge by hand"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge
fi
say "$(slurmd -V), $(munged --version 2>&1 | head -n 1)"

# ---------------------------------------------------------------------------
phase "cluster up"
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/muq-slurm-check.XXXXXX")
# munged wants every directory on the socket's path searchable by all, and
# the key in a folder only its owner can read.
chmod 755 "$SCRATCH"
mkdir -m 700 "$SCRATCH/munge"
mkdir -m 755 "$SCRATCH/run"
mkdir "$SCRATCH/state" "$SCRATCH/spool" "$SCRATCH/log"
SOCKET=$SCRATCH/run/munge.socket
head -c 1024 /dev/urandom >"$SCRATCH/munge/munge.key"
chmod 400 "$SCRATCH/munge/munge.key"
setsid munged --foreground --socket="$SOCKET" --key-file="$SCRATCH/munge/munge.key" \
  --log-file="$SCRATCH/log/munged.log" --pid-file="$SCRATCH/run/munged.pid" \
  --seed-file="$SCRATCH/munge/munged.seed" >"$SCRATCH/log/munged.out" 2>&1 &
PIDS+=("$!:munged")
for ((i = 0; ; i++)); do
  munge -n -S "$SOCKET" 2>/dev/null | unmunge -S "$SOCKET" >/dev/null 2>&1 && break
  kill -0 "${PIDS[0]%%:*}" 2>/dev/null || die "munged exited: $(cat "$SCRATCH/log/munged.out")"
  [ "$i" -lt 100 ] || die "munged did not answer on $SOCKET within 10 s"
  sleep 0.1
done
# setsid execs (it forks only for a process-group leader, which a child of
# this script is not): the PID is the daemon's own.
is_daemon() { [ "$(cat "/proc/${1%%:*}/comm" 2>/dev/null)" = "${1#*:}" ] || die "pid ${1%%:*} is not ${1#*:}"; }
is_daemon "${PIDS[0]}"
say "munged (pid ${PIDS[0]%%:*}) on $SOCKET"

# This machine as slurmd sees it: NodeName=<host> CPUs=... RealMemory=...
NODE_LINE=$(slurmd -C 2>/dev/null | grep -m1 '^NodeName=') || die "slurmd -C printed no NodeName line"
NODE=${NODE_LINE#NodeName=}
NODE=${NODE%% *}
# Two free TCP ports, so that a Slurm already on this machine is not disturbed.
read -r CTLD_PORT SLURMD_PORT < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')
export SLURM_CONF=$SCRATCH/slurm.conf
cat >"$SLURM_CONF" <<EOF
# Written by scripts/slurm-check.sh: a one-node cluster on this machine.
ClusterName=muqcheck
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$SCRATCH/state
SlurmdSpoolDir=$SCRATCH/spool
SlurmctldPidFile=$SCRATCH/run/slurmctld.pid
SlurmdPidFile=$SCRATCH/run/slurmd.pid
SlurmctldLogFile=$SCRATCH/log/slurmctld.log
SlurmdLogFile=$SCRATCH/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# Finished jobs stay visible to scontrol (no accounting here) for 10 min.
MinJobAge=600
$NODE_LINE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=check Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
setsid slurmctld -D >"$SCRATCH/log/slurmctld.out" 2>&1 &
PIDS+=("$!:slurmctld")
setsid slurmd -D >"$SCRATCH/log/slurmd.out" 2>&1 &
PIDS+=("$!:slurmd")
for ((i = 0; ; i++)); do
  state=$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null || true)
  [ "$state" = idle ] && break
  for p in "${PIDS[@]}"; do
    kill -0 "${p%%:*}" 2>/dev/null || die "${p#*:} (pid ${p%%:*}) exited while the cluster came up"
  done
  [ "$i" -lt 120 ] || die "node $NODE not idle within 60 s (sinfo: '${state:-no answer}')"
  sleep 0.5
done
is_daemon "${PIDS[1]}"
is_daemon "${PIDS[2]}"
say "node $NODE idle (${NODE_LINE#* }); slurmctld pid ${PIDS[1]%%:*}, slurmd pid ${PIDS[2]%%:*}"

# ---------------------------------------------------------------------------
phase "cargo build --release"
cargo build --release -p muq
TARGET=$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
MUQ=$TARGET/release/muq
[ -x "$MUQ" ] || die "no muq binary at $MUQ"

# ---------------------------------------------------------------------------
phase "synthetic data"
# The CIFAR-10 binary layout: data_batch_1..5.bin and test_batch.bin, records
# of 1 label byte + 3,072 image bytes (R, G, B planes of 32x32), and
# batches.meta.txt. Like crates/data/src/synthetic.rs: each class its own
# colour (hue c/10) and grating (orientation c*18 degrees, 2-4 cycles), each
# image a random phase, contrast, colour jitter and pixel noise; classes
# balanced and shuffled; seeded.
DATA=$SCRATCH/cifar
python3 - "$DATA" 300 200 7 <<'EOF'
import colorsys, math, os, random, sys

out, n_train, n_test, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
names = "airplane automobile bird cat deer dog frog horse ship truck".split()
side = 32


def image(c, rng):
    theta, k = c * math.pi / 10, 2 * math.pi * (2 + c % 3) / side
    phase, contrast = rng.uniform(0, 2 * math.pi), rng.uniform(0.15, 0.35)
    colour = [min(1.0, max(0.0, x + rng.gauss(0, 0.05))) for x in colorsys.hsv_to_rgb(c / 10, 0.55, 0.65)]
    ct, st = math.cos(theta), math.sin(theta)
    grating = [contrast * math.sin(k * (x * ct + y * st) + phase) for y in range(side) for x in range(side)]
    return bytes(
        max(0, min(255, round((base + g + rng.gauss(0, 0.08)) * 255))) for base in colour for g in grating
    )


def make(n, rng):
    labels = [i % 10 for i in range(n)]
    rng.shuffle(labels)
    return [bytes([c]) + image(c, rng) for c in labels]


os.makedirs(out, exist_ok=True)
train = make(n_train, random.Random(f"{seed}/train"))
test = make(n_test, random.Random(f"{seed}/test"))
for b in range(5):
    with open(os.path.join(out, f"data_batch_{b + 1}.bin"), "wb") as f:
        f.write(b"".join(train[b::5]))
with open(os.path.join(out, "test_batch.bin"), "wb") as f:
    f.write(b"".join(test))
with open(os.path.join(out, "batches.meta.txt"), "w") as f:
    f.write("\n".join(names) + "\n")
EOF
say "$DATA: 300 training, 200 test images"

# ---------------------------------------------------------------------------
phase "sweep on the cluster"
CLUSTER=$SCRATCH/cluster
"$MUQ" sweep "${GRID[@]}" --data-dir "$DATA" --out "$CLUSTER" --slurm
mapfile -t RUNS < <("$MUQ" sweep "${GRID[@]}" --data-dir "$DATA" --out "$CLUSTER" --plan | awk '{ print $3 }')
N=${#RUNS[@]}
[ "$N" -gt 0 ] || die "the grid has no runs"
say "the grid: $N runs (${RUNS[*]})"
sed 's/^/    | /' "$CLUSTER/sweep.sbatch"
JOB=$(cd "$SCRATCH" && sbatch --parsable "$CLUSTER/sweep.sbatch")
JOB=${JOB%%;*}
say "submitted array job $JOB; waiting (at most $JOB_TIMEOUT s)"
start=$SECONDS
while :; do
  for p in "${PIDS[@]}"; do
    kill -0 "${p%%:*}" 2>/dev/null || die "${p#*:} (pid ${p%%:*}) exited while job $JOB ran"
  done
  queued=$(squeue -h -j "$JOB" -o '%i %T %R') || die "squeue failed"
  [ -n "$queued" ] || break
  [ $((SECONDS - start)) -lt "$JOB_TIMEOUT" ] ||
    die "job $JOB not done within $JOB_TIMEOUT s (MUQ_SLURM_TIMEOUT): $(tr '\n' ';' <<<"$queued")"
  sleep 1
done
# Without accounting there is no sacct: scontrol keeps finished tasks for
# MinJobAge, one line each.
tasks=$(scontrol -o show job "$JOB")
bad=0
seen=0
while read -r line; do
  [ -n "$line" ] || continue
  id=$(grep -o 'ArrayTaskId=[^ ]*' <<<"$line")
  st=$(grep -o 'JobState=[^ ]*' <<<"$line")
  ex=$(grep -o 'ExitCode=[^ ]*' <<<"$line")
  say "  task ${id#*=}: ${st#*=}, exit ${ex#*=}"
  seen=$((seen + 1))
  [ "$st" = JobState=COMPLETED ] && [ "$ex" = ExitCode=0:0 ] || bad=$((bad + 1))
done <<<"$tasks"
[ "$seen" -eq "$N" ] || die "scontrol shows $seen array tasks of job $JOB, expected $N"
[ "$bad" -eq 0 ] || die "$bad of $N array tasks did not complete with exit 0"
for ((t = 0; t < N; t++)); do
  log=$CLUSTER/logs/${JOB}_$t.out
  [ -s "$log" ] || die "no log $log"
  grep -q '^\[sweep\] 1 completed, 0 skipped (finished earlier), 0 failed' "$log" ||
    die "$log does not report exactly one completed run: $(tail -n 3 "$log")"
done
for r in "${RUNS[@]}"; do
  [ -s "$CLUSTER/runs/$r/result.json" ] || die "no $CLUSTER/runs/$r/result.json"
done
pending=$("$MUQ" sweep "${GRID[@]}" --data-dir "$DATA" --out "$CLUSTER" --plan | grep -vc ' finished ' || true)
[ "$pending" -eq 0 ] || die "muq sweep --plan still lists $pending runs of the cluster's output as pending"
say "all $N array tasks COMPLETED (exit 0:0), one log and one result.json each"

# ---------------------------------------------------------------------------
phase "the same sweep locally"
LOCAL=$SCRATCH/local
"$MUQ" sweep "${GRID[@]}" --data-dir "$DATA" --out "$LOCAL" --no-report

# ---------------------------------------------------------------------------
phase "compare cluster vs local"
python3 - "$CLUSTER" "$LOCAL" <<'EOF'
import json, os, sys

cluster, local = sys.argv[1], sys.argv[2]


def runs(d):
    r = os.path.join(d, "runs")
    return sorted(n for n in os.listdir(r) if os.path.isfile(os.path.join(r, n, "result.json")))


def load(d, run, name):
    # Numbers as their text: serde_json writes the shortest text that reads
    # back to the same f64, so equal text is equal bits.
    with open(os.path.join(d, "runs", run, name)) as f:
        return json.load(f, parse_float=str, parse_int=str)


ignored = set()


def strip(v, path=""):
    """Drops wall-clock fields: every key named `seconds`."""
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if k == "seconds":
                ignored.add(f"{path}.{k}")
            else:
                out[k] = strip(x, f"{path}.{k}")
        return out
    if isinstance(v, list):
        return [strip(x, f"{path}[]") for x in v]
    return v


def first_diff(a, b, path=""):
    if type(a) is not type(b):
        return f"{path}: {a!r} vs {b!r}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k}: present on one side only"
            d = first_diff(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} vs {len(b)} entries"
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_diff(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{path}: {a} (cluster) vs {b} (local)"


rc, rl = runs(cluster), runs(local)
if rc != rl:
    sys.exit(f"different runs: cluster {rc}, local {rl}")
metrics = 0
for run in rc:
    c, l = load(cluster, run, "result.json"), load(local, run, "result.json")
    # The metrics of every state, untouched.
    for sc, sl in zip(c["states"], l["states"]):
        d = first_diff(sc["metrics"], sl["metrics"], f"states[{sc['name']}].metrics")
        if d:
            sys.exit(f"{run}: metrics differ at {d}")
        metrics += 1
    # Everything else but wall-clock time: timings, provenance.started_unix
    # and every `seconds` field (training epochs, unlearning cost).
    for r in (c, l):
        del r["timings"], r["provenance"]["started_unix"]
    d = first_diff(strip(c), strip(l))
    if d:
        sys.exit(f"{run}: result.json differs at {d}")
    if load(cluster, run, "config.json") != load(local, run, "config.json"):
        sys.exit(f"{run}: config.json differs")
print(
    f"[slurm-check] {len(rc)} runs, {metrics} states: metrics bit-identical; "
    f"result.json identical but for timings, provenance.started_unix and "
    f"{', '.join(sorted(ignored))}; config.json identical"
)
EOF

# ---------------------------------------------------------------------------
phase "muq report on the cluster's output"
"$MUQ" report "$CLUSTER"
[ -s "$CLUSTER/summary.md" ] || die "muq report wrote no $CLUSTER/summary.md"
grep -q "^$N runs in " "$CLUSTER/summary.md" || die "summary.md does not say '$N runs in': $(head -n 3 "$CLUSTER/summary.md")"
say "$CLUSTER/summary.md: $(wc -l <"$CLUSTER/summary.md") lines"
