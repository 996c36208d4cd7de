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


@needs_real_data
def test_epoch_1_of_the_committed_flsd53_run_reproduces_exactly(tmp_path):
    ref = REFERENCE / "flsd53-seed0"
    cfg = json.loads((ref / "config.json").read_text())["config"]
    out = tmp_path / "again"
    run = subprocess.run([sys.executable, "-m", "cifar_hw2", "train", "--preset", "cpu-reference",
                          "--loss", cfg["loss"], "--seed", str(cfg["seed"]), "--epochs", "1",
                          "--progress", "off", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=1200,
                         env={**os.environ, "CIFAR_HW2_DATA": REAL_DATA})
    assert run.returncode == 0, run.stdout + run.stderr
    committed, again = history(ref / "history.csv")[0], history(out / "history.csv")[0]
    assert set(committed) == set(again)
    differ = {k: (committed[k], again[k]) for k in committed if k not in WALL_CLOCK and committed[k] != again[k]}
    assert not differ, f"epoch 1 no longer reproduces the committed reference: {differ}"
