"""What notebook 04 and the grid do with a run already in the out folder they are given.

The trap these tests close: the tests and `notebooks --execute` leave a quick run in 04's default
folder (runs/04_train), and a student's first `papermill ... -p loss flsd53` there used to fail in
the fit cell with the command line's advice (--overwrite), which a notebook cannot follow.
"""
import json
from types import SimpleNamespace

import pytest

from cifar_hw2.experiments.grid import KEPT, Outcome, row_state, run_grid
from cifar_hw2.training.checkpoint import save_checkpoint
from cifar_hw2.training.config import ConfigError, is_quick_run, make_config
from cifar_hw2.training.parameters import train_config_from_parameters
from cifar_hw2.training.runfolder import RUN_FILES, clear_run, prepare_out

EVENTS = "events.out.tfevents.1700000000.host.1.0"


def a_run(folder, preset, last="ok", complete=True, **overrides):
    """A run folder as the trainer leaves it (config.json, last.pt, results, TensorBoard events)."""
    cfg = make_config(preset, out=str(folder), **overrides)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"config": cfg.to_dict()}))
    if last == "ok":
        save_checkpoint(folder / "last.pt", {"model_name": cfg.model, "num_classes": 100, "epoch": 1,
                                             "config": cfg.to_dict(), "model": {}})
    elif last == "damaged":
        (folder / "last.pt").write_bytes(b"not a checkpoint")
    (folder / "history.csv").write_text("epoch\n1\n")
    (folder / "metrics.json").write_text(json.dumps({"complete": complete, "epochs_done": 1, "epochs": 1}))
    (folder / EVENTS).write_bytes(b"")
    return cfg


def test_a_quick_run_is_a_small_cnn_on_a_subset():
    assert is_quick_run(make_config("quick").to_dict())
    assert is_quick_run(make_config("quick", train_per_class=3).to_dict())        # the tests' trimmed runs
    assert not is_quick_run(make_config("cpu-reference").to_dict())               # full data: 7 to 25 min
    assert not is_quick_run(make_config("paper-b4", train_per_class=3).to_dict())
    assert not is_quick_run({})


def test_04s_folder_holding_a_quick_run_gets_the_run_asked_for(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CIFAR_HW2_QUICK", "0")
    out = tmp_path / "04_train"
    a_run(out, "quick", loss="ce")
    config = train_config_from_parameters("paper-b4", str(out), loss="flsd53")
    assert (config.model, config.overwrite, config.resume) == ("efficientnet_b4", True, False)
    assert f"{out} holds a quick run (model=small_cnn, loss=ce, lr=0.002, batch_size=32): replacing it " \
           "with this one." in capsys.readouterr().out
    assert (out / "last.pt").exists()         # replaced by the trainer, when the run starts: not here
    (out / "04_train.ipynb").write_text("{}")
    (out / "grid.json").write_text("{}")
    (out / "slurm.json").write_text("{}")
    assert prepare_out(config, SimpleNamespace(main=True, barrier=lambda: None)) is None
    # the old run's files are gone, its curves too; what is not the run's stays
    assert sorted(p.name for p in out.iterdir()) == ["04_train.ipynb", "grid.json"]


def test_clear_run_removes_only_the_run(tmp_path):
    a_run(tmp_path / "r", "quick")
    (tmp_path / "r" / "notes.txt").write_text("mine")
    clear_run(tmp_path / "r")
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["notes.txt"]
    assert not any((tmp_path / "r" / name).exists() for name in RUN_FILES)


def test_another_run_is_kept_and_the_cell_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_HW2_QUICK", "0")
    out = tmp_path / "04_train"
    a_run(out, "cpu-reference", loss="ce")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ConfigError) as e:
        train_config_from_parameters("paper-b4", str(out), loss="ce")
    said = str(e.value)
    assert said.startswith(f"{out} holds a run that this one cannot continue: model 'small_cnn' there, "
                           "'efficientnet_b4' here; ")
    assert "To keep it, set out to a new folder (papermill: -p out runs/NAME), or delete" in said
    assert "--overwrite" not in said and "more" in said           # 5 or more settings differ: 4 shown
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_resume_false_on_a_run_says_resume_true_continues_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_HW2_QUICK", "0")
    out = tmp_path / "run"
    a_run(out, "cpu-reference", loss="ce")
    with pytest.raises(ConfigError, match=r"already holds a run \(model=small_cnn, loss=ce, lr=0.002, "
                                          r"batch_size=64\) and resume is False: set resume = True to continue it"):
        train_config_from_parameters("cpu-reference", str(out), resume=False, loss="ce")
    # resume = True, the same settings: it continues, and nothing is said about replacing
    config = train_config_from_parameters("cpu-reference", str(out), loss="ce", epochs=9)
    assert config.resume and not config.overwrite


@pytest.mark.parametrize("last", ["damaged", "missing"])
def test_a_run_that_cannot_be_continued_is_kept_unless_it_is_quick(last, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CIFAR_HW2_QUICK", "0")
    a_run(tmp_path / "full", "cpu-reference", last=last)
    why = "is not a cifar_hw2 checkpoint" if last == "damaged" else "it has no last.pt to continue from"
    with pytest.raises(ConfigError, match=f"cannot continue: .*{why}"):
        train_config_from_parameters("cpu-reference", str(tmp_path / "full"))
    a_run(tmp_path / "quick", "quick", last=last)
    assert train_config_from_parameters("cpu-reference", str(tmp_path / "quick")).overwrite
    assert "holds a quick run" in capsys.readouterr().out


def test_a_folder_with_only_a_config_is_started_afresh(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_HW2_QUICK", "0")
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")          # a run killed before its first checkpoint
    config = train_config_from_parameters("cpu-reference", str(out))
    assert config.resume and not config.overwrite


def test_quick_mode_replaces_quick_runs_and_keeps_full_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CIFAR_HW2_QUICK", "1")
    a_run(tmp_path / "quick", "quick", loss="ce")
    config = train_config_from_parameters("paper-b4", str(tmp_path / "quick"), loss="flsd53")
    assert (config.model, config.loss, config.overwrite) == ("small_cnn", "flsd53", True)
    a_run(tmp_path / "full", "cpu-reference", loss="flsd53")
    with pytest.raises(ConfigError, match=r"cannot continue: .*train_per_class None there, 50 here.*to start over "
                                          r"there \(CIFAR_HW2_QUICK=1 asks for a quick run: unset it to continue"):
        train_config_from_parameters("paper-b4", str(tmp_path / "full"), loss="flsd53")
    capsys.readouterr()


def test_a_full_grid_replaces_quick_stand_ins_and_a_quick_grid_keeps_full_rows(tmp_path, monkeypatch):
    """A quick grid tried first in runs/ must not make the real grid there skip every row as done."""
    runs, ran, said = tmp_path / "runs", [], []

    def runner(row, runs, data, env, nproc):
        ran.append(row.key)
        return Outcome(row, "failed", 0.0, "not run here")
    a_run(runs / "b4-bs64-flsd53", "quick", loss="flsd53")                   # complete
    a_run(runs / "swin-bs64-flsd53", "paper-swin", loss="flsd53")             # complete
    monkeypatch.setenv("CIFAR_HW2_QUICK", "0")
    assert row_state(runs / "b4-bs64-flsd53", quick=False) == "replace"
    assert row_state(runs / "swin-bs64-flsd53", quick=False) == "done"
    run_grid(runs, ["loss=flsd53"], echo=said.append, runner=runner)
    assert ran == ["b4-bs64-flsd53"]
    assert any("b4-bs64-flsd53" in line and "replace its quick run ..." in line for line in said), said

    monkeypatch.setenv("CIFAR_HW2_QUICK", "1")
    assert row_state(runs / "swin-bs64-flsd53", quick=True) == "kept"
    ran.clear()
    outcomes = run_grid(runs, ["loss=flsd53"], echo=said.append, runner=runner)
    assert ran == []                           # the quick row is complete, the full one kept
    assert {o.row.key: o.message for o in outcomes} == {"b4-bs64-flsd53": "complete",
                                                        "swin-bs64-flsd53": "full run kept"}
    assert any(KEPT in line for line in said)


def test_slurm_rows_replace_quick_stand_ins_when_submitted(tmp_path, monkeypatch):
    """A Slurm job resumes whatever its folder holds (slurm.TrainJob), so the grid clears a quick
    stand-in when it submits the full row, and only then (not on --dry-run)."""
    from cifar_hw2.experiments import slurm
    from cifar_hw2.experiments.grid import grid_rows, select, submit_rows
    monkeypatch.setenv("CIFAR_HW2_QUICK", "0")
    runs, said, submitted = tmp_path / "runs", [], []
    a_run(runs / "b4-bs64-flsd53", "quick", loss="flsd53")
    a_run(runs / "swin-bs64-flsd53", "paper-swin", loss="flsd53")
    monkeypatch.setattr(slurm, "submit", lambda configs, names, *a, **k: submitted.extend(configs) or [])
    rows = select(grid_rows(), ["loss=flsd53"])
    submit_rows(rows, runs, None, slurm.SlurmOptions(), dry_run=True, echo=said.append)
    assert "[1/2] b4-bs64-flsd53             would replace its quick run" in said
    assert (runs / "b4-bs64-flsd53" / "last.pt").exists()
    assert any(line.startswith("[2/2] swin-bs64-flsd53") and "done, not submitted" in line for line in said)
    submitted.clear()
    submit_rows(rows, runs, None, slurm.SlurmOptions(), echo=said.append)
    assert [(c.model, c.resume, c.overwrite) for c in submitted] == [("efficientnet_b4", True, False)]
    assert sorted(p.name for p in (runs / "b4-bs64-flsd53").iterdir()) == ["grid.json"]
