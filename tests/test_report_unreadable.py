"""`report` over run folders that cannot be read (a garbled metrics.json): said in one line, never
mistaken for "no run", never silently left out. Built from the shipped reference runs (no training)."""
import json
import shutil
from pathlib import Path

import pytest

from cifar_hw2.cli import main
from cifar_hw2.experiments.report import find_runs

REFERENCE = Path(__file__).resolve().parents[1] / "results" / "cpu-reference"


def _garbled(folder: Path) -> Path:
    """A copy of a reference run whose metrics.json was cut short (a disk that filled, a bad copy)."""
    shutil.copytree(REFERENCE / "ce-seed0", folder)
    metrics = folder / "metrics.json"
    metrics.write_text(metrics.read_text()[:100])
    return metrics


def test_report_on_a_folder_whose_only_run_is_garbled_says_it_is_garbled(tmp_path, capsys):
    metrics = _garbled(tmp_path / "runs" / "ce-seed0")
    assert main(["report", "--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"no readable run under {tmp_path / 'runs'}: {metrics} is garbled (JSONDecodeError: " in err
    assert "no run folders (with metrics.json)" not in err


def test_a_good_run_beside_a_garbled_one_is_reported_and_the_garbled_one_named(tmp_path, capsys):
    root = tmp_path / "runs"
    shutil.copytree(REFERENCE / "mc-seed0", root / "mc-seed0")
    metrics = _garbled(root / "ce-seed0")
    unreadable = []
    assert [r.name for r in find_runs(root, unreadable)] == ["mc-seed0"]
    assert len(unreadable) == 1 and unreadable[0].startswith(f"{metrics} is garbled (JSONDecodeError")
    assert main(["report", "--runs", str(root)]) == 0
    out, err = capsys.readouterr()
    warning = [line for line in err.splitlines() if line.strip()]
    assert warning == [f"warning: left out of the report: {unreadable[0]}"], err
    report = (root / "report.md").read_text()
    assert "| mc-seed0 |" in report and f"Left out (cannot be read): {unreadable[0]}." in report


def test_a_run_that_has_not_finished_an_epoch_is_named_not_dropped_unseen(tmp_path, capsys):
    """A run begun (config.json) whose first epoch has not ended (no metrics.json yet): the report
    says it left it out; with no other run, the error names it instead of "train one first"."""
    root = tmp_path / "runs"
    (root / "b4-flsd53").mkdir(parents=True)
    shutil.copy(REFERENCE / "ce-seed0" / "config.json", root / "b4-flsd53")
    assert main(["report", "--runs", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"cifar-hw2: error: no run under {root} has finished an epoch: not finished an epoch "
                           f"yet (no metrics.json): {root / 'b4-flsd53'}"), err
    shutil.copytree(REFERENCE / "mc-seed0", root / "mc-seed0")
    assert main(["report", "--runs", str(root)]) == 0
    err = capsys.readouterr().err
    said = f"left out of the report, not finished an epoch yet (no metrics.json): {root / 'b4-flsd53'}"
    assert err.strip() == f"note: {said}", err
    assert f"Left out, not finished an epoch yet (no metrics.json): {root / 'b4-flsd53'}." in \
        (root / "report.md").read_text()


@pytest.mark.parametrize("missing", ["config.json", "history.csv"])
def test_a_run_folder_missing_a_file_is_named_too(missing, tmp_path):
    shutil.copytree(REFERENCE / "ce-seed0", tmp_path / "ce-seed0")
    (tmp_path / "ce-seed0" / missing).unlink()
    unreadable = []
    assert find_runs(tmp_path, unreadable) == []
    assert unreadable == [f"{tmp_path / 'ce-seed0'} is not a complete run folder: {missing} is missing"]


def test_report_again_without_title_keeps_the_title_and_a_wrong_folder_says_so(tmp_path, capsys):
    """Writing the report of the shipped runs again (a student exploring them) must not retitle it;
    a --runs that is no folder, or holds no run, gets one line with a command that makes one."""
    root = tmp_path / "runs"
    shutil.copytree(REFERENCE / "mc-seed0", root / "mc-seed0")
    shutil.copy(REFERENCE / "report.md", root / "report.md")
    title = (REFERENCE / "report.md").read_text().splitlines()[0]
    assert title.startswith("# CPU reference")
    assert main(["report", "--runs", str(root)]) == 0
    assert (root / "report.md").read_text().splitlines()[0] == title
    assert main(["report", "--runs", str(root), "--title", "Mine"]) == 0
    assert (root / "report.md").read_text().splitlines()[0] == "# Mine"
    capsys.readouterr()
    assert main(["report", "--runs", str(tmp_path / "nosuch")]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"{tmp_path / 'nosuch'} is not a folder; give the folder that holds the run folders, "
        "e.g. --runs runs or --runs results/cpu-reference")
    (tmp_path / "empty").mkdir()
    assert main(["report", "--runs", str(tmp_path / "empty")]) == 2
    assert f"train --preset quick --out {tmp_path / 'empty' / 'demo'}" in capsys.readouterr().err


def test_the_shipped_report_is_made_again_elsewhere_byte_for_byte_and_left_untouched(tmp_path, capsys):
    """A teacher checks the shipped numbers without writing into results/: --out, and the title carried over."""
    shipped = {p.name: p.read_bytes() for p in REFERENCE.iterdir() if p.is_file()}
    assert main(["report", "--runs", str(REFERENCE), "--out", str(tmp_path / "again")]) == 0
    for name in ("report.md", "report.csv"):
        assert (tmp_path / "again" / name).read_bytes() == shipped[name], name
    assert {p.name: p.read_bytes() for p in REFERENCE.iterdir() if p.is_file()} == shipped
    (tmp_path / "file").write_text("")
    for out, why in ((tmp_path / "file", "FileExistsError: File exists"),
                     (tmp_path / "file" / "below", "NotADirectoryError: Not a directory")):
        capsys.readouterr()
        assert main(["report", "--runs", str(REFERENCE), "--out", str(out)]) == 2
        assert capsys.readouterr().err.strip() == (f"cifar-hw2: error: --out {out} cannot be a folder for report.md, "
                                                   f"report.csv and the figures ({why})")


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("damage, said", [
    (lambda f: _edit_json(f / "config.json", lambda d: d["config"].pop("model")), "config.json's model is missing"),
    (lambda f: _edit_json(f / "config.json", lambda d: d["config"].update(seed=[0])), "config.json's seed is missing"),
    (lambda f: (f / "history.csv").write_text((f / "history.csv").read_text().replace("\n1,", "\nnan,", 1)),
     "history.csv's epoch, seconds or test_top1 is not a finite number"),
    (lambda f: _edit_json(f / "metrics.json", lambda d: d.pop("epochs_done")), "metrics.json is garbled (a metric"),
    (lambda f: _edit_json(f / "metrics.json", lambda d: d["best"].pop("top1")), "metrics.json is garbled (a metric"),
    (lambda f: _edit_json(f / "metrics.json", lambda d: d.update(reliability=None)), "does not hold what a run's"),
    (lambda f: _edit_json(f / "metrics.json", lambda d: d["reliability"]["best"].pop("after_ts")), "'after_ts'"),
    (lambda f: _edit_json(f / "metrics.json", lambda d: d["best"].pop("val_top1")), "metrics.json is garbled"),
    (lambda f: _edit_json(f / "metrics.json", lambda d: d["best"].update(top1="abc")), "metrics.json is garbled"),
    (lambda f: _edit_json(f / "metrics.json", lambda d: d["reliability"]["best"]["before"].update(ece="abc")),
     "does not hold what a run's files hold (ValueError"),
])
def test_a_run_whose_files_lack_what_the_report_reads_is_left_out_and_named(tmp_path, capsys, damage, said):
    """Files of the right format but the wrong content (a field missing, of another kind, NaN): the
    run is named and left out, the others are reported; never a traceback."""
    root = tmp_path / "runs"
    shutil.copytree(REFERENCE / "mc-seed0", root / "mc-seed0")
    shutil.copytree(REFERENCE / "ce-seed0", root / "ce-seed0")
    damage(root / "ce-seed0")
    unreadable = []
    assert [r.name for r in find_runs(root, unreadable)] == ["mc-seed0"]
    assert len(unreadable) == 1 and unreadable[0].startswith(f"{root / 'ce-seed0'}") and said in unreadable[0]
    assert main(["report", "--runs", str(root)]) == 0
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("grid", ['"str"', "[1]", '{"table1": ["b4"]}', None])
def test_an_odd_grid_json_is_ignored(tmp_path, grid):
    shutil.copytree(REFERENCE / "ce-seed0", tmp_path / "ce-seed0")
    if grid is None:
        (tmp_path / "ce-seed0" / "grid.json").mkdir()
    else:
        (tmp_path / "ce-seed0" / "grid.json").write_text(grid)
    assert [r.grid for r in find_runs(tmp_path)] == [None]
