#!/usr/bin/env bash
# The GPU measurement of the "feed the GPU" issue, as one short script for a lent GPU machine:
# EfficientNet-B4 at 224 and Swin-B at 384, bf16, batch 64, without and with torch.compile.
#
#   bash benchmarks/gpu_bench.sh                # writes benchmarks/gpu/*.jsonl and *.log
#   OUT=/some/dir bash benchmarks/gpu_bench.sh  # (the device tool sets OUT; results land there)
#
# Data: the real CIFAR-100 is too large to carry to a machine without internet (161 MB), so this
# writes a synthetic archive in the official layout (random class-coloured 32x32 images, as the
# tests use). Throughput does not depend on what the pixels show. With the real data, pass
# DATA=/path/holding/cifar-100-python instead.
#
# Environment knobs (defaults are the issue's measurement):
#   MODELS="efficientnet_b4 swin_b"  DEVICE=cuda  PRECISION=bf16  BATCH=64  STEPS=24  REPEATS=3
#   COMPILE="no yes"  LIMIT=170 (seconds per bench run; a run that times out is reported as such)
#   PYTHON=python3 (the interpreter that has torch, torchvision and timm)
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-benchmarks/gpu}"
MODELS="${MODELS:-efficientnet_b4 swin_b}"
DEVICE="${DEVICE:-cuda}"
PRECISION="${PRECISION:-bf16}"
BATCH="${BATCH:-64}"
STEPS="${STEPS:-24}"
REPEATS="${REPEATS:-3}"
COMPILE="${COMPILE:-no yes}"
LIMIT="${LIMIT:-170}"
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
mkdir -p "$OUT"

if [ -z "${DATA:-}" ]; then
    DATA="$(mktemp -d)/synthetic"
    # 500 train (10 go to validation) and 100 test images per class: the real split's sizes.
    "$PYTHON" -c "import sys; from pathlib import Path; sys.path.insert(0, 'tests'); \
from conftest import write_archive; write_archive(Path('$DATA'), train_per_class=500, test_per_class=100)" \
        || { echo "could not write the synthetic archive" >&2; exit 1; }
fi

{ "$PYTHON" -c "import torch, torchvision, timm; print('torch', torch.__version__, '| torchvision', \
torchvision.__version__, '| timm', timm.__version__, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
} | tee "$OUT/machine.txt"

status=0
for model in $MODELS; do
    for compile in $COMPILE; do
        name="${model}_${PRECISION}_b${BATCH}$([ "$compile" = yes ] && echo _compile)"
        flag=$([ "$compile" = yes ] && echo --compile)
        echo "== $name"
        timeout "$LIMIT" "$PYTHON" -m cifar_hw2 bench --model "$model" --batch-size "$BATCH" --device "$DEVICE" \
            --precision "$PRECISION" --steps "$STEPS" --repeats "$REPEATS" --data "$DATA" $flag \
            --json "$OUT/$name.jsonl" > "$OUT/$name.log" 2>&1
        rc=$?
        tail -n 14 "$OUT/$name.log"
        [ $rc -eq 124 ] && echo "$name: stopped after $LIMIT s (timeout)"
        [ $rc -ne 0 ] && status=1
    done
done
exit $status
