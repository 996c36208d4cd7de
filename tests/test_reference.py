"""The committed CPU reference (results/cpu-reference/) is evidence: it must come from a clean
commit and the code must still reproduce it. Re-running epoch 1 of one committed run must give its
history row exactly (wall-clock columns aside), so the evidence cannot drift from the code."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REAL_DATA, needs_real_data

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "results" / "cpu-reference"
RUNS = sorted(p.parent for p in REFERENCE.glob("*/config.json"))
WALL_CLOCK = {"seconds", "images_per_s"}


def test_every_reference_run_names_a_clean_commit_of_this_history():
    assert len(RUNS) >= 8, "expected CE and FLSD-53 at seeds 0, 1 and 2, focal and MC at seed 0"
    for run in RUNS:
        commit = json.loads((run / "config.json").read_text())["git_commit"]
        assert commit and not commit.endswith("-dirty"), f"{run.name}: made from {commit!r}"
        known = subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=ROOT, capture_output=True)
        if known.returncode != 0 and (ROOT / ".git" / "shallow").exists():
            pytest.skip("shallow clone: older commits are not here")
        assert known.returncode == 0, f"{run.name}: commit {commit} is not in this repository's history"


def test_reference_seeds_and_settings():
    configs = {run.name: json.loads((run / "config.json").read_text()) for run in RUNS}
    for name, record in configs.items():
        cfg = record["config"]
        assert name == f"{cfg['loss']}-seed{cfg['seed']}"
        assert cfg["model"] == "small_cnn" and cfg["epochs"] == 7 and record["augment_on"] == "loader"
    seeds = {(c["config"]["loss"], c["config"]["seed"]) for c in configs.values()}
    # The pair whose calibration the papers compare, with seeds; the other two losses once each.
    expected = {("ce", s) for s in (0, 1, 2)} | {("flsd53", s) for s in (0, 1, 2)} | {("focal", 0), ("mc", 0)}
    assert expected <= seeds, f"missing reference runs: {sorted(expected - seeds)}"


def history(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def epoch_1_again(run: str, out: Path) -> dict:
    """Train epoch 1 of a committed reference run again (same command, 1 epoch) and return its row."""
    cfg = json.loads((REFERENCE / run / "config.json").read_text())["config"]
    done = subprocess.run([sys.executable, "-m", "cifar_hw2", "train", "--preset", "cpu-reference",
                           "--loss", cfg["loss"], "--seed", str(cfg["seed"]), "--epochs", "1",
                           "--progress", "off", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=3600,
                          env={**os.environ, "CIFAR_HW2_DATA": REAL_DATA})
    assert done.returncode == 0, done.stdout + done.stderr
    again = history(out / "history.csv")[0]
    assert set(again) == set(history(REFERENCE / run / "history.csv")[0])
    return again


def kernels_here() -> dict:
    import torch
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch_threads": torch.get_num_threads()}


def recorded_kernels(run: str) -> dict:
    versions = json.loads((REFERENCE / run / "config.json").read_text())["versions"]
    return {k: versions.get(k) for k in ("cpu_capability", "torch_threads")}


# Digit for digit is promised only for the same code, data, CPU kernel family (torch's
# cpu_capability: AVX2, AVX512, ...) and thread count: another family sums floats in another
# order, the first step differs in the last bit, and training amplifies it. mc-seed0 is the
# reference run whose config.json records both.
EXACT_RUN = "mc-seed0"


@needs_real_data
def test_epoch_1_of_a_committed_run_reproduces_exactly_on_its_kernels(tmp_path):
    recorded = recorded_kernels(EXACT_RUN)
    assert None not in recorded.values(), f"{EXACT_RUN}/config.json must record {sorted(recorded)}"
    if kernels_here() != recorded:
        pytest.skip(f"digit-for-digit is promised on {recorded} only; this machine has {kernels_here()} "
                    f"(test_epoch_1_of_flsd53_on_other_kernels_lies_within_the_seed_spread compares instead)")
    committed, again = history(REFERENCE / EXACT_RUN / "history.csv")[0], epoch_1_again(EXACT_RUN, tmp_path / "again")
    differ = {k: (committed[k], again[k]) for k in committed if k not in WALL_CLOCK and committed[k] != again[k]}
    assert not differ, f"epoch 1 no longer reproduces the committed reference: {differ}"


# On other kernels, what can honestly be compared: the learning rate exactly (no float sums),
# and every other number to within what the seed alone gives at epoch 1. Two runs drawn from the
# seed distribution differ with a standard deviation of sqrt(2)·sd, so the bound is 3·sqrt(2)·sd,
# with sd the sample sd over flsd53 seeds 0-2. A kernel family moves epoch 1 far less than a seed
# does (AMD EPYC, AVX2, against AVX-512: test top-1 0.1119 against 0.1097; the seeds span 0.1097
# to 0.1305), while a change in what the code computes (loss, schedule, data, augmentation) would
# not be held to it. The range of three seeds is too tight a bound: AVX2's NLL-fit temperature
# (1.0101 against 1.0634) fell just outside it.
SPREAD_RUN, SEEDS = "flsd53-seed0", ("flsd53-seed0", "flsd53-seed1", "flsd53-seed2")


@needs_real_data
def test_epoch_1_of_flsd53_on_other_kernels_lies_within_the_seed_spread(tmp_path):
    import statistics
    if kernels_here() == recorded_kernels(EXACT_RUN):
        pytest.skip(f"this machine has the reference's kernels {kernels_here()}: the exact test runs instead")
    rows = [history(REFERENCE / seed / "history.csv")[0] for seed in SEEDS]
    committed, again = rows[0], epoch_1_again(SPREAD_RUN, tmp_path / "again")
    assert again["lr"] == committed["lr"]
    bound = {k: 3 * 2 ** 0.5 * statistics.stdev(float(r[k]) for r in rows)
             for k in committed if k not in WALL_CLOCK | {"epoch", "lr"}}
    outside = {k: (committed[k], again[k], f"bound {bound[k]:.4g}") for k in bound
               if abs(float(again[k]) - float(committed[k])) > bound[k]}
    assert not outside, f"epoch 1 on {kernels_here()} differs from the reference by more than seeds do: {outside}"
