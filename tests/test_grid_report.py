import csv
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cifar_hw2.experiments.grid import Outcome, print_status, run_grid
from cifar_hw2.training.config import ConfigError
from cifar_hw2.experiments.rows import grid_rows, select
from cifar_hw2.training.paths import this_python
from cifar_hw2.experiments.reference import REPORT_TABLE1
from cifar_hw2.experiments.report import comparison_table, find_runs, write_report
from conftest import needs_real_data, write_archive

ROOT = Path(__file__).resolve().parents[1]


def test_grid_holds_table1_and_the_rows_the_homework_could_not_run():
    rows = grid_rows()
    table1 = [r for r in rows if r.source == "table1"]
    # one grid row per Table 1 row, each naming its row and training its model and batch size
    assert sorted(r.table1 for r in table1) == sorted(t.key for t in REPORT_TABLE1)
    by_key = {t.key: t for t in REPORT_TABLE1}
    assert all((r.model, r.batch_size, r.report_label) == (by_key[r.table1].model, by_key[r.table1].batch_size,
                                                           by_key[r.table1].loss) for r in table1)
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
    with pytest.raises(ValueError, match=r"no grid row has model=swin; its values: efficientnet_b4, swin_b"):
        select(grid_rows(), ["model=swin"])
    # one key repeated: alternatives (two rows); different keys: all must hold, and the error says so
    two = ["key=b4-bs32-ce-homework", "key=b4-bs32-fl-homework"]
    assert [r.key for r in select(grid_rows(), two)] == [k.split("=")[1] for k in two]
    with pytest.raises(ValueError, match="no grid row matches model=swin_b and batch_size=32 .different keys"):
        select(grid_rows(), ["model=swin_b", "batch_size=32"])


# Timeouts that catch a hang, not a busy machine: a quick row takes ~70 s on 2 quiet cores, and
# 711 s was seen with three other jobs on them. The real-data grid test runs each row once.
HANG = 3600


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "cifar_hw2", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=HANG, env={**os.environ, "CIFAR_HW2_QUICK": "1", **(env or {})})


def test_dry_run_lists_rows_without_running(tmp_path):
    run = cli("grid", "--runs", str(tmp_path), "--dry-run")
    assert run.returncode == 0 and run.stdout.count("→ run") == len(grid_rows())
    assert "quick mode" in run.stdout and list(tmp_path.iterdir()) == []
    # The homework's "FL" rows ran focal with γ = 0 (cross-entropy): the listing must not hide it.
    fl_homework = [line for line in run.stdout.splitlines() if "fl-homework" in line]
    assert len(fl_homework) == 3 and all("focal γ=0" in line for line in fl_homework)
    assert "focal γ=2" in next(line for line in run.stdout.splitlines() if "b4-bs64-focal-gamma2" in line)


def test_a_full_grid_on_a_cpu_first_says_what_an_epoch_would_take(tmp_path, monkeypatch):
    """Each row's notebook says it too, but only in the executed notebook: the console says it once,
    also in a dry run (where nothing continues)."""
    import torch
    if torch.cuda.is_available():
        pytest.skip("the notice is for a machine without a GPU")
    monkeypatch.delenv("CIFAR_HW2_QUICK", raising=False)
    said, ran = [], []

    def runner(row, runs, data, env, nproc):
        ran.append(row.key)
        return Outcome(row, "failed", 0.0, "not run here")
    run_grid(tmp_path, ["key=b4-bs64-flsd53"], echo=said.append, runner=runner, dry_run=True)
    assert ran == [] and said[2].endswith("For a CPU run use --quick: every row a quick stand-in (small_cnn, "
                                          "under 2 min).")
    said.clear()
    run_grid(tmp_path, ["key=b4-bs64-flsd53"], echo=said.append, runner=runner)
    assert ran == ["b4-bs64-flsd53"] and "full configuration" in said[0]
    assert said[1].startswith("note: grid row b4-bs64-flsd53 (efficientnet_b4) needs a CUDA GPU; on this CPU")
    assert "200 epochs asked). For a CPU run use --quick: every row a quick stand-in (small_cnn" in said[1]
    assert said[1].endswith("Continuing as asked; Ctrl-C stops.")


def test_a_grid_without_the_dataset_says_so_once_before_any_row_runs(tmp_path, monkeypatch):
    """Quick mode: the rows would each download CIFAR-100 first. Said once, after the rows are
    listed and before the first runs, with the command that fetches it; a --data one level off is
    named instead (the rows would stop on it); with the data there, nothing is said."""
    monkeypatch.setenv("CIFAR_HW2_QUICK", "1")
    said, empty = [], tmp_path / "no data here"

    def runner(row, runs, data, env, nproc):
        said.append(f"ran {row.key}")
        return Outcome(row, "failed", 0.0, "not run here")
    run_grid(tmp_path / "runs", ["model=efficientnet_b4"], data=str(empty), echo=said.append, runner=runner, nproc=1)
    notes = [i for i, line in enumerate(said) if "CIFAR-100 is not in" in line]
    ran = [i for i, line in enumerate(said) if line.startswith("ran ")]
    assert len(notes) == 1 and len(ran) > 1 and notes[0] < ran[0], said
    assert said[notes[0]] == (f"note: CIFAR-100 is not in {empty / 'cifar-100-python'} yet: the rows would download "
                              f"it (169 MB) first. `{this_python()} -m cifar_hw2 data --data '{empty}'` fetches it "
                              f"once, and says what to do offline")
    data = write_archive(tmp_path / "d", 1, 1)
    for where, rows_stop_on in [(data, None), (data / "cifar-100-python", "is the cifar-100-python/ folder itself")]:
        said.clear()
        run_grid(tmp_path / "runs", ["key=b4-bs64-flsd53"], data=str(where), echo=said.append, dry_run=True)
        notes = [line for line in said if line.startswith("note: ") and "cifar-100-python" in line]
        assert notes == ([] if rows_stop_on is None else [notes[0]]) and not [s for s in said if "download" in s]
        assert rows_stop_on is None or rows_stop_on in notes[0]


def test_a_grid_without_papermill_stops_before_any_row(tmp_path, monkeypatch):
    """A plain `pip install -e .` has no papermill: each row's notebook would fail the same way, one
    after another. The grid says so once, with the install line, and starts none (a dry run notes it)."""
    import importlib.util
    monkeypatch.setenv("CIFAR_HW2_QUICK", "1")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "papermill" else find_spec(name, *a))
    runs, said = tmp_path / "runs", []
    with pytest.raises(ConfigError) as e:
        run_grid(runs, ["model=efficientnet_b4"], echo=said.append)
    assert str(e.value) == ("each row runs notebook 04 through papermill, and this Python has no papermill: install "
                            f"the notebooks extra: `{this_python()} -m pip install -e \".[notebooks]\"` in the checkout")
    assert not runs.exists() or list(runs.iterdir()) == []
    said.clear()
    run_grid(runs, ["key=b4-bs64-flsd53"], echo=said.append, dry_run=True)
    assert said[-1] == f"note: {e.value}"


def test_a_row_whose_bookkeeping_fails_is_failed_and_the_others_still_run(tmp_path, monkeypatch):
    # A full disk while a row's grid.json is written must not end its worker thread quietly: the
    # grid would skip the rows after it and still say "0 failed".
    from cifar_hw2.experiments import grid
    monkeypatch.setenv("CIFAR_HW2_QUICK", "1")
    record_row = grid.record_row

    def full_disk_for_b4(row, folder, quick):
        if row.model == "efficientnet_b4":
            raise OSError(28, "No space left on device")
        record_row(row, folder, quick)

    monkeypatch.setattr(grid, "record_row", full_disk_for_b4)
    said = []
    outcomes = run_grid(tmp_path / "runs", ["loss=flsd53"], echo=said.append,
                        runner=lambda row, runs, data, env, nproc: Outcome(row, "done", 1.0, top1=0.5))
    assert [(o.row.key, o.status) for o in outcomes] == [("b4-bs64-flsd53", "failed"), ("swin-bs64-flsd53", "done")]
    assert [line for line in said if "FAILED" in line] == [
        "[1/2] b4-bs64-flsd53             FAILED after 0 s: OSError: [Errno 28] No space left on device"]
    assert said[-1] == "grid: 1 ran, 0 skipped, 1 failed"


def test_quick_mode_and_torchrun_rows_exclude_each_other(tmp_path, monkeypatch):
    # A torchrun row runs `train` with its Table 1 preset: under quick mode it would train the full row.
    monkeypatch.setenv("CIFAR_HW2_QUICK", "1")
    with pytest.raises(ConfigError, match=r"^nproc 2 runs each row with torchrun on GPUs, and quick mode runs"):
        run_grid(tmp_path / "runs", ["key=b4-bs64-flsd53"], nproc=2, echo=lambda line: None)


@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE", "unreachable hub"])
def test_a_full_grid_names_weights_it_cannot_have_and_status_keeps_a_local_failure(tmp_path, monkeypatch, offline):
    """Rows whose ImageNet weights cannot be had are named once, before any row runs (in a dry run
    too); a row that failed is 'failed' in --status, with its last line, not 'new'."""
    monkeypatch.delenv("CIFAR_HW2_QUICK", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))                  # an empty cache
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    if offline == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        why = "HF_HUB_OFFLINE is set and they are not in the local cache"
    else:
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
        why = "127.0.0.1:9 cannot be reached (no network?)"
    runs, said = tmp_path / "runs", []
    runner = lambda row, runs, data, env, nproc: Outcome(row, "failed", 0.0, "not run here")  # noqa: E731
    for dry_run in (True, False):
        said.clear()
        run_grid(runs, ["key=b4-bs64-flsd53", "key=swin-bs64-mc"], echo=said.append, runner=runner, dry_run=dry_run)
        note = [line for line in said if line.startswith("note: the ImageNet weights")]
        assert note == [f"note: the ImageNet weights of efficientnet_b4, swin_b cannot be had here ({why}): those rows "
                        f"would fail. Run `{this_python()} -m cifar_hw2 weights` where the hub can be reached, with the "
                        f"cache on a disk this machine sees (docs/data-and-weights.md)"], said
    status = []
    assert print_status(runs, ["key=b4-bs64-flsd53"], echo=status.append) == {"b4-bs64-flsd53": "failed"}
    assert status[0].split()[2:] == ["failed", "not", "run", "here"]


@pytest.mark.slow
def test_a_failing_row_is_reported_and_sets_the_exit_status(tmp_path):
    run = cli("grid", "--runs", str(tmp_path / "runs"), "--only", "key=b4-bs64-flsd53", "--data", str(tmp_path / "none"),
              env={"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"})
    assert run.returncode == 1
    assert "FAILED" in run.stdout and "0 ran, 0 skipped, 1 failed" in run.stdout
    assert (tmp_path / "runs" / "b4-bs64-flsd53" / "grid.log").exists()


@pytest.mark.slow
@needs_real_data
def test_a_two_row_grid_interrupted_resumes_then_skips_then_reports(tmp_path):
    """One scenario, since each quick row trains for ~2 minutes: Ctrl-C in the first row, the
    grid again (that row resumes, the second runs), once more (both skipped), then the report."""
    import signal
    runs, first = tmp_path / "runs", "b4-bs64-flsd53"
    cmd = [sys.executable, "-m", "cifar_hw2", "grid", "--runs", str(runs), "--only", "loss=flsd53"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "CIFAR_HW2_QUICK": "1"}, start_new_session=True)
    history = runs / first / "history.csv"
    deadline = time.time() + HANG
    while time.time() < deadline and proc.poll() is None and not (history.exists() and len(history.read_text().splitlines()) >= 2):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)            # Ctrl-C in a terminal: the whole process group
    out, _ = proc.communicate(timeout=HANG)
    # The rows saved last.pt: EXIT_STOPPED, the row's line and the grid's, and nothing that contradicts
    # them (it added "interrupted at once; ... with --resume", and grid has no --resume).
    assert proc.returncode == 75, out
    lines = out.strip().splitlines()
    assert re.fullmatch(rf"\[1/2\] {first} +stopped by Ctrl-C after \d+ s", lines[-2]), out
    assert lines[-1] == "grid: interrupted; run the same command again to resume" and "--resume" not in out
    from cifar_hw2.experiments.grid import INTERRUPTED_LOG_LINE
    assert (runs / first / "grid.log").read_text().splitlines()[-1] == INTERRUPTED_LOG_LINE
    status = cli("grid", "--runs", str(runs), "--only", "loss=flsd53", "--status")
    assert re.search(rf"{first} +interrupted", status.stdout), status.stdout   # resumable, not failed
    done = json.loads((runs / first / "metrics.json").read_text())
    assert not done["complete"] and not (runs / "swin-bs64-flsd53" / "metrics.json").exists()

    resumed = cli("grid", "--runs", str(runs), "--only", "loss=flsd53")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resume from last.pt" in resumed.stdout and "2 ran, 0 skipped, 0 failed" in resumed.stdout
    # Ctrl-C saves last.pt where the step it interrupted ended (inside an epoch, or at its end)
    executed = (runs / first / "04_train.ipynb").read_text()
    assert (f"resuming in epoch {done['epochs_done'] + 1} of 6, after step" in executed
            or f"resuming after epoch {done['epochs_done']} of 6" in executed)
    for key in (first, "swin-bs64-flsd53"):
        final = json.loads((runs / key / "metrics.json").read_text())
        assert final["complete"] and final["epochs_done"] == 6
        # each row's figure beside its results, not over the checkout's (or another row's) figures/
        assert (runs / key / "figures" / "04_training_curves.png").exists()
        config = json.loads((runs / key / "config.json").read_text())["config"]
        assert config["model"] == "small_cnn" and config["loss"] == "flsd53"   # quick mode
    again = cli("grid", "--runs", str(runs), "--only", "loss=flsd53")
    assert "skip (complete)" in again.stdout and "0 ran, 2 skipped" in again.stdout

    report = cli("report", "--runs", str(runs))
    assert report.returncode == 0, report.stderr
    for name in ("report.md", "report.csv", "fig7_accuracy_by_loss.png", "reliability.png", "reliability_after_ts.png"):
        assert (runs / name).exists(), name
    # quick mode trains small_cnn for every row: one model, so no Figure 8, and the report says why
    assert not (runs / "fig8_accuracy_by_model.png").exists()
    assert "Figure 8 (test accuracy by model) is left out: every run here is small_cnn." in \
        (runs / "report.md").read_text()
    rows = list(csv.DictReader(open(runs / "report.csv")))
    assert [r["run"] for r in rows] == ["b4-bs64-flsd53", "swin-bs64-flsd53"]
    metrics = json.loads((runs / "b4-bs64-flsd53" / "metrics.json").read_text())
    assert float(rows[0]["best_top1"]) == pytest.approx(metrics["best"]["top1"])
    assert float(rows[0]["ece_ts"]) == pytest.approx(metrics["best"]["ece_ts"])
    md = (runs / "report.md").read_text()
    assert "FLSD-53" in md
    # the paper's numbers beside the quick stand-ins (B4 and Swin-B, FLSD-53, batch 64)
    assert "| EfficientNet-B4 · FLSD53 · bs 64 (quick stand-in) | 89.52 |" in md
    assert "| Swin-B · FLSD53 · bs 64 (quick stand-in) | 93.60 |" in md


@pytest.mark.slow
def test_report_finds_the_table1_row_by_grid_key_or_by_config(tiny_data, tmp_path):
    from cifar_hw2.training.config import make_config
    from cifar_hw2.training.trainer import fit
    fit(make_config("quick", data=str(tiny_data), out=str(tmp_path / "r" / "one"), train_per_class=10,
                    val_per_class=2, test_per_class=None, epochs=1, workers=0, progress="off", loss="ce"))
    # "b4": what a full B4 run records (its config matches Table 1); "standin": a quick grid row's
    # folder, whose grid.json names the row it stands for.
    for name in ("b4", "standin"):
        shutil.copytree(tmp_path / "r" / "one", tmp_path / "r" / name)
    record = json.loads((tmp_path / "r" / "b4" / "config.json").read_text())
    record["config"].update(model="efficientnet_b4", batch_size=64)
    (tmp_path / "r" / "b4" / "config.json").write_text(json.dumps(record))
    (tmp_path / "r" / "standin" / "grid.json").write_text(json.dumps({"table1": "efficientnet_b4-flsd53-bs64"}))
    rows = {r["run"]: r for r in comparison_table(find_runs(tmp_path / "r"))}
    assert rows["one"]["report_top1"] is None and rows["one"]["table1_row"] is None   # no Table 1 row trains a small CNN
    assert rows["b4"]["report_top1"] == 0.8934 and rows["b4"]["table1_row"] == "EfficientNet-B4 · CE · bs 64"
    assert rows["b4"]["diff_vs_report"] == pytest.approx(rows["b4"]["best_top1"] - 0.8934)
    assert rows["standin"]["report_top1"] == 0.8952 and rows["standin"]["diff_vs_report"] is None
    assert rows["standin"]["table1_row"] == "EfficientNet-B4 · FLSD53 · bs 64 (quick stand-in)"
    md = write_report(tmp_path / "r")["md"].read_text()
    assert md.count("| one |") == 2 and "1 of these runs are **quick stand-ins**" in md   # accuracy, calibration
    assert "| EfficientNet-B4 · FLSD53 · bs 64 (quick stand-in) | 89.52 |" in md


def trimmed_row(row, runs, data, env, nproc=1):
    """What notebook 04 does with a grid row's parameters (train_config_from_parameters, then fit),
    in this process and trimmed to one epoch on 2 images per class: every row's real config in
    seconds, where papermill would take minutes."""
    from cifar_hw2.notebook import train_config_from_parameters
    from cifar_hw2.training.trainer import fit
    config = train_config_from_parameters(**row.parameters(runs / row.key, data))
    config = dataclasses.replace(config, epochs=1, train_per_class=2, val_per_class=1, test_per_class=1,
                                 progress="off").validate()
    start = time.perf_counter()
    fit(config)
    top1 = json.loads((runs / row.key / "metrics.json").read_text())["best"]["top1"]
    return Outcome(row, "done", time.perf_counter() - start, top1=top1)


@pytest.mark.slow
def test_every_grid_row_runs_in_quick_mode_and_the_report_shows_its_table1_row(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_HW2_QUICK", "1")
    runs, lines = tmp_path / "runs", []
    outcomes = run_grid(runs, data=str(tiny_data), runner=trimmed_row, echo=lines.append)
    assert [o.status for o in outcomes] == ["done"] * 16, "\n".join(lines)
    # The homework's MC rows train its 219-group mistake at small_cnn's width, and say so.
    for key in ("b4-bs32-mc-homework", "b4-bs64-mc-homework"):
        config = json.loads((runs / key / "config.json").read_text())["config"]
        assert (config["model"], config["loss"]) == ("small_cnn", "mc_homework_scaled")
        assert "219 groups" in json.loads((runs / key / "grid.json").read_text())["stands_for"]

    rows = {r["run"]: r for r in comparison_table(find_runs(runs))}
    expected = {"b4-bs32-ce-homework": 0.8857, "b4-bs64-mc-homework": 0.8873, "b4-bs32-fl-homework": 0.8824,
                "b4-bs64-flsd53-homework": 0.8952, "swin-bs64-flsd53-homework": 0.9360,
                "b4-bs64-flsd53": 0.8952, "swin-bs64-focal-gamma2": 0.9356, "swin-bs64-mc": None}
    assert {k: rows[k]["report_top1"] for k in expected} == expected
    assert all(r["table1_row"].endswith("(quick stand-in)") and r["diff_vs_report"] is None
               for k, r in rows.items() if k != "swin-bs64-mc")
    assert rows["b4-bs32-mc-homework"]["loss"] == "MC (homework's 219 groups, at this width)"
    # Done in quick mode; outside it, --status calls them what a full grid makes of them (it replaces them).
    assert set(print_status(runs, echo=lambda line: None).values()) == {"done"}
    monkeypatch.setenv("CIFAR_HW2_QUICK", "0")
    said = []
    assert set(print_status(runs, echo=said.append).values()) == {"stand-in"}
    assert said[0].endswith("stand-in    a quick run (done: 1/1 epochs); the full row replaces it")
    assert said[-1] == "grid: 16 stand-in"

