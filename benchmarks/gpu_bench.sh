#!/usr/bin/env bash
# The prepared GPU check of issues 9, 17 and 22: one script for a lent GPU machine, sized to end within
# 8 minutes on one H200, compiling included (BUDGET caps the whole script; a step that would start
# after it is reported as skipped; a step that runs past its limit gets SIGTERM, then SIGKILL 10 s
# later, so a hung step cannot stall the script). Targets first: what is measured before the
# budget runs out is what matters most.
#
#   bash benchmarks/gpu_bench.sh                # → $DEST (benchmarks/gpu by default): logs, JSON, summary.txt
#   PACK=$OUT/gpu_bench.tgz bash benchmarks/gpu_bench.sh   # on the device machine: also packs DEST into one
#                                               # file ($OUT brings back at most 8 files; DEST holds ~30),
#                                               # again after every step: a call cut off at its limit
#                                               # still brings back every step that ended
#
# Dry run on a CPU (small_cnn everywhere; it checks the script, it measures nothing about GPUs; on
# a slow or shared CPU give it more time and less work: BUDGET, LIMIT, COMPILE_LIMIT, STEPS, REPEATS):
#   PYTHON=.venv/bin/python DEST=/tmp/gpu_dry MODELS=small_cnn TRAIN="small_cnn:ce small_cnn:mc" DET_MODEL=small_cnn REF_BENCH=resnet9:16 \
#   DEVICE=cpu bash benchmarks/gpu_bench.sh
#
# What it does, in order:
#   1. writes a synthetic archive in the official layout (500 train / 100 test images per class,
#      class-coloured noise, as the tests use) unless DATA points at a folder holding
#      cifar-100-python/: the real data cannot be carried to a machine without internet, and
#      throughput does not depend on what the pixels show
#   2. the targets: each of MODELS eager at TARGET_BATCH; then, for each, in one process, the
#      zero-sync check (perf/syncdebug.py: steady-state steps under torch.cuda.set_sync_debug_mode
#      "error"; on a CPU it says it is skipped) and a torch.profiler table of its steps with the
#      CUDA activity (perf/kernels.py → $DEST/kernels_MODEL/: top kernels, kernels per step, busy); then
#      each model graphed at TARGET_BATCH (--compile --compile-mode reduce-overhead: regional
#      torch.compile with CUDA graphs; the compile warm-up, cold, and a fresh process's warm start
#      from the caches are recorded). One bench process per model, mode and batch size (one
#      compiled batch size per process)
#   3. the same benches as in 2 at each of OTHER_BATCHES, then the sync check of each graphed step.
#      REF_BENCH (model:batch, eager: the GPU reference's ResNet-9 at 512, whose hours per row, 30
#      epochs of 45,000 images, size issue 23's runs) runs in 2, after the eager steps: it is short
#   4. trains each TRAIN pair (model:loss; B4 with CE and Swin-B with MC) for 2 short epochs on a
#      subset, from scratch, then evaluates its best.pt on the test split
#   5. runs DET_MODEL with --deterministic three times: 2 epochs uninterrupted; 2 epochs killed with
#      SIGKILL inside epoch 2, after a last.pt written there; that one resumed. history.csv (less
#      the wall-clock columns) and metrics.json must be identical
#   6. prints one summary table (also $DEST/summary.txt), with the sync checks' and profiles' lines
#
# Knobs (environment; MODELS, TRAIN, DET_MODEL, OTHER_BATCHES and REF_BENCH set empty skip their steps:
#   a second call that runs only what a first one's budget left, docs/benchmarks.md):
#   MODELS="efficientnet_b4 swin_b"  TRAIN="efficientnet_b4:ce swin_b:mc"
#   DET_MODEL=efficientnet_b4  DEVICE=cuda  PRECISION=auto  TARGET_BATCH=64  OTHER_BATCHES=32
#   MODES="eager graphed"  STEPS=16  REPEATS=2  LIMIT=150 (s per step)  COMPILE_LIMIT=200 (s per
#   graphed bench: compile, windows and warm start)  BUDGET=470 (s for the whole script)  PYTHON=python3
#   REF_BENCH="resnet9:512"  TRAIN_PER_CLASS=20 (images per class in step 4)  DET_PER_CLASS=40 (in step 5)
#   TRAIN_LR=1e-4 (step 4: from scratch without warm-up, quick's 2e-3 could make Swin-B's MC loss NaN)
#   DEST=benchmarks/gpu (what it writes)  PACK= (a .tgz to pack DEST into, after each step)
#   DATA= (a folder holding cifar-100-python/; default: a synthetic archive in a temporary folder)
# It never writes to $OUT unless PACK says so: on the device machine $OUT is the folder that comes back.
set -uo pipefail
cd "$(dirname "$0")/.."

DEST="${DEST:-benchmarks/gpu}"
MODELS="${MODELS-efficientnet_b4 swin_b}"
TRAIN="${TRAIN-efficientnet_b4:ce swin_b:mc}"
DET_MODEL="${DET_MODEL-efficientnet_b4}"
DEVICE="${DEVICE:-cuda}"
PRECISION="${PRECISION:-auto}"
TARGET_BATCH="${TARGET_BATCH:-64}"
OTHER_BATCHES="${OTHER_BATCHES-32}"
MODES="${MODES:-eager graphed}"
STEPS="${STEPS:-16}"
REPEATS="${REPEATS:-2}"
LIMIT="${LIMIT:-150}"
COMPILE_LIMIT="${COMPILE_LIMIT:-200}"
BUDGET="${BUDGET:-470}"
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c "import torch, torchvision, timm" 2>/dev/null || {
    echo "$PYTHON cannot import torch, torchvision and timm: set PYTHON= to an interpreter that can; nothing was run" >&2
    exit 3; }
REF_BENCH="${REF_BENCH-resnet9:512}"
TRAIN_PER_CLASS="${TRAIN_PER_CLASS:-20}"
TRAIN_LR="${TRAIN_LR:-1e-4}"
DET_PER_CLASS="${DET_PER_CLASS:-40}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
mkdir -p "$DEST"
START=$SECONDS
: > "$DEST/steps.tsv"    # one line per step: name, status, seconds

# run NAME CMD...: the step under min(STEP_LIMIT or LIMIT, what is left of BUDGET), logged to $DEST/NAME.log
run() {
    local name=$1; shift
    local left=$((BUDGET - (SECONDS - START)))
    local cap=${STEP_LIMIT:-$LIMIT}
    local limit=$(( left < cap ? left : cap ))
    if [ "$limit" -le 5 ]; then
        printf '%s\tskipped (budget spent)\t0\n' "$name" >> "$DEST/steps.tsv"; echo "== $name: skipped, budget spent"
        return 1
    fi
    echo "== $name (limit ${limit}s)"
    local t0=$SECONDS
    if declare -F "$1" > /dev/null; then
        STEP_LEFT=$limit "$@" > "$DEST/$name.log" 2>&1     # a function of this script: it keeps STEP_LEFT itself
    else
        timeout -k 10 "$limit" "$@" > "$DEST/$name.log" 2>&1
    fi
    local rc=$?
    local status=ok
    [ $rc -ne 0 ] && status="failed (exit $rc)"
    { [ $rc -eq 124 ] || [ $rc -eq 137 ]; } && status="timed out after ${limit}s"
    printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - t0))" >> "$DEST/steps.tsv"
    tail -n 3 "$DEST/$name.log"
    pack
    return $rc
}

# pack: DEST into PACK (if set), replacing the last pack only once the new one is whole
pack() {
    [ -n "${PACK:-}" ] || return 0
    tar czf "$PACK.part" -C "$(dirname "$DEST")" "$(basename "$DEST")" && mv "$PACK.part" "$PACK"
}

if [ -z "${DATA:-}" ]; then
    DATA="$(mktemp -d)/synthetic"
    "$PYTHON" -c "import sys; from pathlib import Path; sys.path.insert(0, 'tests'); \
from conftest import write_archive; write_archive(Path('$DATA'), train_per_class=500, test_per_class=100)" \
        || { echo "could not write the synthetic archive" >&2; exit 1; }
fi

{ "$PYTHON" -c "import torch, torchvision, timm; print('torch', torch.__version__, '| torchvision', \
torchvision.__version__, '| timm', timm.__version__, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
} | tee "$DEST/machine.txt"

RUNS="$(mktemp -d)/runs"       # checkpoints: kept out of DEST, which stays small enough to pack
small=(--preset quick --no-pretrained --device "$DEVICE" --precision "$PRECISION" --data "$DATA" --batch-size 64
       --val-per-class 2 --test-per-class 10 --epochs 2 --progress epoch)

# bench MODEL MODE BATCH: one bench process (records appended to its JSONL as they are measured)
bench() {
    local model=$1 mode=$2 batch=$3 flags=()
    [ "$mode" = graphed ] && flags=(--compile --compile-mode reduce-overhead --warm-start)
    local limit=$LIMIT; [ "$mode" = graphed ] && limit=$COMPILE_LIMIT
    STEP_LIMIT=$limit run "bench_${model}_${mode}_${batch}" "$PYTHON" -m cifar_hw2 bench --model "$model" \
        --batch-size "$batch" --device "$DEVICE" --precision "$PRECISION" --steps "$STEPS" --repeats "$REPEATS" \
        --data "$DATA" "${flags[@]}" --json "$DEST/bench_${model}_${mode}_${batch}.jsonl"
}

# sync_check MODEL [COMPILE_MODE [LIMIT]]: the zero-sync check of the steady-state step (exit 1 if CUDA reports a sync)
sync_check() {
    local model=$1 flags=() name="sync_$1"
    [ -n "${2:-}" ] && { flags=(--compile-mode "$2"); name="sync_${1}_graphed"; }
    STEP_LIMIT=${3:-$LIMIT} run "$name" "$PYTHON" -m cifar_hw2.perf.syncdebug --model "$model" \
        --batch-size "$TARGET_BATCH" --device "$DEVICE" --precision "$PRECISION" --data "$DATA" "${flags[@]}" \
        --json "$DEST/$name.json"
}
# steady MODEL: in one process, the zero-sync check of the eager steady-state step ($DEST/sync_MODEL.json)
# and torch.profiler's top kernels of its steps ($DEST/kernels_MODEL/)
steady() {
    run "steady_$1" "$PYTHON" -m cifar_hw2.perf.kernels --model "$1" --batch-size "$TARGET_BATCH" \
        --device "$DEVICE" --precision "$PRECISION" --data "$DATA" --out "$DEST/kernels_$1" --sync-json "$DEST/sync_$1.json"
}

# 2. the targets: eager at TARGET_BATCH for every model, its sync check and profile, then graphed.
# Between them the GPU reference's network (issue 23), eager: short, and its measured hours per row
# size that session's runs, so it comes before the graphed benches, which may spend what is left.
ref_bench() { for pair in $REF_BENCH; do bench "${pair%%:*}" eager "${pair##*:}"; done; }
for mode in $MODES; do
    [ "$mode" = graphed ] && { ref_bench; REF_BENCH=; }
    for model in $MODELS; do bench "$model" "$mode" "$TARGET_BATCH"; done
    if [ "$mode" = eager ]; then
        for model in $MODELS; do steady "$model"; done
    fi
done
ref_bench                       # where MODES has no graphed
# 3. the rest of the benches, then the graphed steps' sync checks (their compile caches are warm now)
for batch in $OTHER_BATCHES; do
    for mode in $MODES; do
        for model in $MODELS; do bench "$model" "$mode" "$batch"; done
    done
done
case " $MODES " in *" graphed "*)
    for model in $MODELS; do sync_check "$model" reduce-overhead "$COMPILE_LIMIT"; done ;;
esac

# 4. train and evaluate
for pair in $TRAIN; do
    model=${pair%%:*}; loss=${pair##*:}
    run "train_${model}_${loss}" "$PYTHON" -m cifar_hw2 train "${small[@]}" --model "$model" --loss "$loss" \
        --train-per-class "$TRAIN_PER_CLASS" --lr "$TRAIN_LR" --out "$RUNS/${model}_${loss}" \
    && run "evaluate_${model}_${loss}" "$PYTHON" -m cifar_hw2 evaluate --checkpoint "$RUNS/${model}_${loss}/best.pt" \
        --device "$DEVICE"
done

# 5. --deterministic: killed inside epoch 2 and resumed = uninterrupted
if [ -n "$DET_MODEL" ]; then
det=("$PYTHON" -m cifar_hw2 train "${small[@]}" --model "$DET_MODEL" --loss ce --train-per-class "$DET_PER_CLASS" --deterministic)
run det_full "${det[@]}" --out "$RUNS/det_full"
# A last.pt at every refresh point (--checkpoint-minutes 0.001; every 25 steps on a GPU). A watcher
# reads each new one (os.replace makes each a new file) and SIGKILLs the run as soon as one holds a
# place inside epoch 2: the resume then restores that place, CUDA's RNG state and running sums
# included, not only an epoch's end.
kill_inside_epoch_2() {
    "${det[@]}" --checkpoint-minutes 0.001 --out "$RUNS/det_killed" &
    local pid=$!
    "$PYTHON" - "$RUNS/det_killed/last.pt" "$pid" "${STEP_LEFT:-$LIMIT}" <<'PY'
import os, signal, sys, time
import torch
path, pid, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])

def running():      # not exited (an exited child stays a zombie until the shell waits for it)
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

start, seen = time.monotonic(), None
while time.monotonic() - start < limit:
    try:
        st = os.stat(path)
        key = (st.st_ino, st.st_mtime_ns)
    except FileNotFoundError:
        key = None
    if key is not None and key != seen:
        try:
            where = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("position")
            seen = key
        except Exception:           # caught mid-write: read it again at the next poll
            where = None
        if where and where["epoch"] == 1:
            os.kill(pid, signal.SIGKILL)
            print(f"killed inside epoch 2, after its last.pt at step {where['step']}")
            sys.exit(0)
    if not running():
        print("the run ended before writing a last.pt inside epoch 2")
        sys.exit(1)
    time.sleep(0.02)
os.kill(pid, signal.SIGKILL)
print(f"no last.pt inside epoch 2 within {limit:.0f} s")
sys.exit(1)
PY
    local rc=$?
    wait $pid 2>/dev/null
    return $rc
}
run det_killed kill_inside_epoch_2
run det_resumed "${det[@]}" --out "$RUNS/det_killed" --resume
run det_compare "$PYTHON" - "$RUNS/det_full" "$RUNS/det_killed" <<'EOF'
import csv, sys
from pathlib import Path
def rows(run):
    with open(Path(run) / "history.csv") as f:
        return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in csv.DictReader(f)]
a, b = sys.argv[1:3]
same = rows(a) == rows(b) and (Path(a) / "metrics.json").read_text() == (Path(b) / "metrics.json").read_text()
print("identical" if same else "DIFFERENT")
sys.exit(0 if same else 1)
EOF
fi

# 6. summary
"$PYTHON" - "$DEST" <<'EOF' | tee "$DEST/summary.txt"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("step                                 status                     seconds")
for line in (out / "steps.tsv").read_text().splitlines():
    name, status, seconds = line.split("\t")
    extra = ""
    if name.startswith("evaluate_") and status == "ok":
        text = (out / f"{name}.log").read_text()      # evaluate's JSON, maybe with lines after it
        extra = f"  test top1 {json.JSONDecoder().raw_decode(text[text.index('{'):])[0]['top1']:.3f}"
    if name.startswith(("sync_", "steady_")) and (out / f"{name}.log").exists():
        said = [line.strip() for line in (out / f"{name}.log").read_text().splitlines()
                if line.startswith(("sync check", "  ")) or " ms a step" in line]
        extra = "".join(f"\n    {line[:160]}" for line in said[:4])
    print(f"{name:<36} {status:<26} {seconds:>7}{extra}")
cols = [("train_step_synthetic", "synthetic", "{:.0f}"), ("end_to_end", "e2e img/s", "{:.0f}"),
        ("end_to_end_over_synthetic", "e2e/syn", "{:.3f}"), ("trainer_over_bare_loop", "trainer/bare", "{:.3f}"),
        ("warmup", "warm-up s", "{:.1f}"), ("compile_warmup", "compile s", "{:.1f}"),
        ("compile_warm_start", "warm start s", "{:.1f}"), ("peak_gpu_memory", "peak GiB", "{:.1f}"),
        ("achieved_tflops", "TFLOP/s", "{:.1f}"), ("hours_per_row", "h/row", "{:.2f}")]
print()
print(f"{'model':<16} {'mode':<8} {'prec':<5} {'batch':>5} " + " ".join(f"{c[1]:>12}" for c in cols))
for path in sorted(out.glob("bench_*.jsonl"), key=lambda p: p.stat().st_mtime):   # in the order measured
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not records:
        continue
    v = {r["measurement"]: r for r in records}
    m = records[-1]                       # a bench cut short still shows what it measured
    mode = "graphed" if m["compile"] else "eager"
    cells = [fmt.format(v[k]["value"]) if k in v else "-" for k, _, fmt in cols]
    print(f"{m['model']:<16} {mode:<8} {m['precision']:<5} {m['batch_size']:>5} " + " ".join(f"{c:>12}" for c in cells))
EOF
echo "total: $((SECONDS - START)) s" | tee -a "$DEST/summary.txt"
pack && [ -n "${PACK:-}" ] && echo "packed $DEST into $PACK ($(du -h "$PACK" | cut -f1))"
! grep -qv $'\tok\t' "$DEST/steps.tsv"
