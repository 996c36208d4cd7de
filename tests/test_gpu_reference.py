"""The GPU reference (results/gpu-reference/, issue 23) is evidence, checked like the CPU reference
(test_reference.py), except that no CPU can train it again: every run folder parses, records its
provenance (a clean commit of this history, the GPU, the library versions), ran the gpu-reference
preset on the full splits to its last epoch, and `report` reproduces its numbers and the shipped
report.

Until a GPU session ships the runs (benchmarks/gpu_reference.sh; docs/gpu.md, "The GPU reference
runs"), the tests of the shipped runs skip, saying so; the checks themselves are tested on a CPU
run now, which they must refuse.
"""
import csv
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from cifar_hw2.experiments.report import write_report
from cifar_hw2.training.config import make_config
from cifar_hw2.training.runfolder import settings_changed

ROOT = Path(__file__).resolve().parents[1]
GPU_REFERENCE = ROOT / "results" / "gpu-reference"
RUNS = sorted(p.parent for p in GPU_REFERENCE.glob("*/config.json"))
RUN_FILES = ("config.json", "history.csv", "metrics.json")
FULL_SPLITS = {"train": 45_000, "val": 5_000, "test": 10_000}
FOCAL_GAMMA = 3.0
shipped = pytest.mark.skipif(not RUNS, reason="results/gpu-reference/ holds no runs yet: no GPU run of them has been "
                                              "made (benchmarks/gpu_reference.sh makes them; docs/gpu.md)")


def preset_for(cfg: dict):
    """The gpu-reference config this run should have been: its loss and seed, focal at γ = 3."""
    extra = {"gamma": FOCAL_GAMMA} if cfg["loss"] == "focal" else {}
    return make_config("gpu-reference", loss=cfg["loss"], seed=cfg["seed"], **extra)


def problems(run: Path) -> list[str]:
    """What keeps `run` from being a shipped GPU reference run; [] when nothing does."""
    found = []
    try:
        record = json.loads((run / "config.json").read_text())
        metrics = json.loads((run / "metrics.json").read_text())
        with open(run / "history.csv") as f:
            rows = list(csv.DictReader(f))
    except (OSError, ValueError) as e:
        return [f"{run.name}: does not parse ({type(e).__name__}: {e})"]
    cfg = record["config"]
    commit = record.get("git_commit")
    if not commit or commit.endswith("-dirty"):
        found.append(f"made from {commit!r}, not a clean commit")
    if not str(record.get("device", "")).startswith("cuda") or not record.get("gpu"):
        found.append(f"not trained on a GPU that it names (device {record.get('device')!r}, gpu {record.get('gpu')!r})")
    versions = record.get("versions", {})
    if not all(versions.get(k) for k in ("torch", "torchvision", "timm", "python", "cuda", "cudnn")):
        found.append(f"library versions missing: {versions}")
    changed = settings_changed(cfg, preset_for(cfg))
    if changed:
        found.append(f"not the gpu-reference preset: {changed}")
    if record.get("data_sizes") != FULL_SPLITS:
        found.append(f"not the full splits: {record.get('data_sizes')}")
    if run.name != f"{cfg['loss']}-seed{cfg['seed']}":
        found.append(f"folder name is not {cfg['loss']}-seed{cfg['seed']}")
    if not metrics.get("complete") or len(rows) != cfg["epochs"]:
        found.append(f"{len(rows)} of {cfg['epochs']} epochs in history.csv, complete={metrics.get('complete')}")
    return [f"{run.name}: {p}" for p in found]


@shipped
def test_every_shipped_run_is_the_preset_with_its_provenance():
    assert [p for run in RUNS for p in problems(run)] == []
    for run in RUNS:
        commit = json.loads((run / "config.json").read_text())["git_commit"]
        known = subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=ROOT, capture_output=True)
        if known.returncode != 0 and (ROOT / ".git" / "shallow").exists():
            pytest.skip("shallow clone: older commits are not here")
        assert known.returncode == 0, f"{run.name}: commit {commit} is not in this repository's history"


@shipped
def test_the_losses_the_issue_asks_for_are_there():
    losses = {json.loads((run / "config.json").read_text())["config"]["loss"] for run in RUNS}
    assert {"ce", "focal", "flsd53"} <= losses, f"CE, focal (γ = 3) and FLSD-53 at least; found {sorted(losses)}"


@shipped
def test_the_report_reproduces_the_shipped_numbers(tmp_path):
    for run in RUNS:
        (tmp_path / run.name).mkdir()
        for name in RUN_FILES:
            shutil.copy(run / name, tmp_path / run.name / name)
    write_report(tmp_path)
    with open(tmp_path / "report.csv") as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    for run in RUNS:
        best = json.loads((run / "metrics.json").read_text())["best"]
        for key in ("top1", "nll", "ece", "temperature", "ece_ts"):
            column = "best_top1" if key == "top1" else key
            assert float(rows[run.name][column]) == pytest.approx(best[key], abs=1e-12), (run.name, key)
    shipped_csv = GPU_REFERENCE / "report.csv"
    assert shipped_csv.exists(), "results/gpu-reference/report.csv is missing: run `python -m cifar_hw2 report`"
    assert shipped_csv.read_text() == (tmp_path / "report.csv").read_text(), \
        "the shipped report.csv is not the report of the shipped runs: run `python -m cifar_hw2 report` again"


@pytest.mark.slow
def test_the_checks_refuse_a_cpu_run_on_a_subset(tiny_data, tmp_path):
    """What the shipped-run checks say of a run that is not a GPU reference run: they can fail."""
    from cifar_hw2.training.trainer import fit
    out = tmp_path / "ce-seed0"
    fit(make_config("gpu-reference", loss="ce", data=str(tiny_data), out=str(out), device="cpu", epochs=1,
                    batch_size=20, train_per_class=2, val_per_class=2, test_per_class=2, progress="off"))
    said = " ".join(problems(out))
    assert "not trained on a GPU" in said and "not the full splits" in said and "epochs" not in said
    assert "not the gpu-reference preset" in said and "batch_size" in said and "train_per_class" in said
    record = json.loads((out / "config.json").read_text())
    record["git_commit"] = None
    (out / "config.json").write_text(json.dumps(record))
    assert "not a clean commit" in " ".join(problems(out))
    (out / "metrics.json").write_text("{")
    assert "does not parse" in " ".join(problems(out))


def run_script(env: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    import os
    import sys
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_reference.sh")], cwd=tmp_path, text=True,
                          capture_output=True, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable, "DEVICE": "cpu", "DEST": str(tmp_path / "runs"),
                               **env})


def test_the_script_without_shards_wants_the_data_in_place(tmp_path):
    """On one's own GPU the data is fetched as usual and SHARDS is left empty: DATA without
    cifar-100-python/ is one line, exit 3, before anything trains."""
    done = run_script({"SHARDS": "", "DATA": str(tmp_path / "none")}, tmp_path)
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"SHARDS is empty, so DATA must hold cifar-100-python/, but {tmp_path}/none/cifar-100-python/train is missing: "
        f"run `{__import__('sys').executable} -m cifar_hw2 data --data {tmp_path}/none` first, or set DATA to the "
        f"folder that holds it; nothing was trained"]
    assert not (tmp_path / "runs" / "ce-seed0").exists()
    # DATA not given: the package's own data folder, where `python -m cifar_hw2 data` put it
    env = {k: v for k, v in __import__("os").environ.items() if k != "DATA"}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_reference.sh")], cwd=tmp_path, text=True,
                          capture_output=True, timeout=120,
                          env={**env, "PYTHON": __import__("sys").executable, "DEVICE": "cpu", "SHARDS": "",
                               "DEST": str(tmp_path / "runs"), "CIFAR_HW2_DATA": str(tmp_path / "pkg")})
    assert done.returncode == 3 and f"{tmp_path}/pkg/cifar-100-python/train is missing" in done.stderr, done.stderr


@pytest.mark.slow
def test_the_script_trains_and_reports_from_data_in_place(tiny_data, tmp_path):
    """The whole script on the CPU, with the data already in place: one tiny run, then the report."""
    back = tmp_path / "out"          # the device call's $OUT: at most 8 files of at most 16 MiB come back
    back.mkdir()
    done = run_script({"SHARDS": "", "DATA": str(tiny_data), "FIRST": "ce:0", "THEN": "", "BUDGET": "400",
                       "PACK": str(back / "gpu_reference.tgz"),
                       "TRAIN_OPTS": "--train-per-class 2 --val-per-class 2 --test-per-class 2 --epochs 1 "
                                     "--batch-size 20"}, tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"{tiny_data}: cifar-100-python/ used as it is (SHARDS is empty)" in done.stdout
    steps = (tmp_path / "runs" / "logs" / "steps.tsv").read_text().splitlines()
    assert [line.split("\t")[:2] for line in steps] == [["data", "ok"], ["train_ce-seed0", "ok"], ["report", "ok"]]
    assert json.loads((tmp_path / "runs" / "ce-seed0" / "metrics.json").read_text())["complete"]
    # The pack holds no checkpoints and no predictions (~5.5 MB a run on the full splits: six would
    # pass 16 MiB); each run's predictions come back beside it, whole.
    assert sorted(f.name for f in back.iterdir()) == ["ce-seed0.predictions.npz", "gpu_reference.tgz"]
    with tarfile.open(back / "gpu_reference.tgz") as tar:
        names = tar.getnames()
    assert "./ce-seed0/metrics.json" in names and "./logs/summary.txt" in names and "./report.md" in names
    assert not [n for n in names if n.endswith((".pt", ".npz"))], names
    assert (back / "ce-seed0.predictions.npz").read_bytes() == (tmp_path / "runs" / "ce-seed0" / "predictions.npz").read_bytes()


@pytest.mark.slow
def test_05_shows_gpu_reference_runs_beside_the_papers_numbers(tmp_path):
    # Stand-ins for the GPU runs (the CPU re-runs, copied): 05's section shows any such folder's runs,
    # with the calibration columns the claim is read from, and says so in one line when there are none.
    import sys
    import nbformat
    for name in ("ce-seed0", "flsd53-seed0"):
        shutil.copytree(ROOT / "results" / "cpu-reference-reruns" / name, tmp_path / "gpu" / name)

    def run_05(folder: Path) -> str:
        out = tmp_path / f"05-{folder.name}.ipynb"
        done = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "05_compare.ipynb"), str(out),
                               "-p", "gpu_reference", str(folder), "--no-progress-bar"],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        nb = nbformat.read(out, as_version=4)
        start = next(i for i, c in enumerate(nb.cells) if c.source.startswith("## The GPU reference"))
        texts = [o.get("text", "") + str(o.get("data", {}).get("text/markdown", ""))
                 for c in nb.cells[start:start + 4] if c.cell_type == "code" for o in c.outputs]
        return "\n".join(texts)

    shown = run_05(tmp_path / "gpu")
    assert "| ResNet-50 | CE | 17.52 | 3.42 | 2.1 |" in shown and "| ResNet-50 | FLSD-53 | 4.50 | 2.00 | 1.1 |" in shown
    assert "| ce-seed0 | CE | 46.51 | 45.01 | 1.972 | 1.75 | 1.22 | 0.991 | 1.54 | 1.000 | 1.75 |" in shown
    assert "| flsd53-seed0 | FLSD-53 | 44.82 |" in shown and "No runs under" not in shown
    none = run_05(tmp_path / "empty")
    assert f"No runs under {tmp_path / 'empty'} yet: they need a GPU" in none and "ce-seed0" not in none
