#!/usr/bin/env bash
# Issue 23's GPU reference: ResNet-9 trained from scratch on the real CIFAR-100 (preset
# gpu-reference: 45,000 training images, 5,000 for validation, the whole test split), with CE,
# focal γ = 3, FLSD-53 and MC, side by side on one GPU (one process each), then `report`.
# The exact device calls that bring the data and run this: docs/gpu.md, "The GPU reference runs".
#
#   SHARDS= BUDGET=3600 bash benchmarks/gpu_reference.sh   # on your own GPU, after `python -m cifar_hw2 data`:
#       the package's data folder as it is (or DATA=), an hour's budget for a slower card
#   COMMIT=<sha of the clean commit> PACK=$OUT/gpu_reference.tgz bash benchmarks/gpu_reference.sh
#       # on the project's lent machine, which has no network (docs/gpu.md)
#
# In order:
#   1. with SHARDS empty, uses DATA/cifar-100-python/ as it is. Else joins the parts
#      SHARDS/cifar100.tar.0, .1, ... into the shards, where the data came as parts (docs/gpu.md);
#      checks each shard in SHARDS against meta.json (size and SHA-256), then rebuilds the official
#      cifar-100-python/ in DATA with the shards' own to_official.py (~10 s)
#   2. trains the runs of FIRST together, each under --time-limit (what is left of BUDGET, less a
#      margin) and --resume: a run cut short keeps its last.pt, and running the script again on
#      the same (still warm) machine continues it exactly where it stopped
#   3. trains the runs of THEN together, if what is left of BUDGET exceeds FIRST's time scaled to
#      THEN's number of runs (the GPU is shared), with a fifth to spare
#   4. fills in config.json's git_commit from COMMIT where git could not say (the device machine's
#      copy of the tree may lack .git), saying so in the file; writes report.md and its figures
#      (`python -m cifar_hw2 report`) and one summary table (also DEST/logs/summary.txt)
#   5. with PACK, packs the run folders (no checkpoints, no predictions), the report and DEST/logs
#      into one .tgz, and puts each run's predictions.npz beside it as RUN.predictions.npz: what
#      comes back from the device machine, at most 8 files of at most 16 MiB each (one run's
#      predictions on the full splits are ~5.5 MB and compressed already: six would not fit in the
#      .tgz). Also after the first wave: a call cut off at its limit still brings that wave back
#
# Knobs (environment): SHARDS=.gpudata (empty: DATA as it is)  DATA=/tmp/cifar_hw2_gpu_reference (with
#   SHARDS empty: the package's data folder)
#   DEST=runs/gpu-reference
#   FIRST="ce:0 focal:0 flsd53:0 mc:0"  THEN="ce:1 flsd53:1"  (loss:seed; focal runs with γ = FOCAL_GAMMA=3)
#   BUDGET=420 (s, the whole script)  DEVICE=cuda  PRECISION=auto  PYTHON=python3  COMMIT=  PACK=
#   TRAIN_OPTS= (more train options; the CPU dry run's smaller subset and epochs, docs/gpu.md)
#
# Dry run on a CPU (a small real subset; it checks the script and the rebuild, it measures nothing;
# SHARDS may hold the shards themselves, as here, or the parts of docs/gpu.md):
#   PYTHON=.venv/bin/python SHARDS=../shared/data/cifar100 DATA=/tmp/gpuref-data DEST=/tmp/gpuref DEVICE=cpu \
#   TRAIN_OPTS="--train-per-class 5 --val-per-class 5 --test-per-class 5 --epochs 2 --batch-size 50" \
#   BUDGET=1500 bash benchmarks/gpu_reference.sh
set -uo pipefail
cd "$(dirname "$0")/.."

SHARDS="${SHARDS-.gpudata}"
DATA_SET="${DATA:-}"
DATA="${DATA:-/tmp/cifar_hw2_gpu_reference}"
DEST="${DEST:-runs/gpu-reference}"
FIRST="${FIRST:-ce:0 focal:0 flsd53:0 mc:0}"
THEN="${THEN-ce:1 flsd53:1}"
FOCAL_GAMMA="${FOCAL_GAMMA:-3}"
BUDGET="${BUDGET:-420}"
DEVICE="${DEVICE:-cuda}"
PRECISION="${PRECISION:-auto}"
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c "import torch, torchvision, timm" 2>/dev/null || {
    echo "$PYTHON cannot import torch, torchvision and timm: set PYTHON= to an interpreter that can; nothing was run" >&2
    exit 3; }
COMMIT="${COMMIT:-}"
TRAIN_OPTS="${TRAIN_OPTS:-}"
MARGIN=40          # s kept back from each wave's time limit: a stop waits for the epoch's evaluation
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
LOGS="$DEST/logs"
mkdir -p "$LOGS"
START=$SECONDS
: > "$LOGS/steps.tsv"    # one line per step: name, status, seconds

# 1. the data. With SHARDS empty, DATA must already hold cifar-100-python/ (`python -m cifar_hw2 data`
# fetches it): used as it is. Else, on the lent machine: a device call carries at most 64 MiB with the
# working tree, so the shards travel as PARTS of one tar, a part a call (docs/gpu.md); joined here,
# then checked shard by shard below, then rebuilt into DATA.
if [ -z "$SHARDS" ]; then
    # the package's own data folder ($CIFAR_HW2_DATA, else under $XDG_CACHE_HOME or ~/.cache), unless DATA is set
    [ -n "${DATA_SET:-}" ] || DATA="$("$PYTHON" -c 'from cifar_hw2.data import data_root; print(data_root())')"
    for f in train test meta; do
        [ -f "$DATA/cifar-100-python/$f" ] || {
            echo "SHARDS is empty, so DATA must hold cifar-100-python/, but $DATA/cifar-100-python/$f is missing: run \
\`$PYTHON -m cifar_hw2 data --data $DATA\` first, or set DATA to the folder that holds it; nothing was trained" >&2
            exit 3; }
    done
    echo "$DATA: cifar-100-python/ used as it is (SHARDS is empty)"
else
parts=("$SHARDS"/cifar100.tar.?)
if [ -e "${parts[0]}" ]; then
    echo "$SHARDS: joining ${#parts[@]} parts (${parts[*]##*/})"
    cat "${parts[@]}" | tar xf - -C "$SHARDS" || {
        echo "the parts in $SHARDS (${parts[*]##*/}) do not make the whole tar: carry the missing ones again; nothing was trained" >&2
        exit 3; }
fi
"$PYTHON" - "$SHARDS" <<'EOF' || { echo "the data in $SHARDS cannot be used; nothing was trained" >&2; exit 3; }
import hashlib, json, sys
from pathlib import Path
folder = Path(sys.argv[1])
try:
    shards = json.loads((folder / "meta.json").read_text())["shards"]
except (OSError, ValueError, KeyError) as e:
    sys.exit(f"{folder}/meta.json cannot be read ({type(e).__name__}): copy the shards, meta.json and "
             f"to_official.py of shared/data/cifar100 there first, or set SHARDS= (empty) and DATA to a "
             f"folder that holds cifar-100-python/")
bad = []
for shard in shards:
    path = folder / shard["file"]
    if not path.is_file():
        bad.append(f"{shard['file']} missing")
    elif path.stat().st_size != shard["bytes"]:
        bad.append(f"{shard['file']} has {path.stat().st_size} bytes, not {shard['bytes']}")
    elif hashlib.sha256(path.read_bytes()).hexdigest() != shard["sha256"]:
        bad.append(f"{shard['file']}: SHA-256 differs from meta.json's")
if bad:
    sys.exit(f"{folder}: " + "; ".join(bad))
print(f"{folder}: {len(shards)} shards match meta.json (size and SHA-256)")
EOF
"$PYTHON" "$SHARDS/to_official.py" "$DATA" || { echo "rebuilding the official layout failed" >&2; exit 3; }
fi
printf 'data\tok\t%s\n' "$((SECONDS - START))" >> "$LOGS/steps.tsv"

{ "$PYTHON" -c "import torch, torchvision, timm, platform; print('python', platform.python_version(), '| torch', \
torch.__version__, '| torchvision', torchvision.__version__, '| timm', timm.__version__, '|', \
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  echo "commit: ${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
} | tee "$LOGS/machine.txt"

# wave "loss:seed ...": one train process per run, all at once; each under --time-limit and timeout
wave() {
    local left=$((BUDGET - (SECONDS - START)))
    local runs=($1) pids=() names=() n=$(echo $1 | wc -w)
    if [ "$left" -le $((MARGIN + 20)) ]; then
        for pair in "${runs[@]}"; do
            printf '%s\tskipped (budget spent)\t0\n' "train_${pair%%:*}-seed${pair##*:}" >> "$LOGS/steps.tsv"
        done
        return
    fi
    local hours threads=$(( $(nproc) / n ))
    hours=$(awk -v s=$((left - MARGIN)) 'BEGIN { printf "%.4f", s / 3600 }')
    [ "$threads" -lt 1 ] && threads=1
    echo "== training ${runs[*]} together (time limit ${hours} h each, ${threads} CPU threads each)"
    for pair in "${runs[@]}"; do
        local loss=${pair%%:*} seed=${pair##*:} extra=()
        [ "$loss" = focal ] && extra=(--gamma "$FOCAL_GAMMA")
        local name="$loss-seed$seed"
        # shellcheck disable=SC2086  # TRAIN_OPTS is a list of options
        OMP_NUM_THREADS=$threads timeout -k 10 "$left" "$PYTHON" -m cifar_hw2 train --preset gpu-reference \
            --loss "$loss" --seed "$seed" "${extra[@]}" --data "$DATA" --device "$DEVICE" --precision "$PRECISION" \
            --progress epoch --time-limit "$hours" --resume --out "$DEST/$name" $TRAIN_OPTS \
            > "$LOGS/train_$name.log" 2>&1 &
        pids+=($!); names+=("$name")
    done
    local t0=$SECONDS
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}"
        local rc=$? status=ok
        [ $rc -ne 0 ] && status="failed (exit $rc)"
        { [ $rc -eq 124 ] || [ $rc -eq 137 ]; } && status="timed out"
        grep -q "time limit of" "$LOGS/train_${names[$i]}.log" && status="stopped by the time limit (resumable)"
        printf '%s\t%s\t%s\n' "train_${names[$i]}" "$status" "$((SECONDS - t0))" >> "$LOGS/steps.tsv"
        tail -n 2 "$LOGS/train_${names[$i]}.log"
    done
}

# pack: see 5. in the header; replaces the last pack only once the new one is whole
pack() {
    [ -n "${PACK:-}" ] || return 0
    local dir n=0 f
    dir="$(dirname "$PACK")"
    (cd "$DEST" && tar czf - --exclude='*.pt' --exclude='*.tmp' --exclude='.lock' --exclude='*artifacts*' \
        --exclude='predictions*.npz' .) > "$PACK.part" && mv "$PACK.part" "$PACK" \
        || { echo "packing $DEST into $PACK failed" >&2; return 1; }
    for f in "$DEST"/*/predictions.npz; do
        [ -f "$f" ] || continue
        n=$((n + 1))
        if [ $n -gt 7 ]; then echo "not brought back: $f (a call returns at most 8 files)" >&2; continue; fi
        cp "$f" "$dir/$(basename "$(dirname "$f")").predictions.npz"
    done
    for f in "$PACK" "$dir"/*.predictions.npz; do
        [ -f "$f" ] && [ "$(wc -c < "$f")" -gt 16777216 ] && echo "$f is over 16 MiB: it will not come back" >&2
    done
    return 0
}

# 2. and 3. the runs
t_first=$SECONDS
wave "$FIRST"
pack
first_seconds=$((SECONDS - t_first))
if [ -n "$THEN" ]; then
    n_first=$(echo $FIRST | wc -w); n_then=$(echo $THEN | wc -w)
    need=$(( first_seconds * n_then * 6 / (n_first * 5) + MARGIN ))
    left=$((BUDGET - (SECONDS - START)))
    if [ "$left" -ge "$need" ]; then
        wave "$THEN"
    else
        echo "== not training $THEN: ${left} s left, about ${need} s needed"
        for pair in $THEN; do
            printf '%s\tskipped (%s s left, ~%s s needed)\t0\n' "train_${pair%%:*}-seed${pair##*:}" "$left" "$need" \
                >> "$LOGS/steps.tsv"
        done
    fi
fi

# 4. provenance, report, summary
"$PYTHON" - "$DEST" "$COMMIT" <<'EOF'
import json, sys
from pathlib import Path
dest, commit = Path(sys.argv[1]), sys.argv[2]
for path in sorted(dest.glob("*/config.json")):
    record = json.loads(path.read_text())
    if record.get("git_commit") is None and commit:
        record["git_commit"] = commit
        record["git_commit_from"] = ("COMMIT given to benchmarks/gpu_reference.sh, where git could not name the commit "
                                     "(no git or no .git on the device machine); the calling session's tree was clean at it")
        path.write_text(json.dumps(record, indent=2) + "\n")
    elif record.get("git_commit") is None:
        print(f"{path}: no git commit recorded and no COMMIT given: this run has no provenance", file=sys.stderr)
EOF
t0=$SECONDS
"$PYTHON" -m cifar_hw2 report --runs "$DEST" \
    --title "GPU reference: ResNet-9 from scratch on real CIFAR-100 (CE, focal γ=$FOCAL_GAMMA, FLSD-53, MC)" \
    > "$LOGS/report.log" 2>&1 && status=ok || status="failed (exit $?)"
printf 'report\t%s\t%s\n' "$status" "$((SECONDS - t0))" >> "$LOGS/steps.tsv"

"$PYTHON" - "$DEST" <<'EOF' | tee "$LOGS/summary.txt"
import json, sys
from pathlib import Path
dest = Path(sys.argv[1])
print("step                         status                                   seconds")
for line in (dest / "logs" / "steps.tsv").read_text().splitlines():
    name, status, seconds = line.split("\t")
    print(f"{name:<28} {status:<40} {seconds:>7}")
print()
print(f"{'run':<14} {'epochs':>7} {'best ep':>7} {'top-1 %':>8} {'NLL':>6} {'ECE %':>6} {'T':>5} {'ECE T %':>7} "
      f"{'T(ECE)':>6} {'ECE T(ECE) %':>12} {'min':>5}")
for path in sorted(dest.glob("*/metrics.json")):
    m = json.loads(path.read_text())
    b = m["best"]
    minutes = 0.0
    history = path.parent / "history.csv"
    if history.exists():
        import csv
        with open(history) as f:
            minutes = sum(float(r["seconds"]) for r in csv.DictReader(f)) / 60
    print(f"{path.parent.name:<14} {m['epochs_done']:>3}/{m['epochs']:<3} {b['epoch']:>7} {100 * b['top1']:>8.2f} "
          f"{b['nll']:>6.3f} {100 * b['ece']:>6.2f} {b['temperature']:>5.2f} {100 * b['ece_ts']:>7.2f} "
          f"{b['temperature_ece']:>6.2f} {100 * b['ece_ts_ece']:>12.2f} {minutes:>5.1f}")
EOF
echo "total: $((SECONDS - START)) s" | tee -a "$LOGS/summary.txt"

# 5. pack what comes back
pack && [ -n "${PACK:-}" ] && echo "packed $DEST (no checkpoints, no predictions) into $PACK ($(du -h "$PACK" | \
cut -f1)); beside it: $(cd "$(dirname "$PACK")" && ls -- *.predictions.npz 2>/dev/null | tr '\n' ' ')"
# exit 0 when every step ran ok, THEN's runs aside, which the budget may skip
! grep -v $'\tok\t' "$LOGS/steps.tsv" | grep -qv $'\tskipped'
