#!/usr/bin/env bash
# Re-make the CPU reference (results/cpu-reference/) from a clean checkout.
#
#   bash results/cpu-reference/reproduce.sh [OUT]          default OUT: runs/cpu-reference
#
# small_cnn on the real CIFAR-100, preset cpu-reference (7 epochs, batch 64, loader augmentation).
# CE and FLSD-53, the pair whose calibration the papers compare, at seeds 0, 1, 2; focal (γ = 2)
# and MC at seed 0. 8 runs; the committed ones took 11.5 to 24.5 minutes each on 2 CPU cores, about
# 2 hours in all (docs/cpu-reference.md). Runs that are complete are skipped, an interrupted one
# resumes, so the script can be stopped and started again.
#
# OUT is outside git's view (runs/ is ignored), so every run records the same clean commit in its
# config.json; copy OUT's run folders into results/cpu-reference/ and commit them afterwards.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-runs/cpu-reference}"
PY="${PYTHON:-python}"

if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "reproduce.sh: the checkout has uncommitted changes; commit or stash them first, so that" >&2
  echo "every run's config.json names a commit that anyone can check out." >&2
  exit 2
fi

for run in "ce 0" "flsd53 0" "ce 1" "flsd53 1" "ce 2" "flsd53 2" "focal 0" "mc 0"; do
  set -- $run
  folder="$OUT/$1-seed$2"
  if [ -f "$folder/metrics.json" ] && grep -q '"complete": true' "$folder/metrics.json"; then
    echo "$folder: complete, skipped"; continue
  fi
  echo "== $folder"
  "$PY" -m cifar_hw2 train --preset cpu-reference --loss "$1" --seed "$2" --progress epoch --resume --out "$folder"
done
"$PY" -m cifar_hw2 report --runs "$OUT" --title "CPU reference: small CNN on real CIFAR-100, four losses, three seeds for CE and FLSD-53"
