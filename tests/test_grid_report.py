import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cifar_hw2.grid import grid_rows, select
from cifar_hw2.reference import REPORT_TABLE1
from cifar_hw2.report import comparison_table, find_runs, write_report
from conftest import needs_real_data

ROOT = Path(__file__).resolve().parents[1]


def test_grid_holds_table1_and_the_rows_the_homework_could_not_run():
    rows = grid_rows()
    table1 = [r for r in rows if r.source == "table1"]
    assert len(table1) == len(REPORT_TABLE1) == 10
    assert {r.report_accuracy for r in table1} == {r.accuracy for r in REPORT_TABLE1}
    fl = [r for r in table1 if r.report_label == "FL"]
    assert all(r.loss == "focal" and r.gamma == 0.0 for r in fl)          # its "FL" was CE
    extra = {(r.model, r.loss, r.gamma) for r in rows if r.source == "extra"}
    assert ("efficientnet_b4", "focal", 2.0) in extra and ("swin_b", "mc", None) in extra
    assert len({r.key for r in rows}) == len(rows)


def test_only_filters_and_rejects_unknown_keys():
    assert {r.key for r in select(grid_rows(), ["loss=flsd53"])} == {"b4-bs64-flsd53", "swin-bs64-flsd53"}
    assert len(select(grid_rows(), ["model=swin_b", "source=table1"])) == 2
    with pytest.raises(ValueError, match="unknown key 'colour'"):
        select(grid_rows(), ["colour=red"])
    with pytest.raises(ValueError, match="no grid row matches"):
        select(grid_rows(), ["loss=nothing"])


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "cifar_hw2", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "CIFAR_HW2_QUICK": "1", **(env or {})})


def test_dry_run_lists_rows_without_running(tmp_path):
    run = cli("grid", "--runs", str(tmp_path), "--dry-run")
    assert run.returncode == 0 and run.stdout.count("→ run") == len(grid_rows())
    assert "quick mode" in run.stdout and list(tmp_path.iterdir()) == []


def test_a_failing_row_is_reported_and_sets_the_exit_status(tmp_path):
    run = cli("grid", "--runs", str(tmp_path / "runs"), "--only", "key=b4-bs64-flsd53", "--data", str(tmp_path / "none"),
              env={"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"})
    assert run.returncode == 1
    assert "FAILED" in run.stdout and "0 ran, 0 skipped, 1 failed" in run.stdout
    assert (tmp_path / "runs" / "b4-bs64-flsd53" / "grid.log").exists()


@needs_real_data
def test_two_row_quick_grid_then_report(tmp_path):
    runs = tmp_path / "runs"
    first = cli("grid", "--runs", str(runs), "--only", "loss=flsd53")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "2 ran, 0 skipped, 0 failed" in first.stdout
    for key in ("b4-bs64-flsd53", "swin-bs64-flsd53"):
        assert (runs / key / "04_train.ipynb").exists() and (runs / key / "metrics.json").exists()
        config = json.loads((runs / key / "config.json").read_text())["config"]
        assert config["model"] == "small_cnn" and config["loss"] == "flsd53"   # quick mode
    again = cli("grid", "--runs", str(runs), "--only", "loss=flsd53")
    assert "skip (complete)" in again.stdout and "0 ran, 2 skipped" in again.stdout

    report = cli("report", "--runs", str(runs))
    assert report.returncode == 0, report.stderr
    for name in ("report.md", "report.csv", "fig7_accuracy_by_loss.png", "fig8_accuracy_by_model.png",
                 "reliability.png", "reliability_after_ts.png"):
        assert (runs / name).exists(), name
    rows = list(csv.DictReader(open(runs / "report.csv")))
    assert [r["run"] for r in rows] == ["b4-bs64-flsd53", "swin-bs64-flsd53"]
    metrics = json.loads((runs / "b4-bs64-flsd53" / "metrics.json").read_text())
    assert float(rows[0]["best_top1"]) == pytest.approx(metrics["best"]["top1"])
    assert float(rows[0]["ece_ts"]) == pytest.approx(metrics["best"]["ece_ts"])
    assert "FLSD-53" in (runs / "report.md").read_text()


def test_report_matches_table1_rows(tiny_data, tmp_path):
    from cifar_hw2.config import make_config
    from cifar_hw2.trainer import fit
    fit(make_config("quick", data=str(tiny_data), out=str(tmp_path / "r" / "one"), train_per_class=10,
                    val_per_class=2, test_per_class=None, epochs=1, workers=0, progress="off", loss="ce"))
    runs = find_runs(tmp_path / "r")
    row = comparison_table(runs)[0]
    assert row["report_top1"] is None          # no Table 1 row trains a small CNN
    runs[0].config.update(model="efficientnet_b4", batch_size=64)
    assert comparison_table(runs)[0]["report_top1"] == 0.8934
    paths = write_report(tmp_path / "r")
    assert paths["md"].read_text().count("| one |") == 1


@needs_real_data
def test_an_interrupted_grid_resumes_its_row(tmp_path):
    import signal
    import time
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "cifar_hw2", "grid", "--runs", str(runs), "--only", "key=b4-bs64-flsd53"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "CIFAR_HW2_QUICK": "1"}, start_new_session=True)
    history = runs / "b4-bs64-flsd53" / "history.csv"
    deadline = time.time() + 300
    while time.time() < deadline and not (history.exists() and len(history.read_text().splitlines()) >= 2):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)            # Ctrl-C in a terminal: the whole process group
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "interrupted" in out
    done = json.loads((runs / "b4-bs64-flsd53" / "metrics.json").read_text())
    assert not done["complete"]
    again = cli("grid", "--runs", str(runs), "--only", "key=b4-bs64-flsd53")
    assert again.returncode == 0, again.stdout
    assert "resume from last.pt" in again.stdout and "1 ran, 0 skipped, 0 failed" in again.stdout
    final = json.loads((runs / "b4-bs64-flsd53" / "metrics.json").read_text())
    assert final["complete"] and final["epochs_done"] == 6
    executed = (runs / "b4-bs64-flsd53" / "04_train.ipynb").read_text()
    assert f"resuming after epoch {done['epochs_done']} of 6" in executed
