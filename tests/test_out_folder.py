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
                                             "config": cfg.to_dict(), "model": {}, "optimizer": {},
                                             "scheduler": {}, "history": [{}], "best": None,
                                             "calibration": {}, "rng": {}})
    elif last == "damaged":
        (folder / "last.pt").write_bytes(b"not a checkpoint")
    (folder / "history.csv").write_text("epoch\n1\n")
    (folder / "metrics.json").write_text(json.dumps({"complete": complete, "epochs_done": 1, "epochs": 1}))
    (folder / EVENTS).write_bytes(b"")
    return cfg


def test_a_quick_run_is_a_small_cnn_for_a_few_epochs_on_a_subset():
    assert is_quick_run(make_config("quick").to_dict())
    assert is_quick_run(make_config("quick", train_per_class=3, epochs=2).to_dict())   # the tests' trimmed runs
    assert not is_quick_run(make_config("cpu-reference").to_dict())            # full data: 6.5 to 35 min
    assert not is_quick_run(make_config("quick", epochs=300).to_dict())        # a study, not a quick run
    assert not is_quick_run(make_config("quick", test_per_class=None).to_dict())
    assert not is_quick_run(make_config("paper-b4", train_per_class=3).to_dict())
    assert not is_quick_run({}) and not is_quick_run({**make_config("quick").to_dict(), "train_per_class": -1})
    assert not is_quick_run({**make_config("quick").to_dict(), "epochs": True})


def test_04s_folder_holding_a_quick_run_gets_the_run_asked_for(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CIFAR_HW2_QUICK", "0")
    out = tmp_path / "04_train"
    a_run(out, "quick", loss="ce")
    (out / "04_train.ipynb").write_text("{}")
    (out / "grid.json").write_text("{}")
    (out / "slurm.json").write_text("{}")
    config = train_config_from_parameters("paper-b4", str(out), loss="flsd53")
    assert f"{out} holds a quick run (model=small_cnn, loss=ce, lr=0.002, batch_size=32): replacing it " \
           "with this one." in capsys.readouterr().out
    # replaced in the parameters cell: the old run's files and curves are gone, what is not the run's stays
    assert sorted(p.name for p in out.iterdir()) == ["04_train.ipynb", "grid.json"]
    assert (config.model, config.resume, config.overwrite) == ("efficientnet_b4", True, False)
    # The new run stopped (Ctrl-C, time_limit), then the fit cell run again with the same config:
    # it continues, nothing is replaced a second time.
    a_run(out / "new", "paper-b4", loss="flsd53")
    for path in (out / "new").iterdir():
        path.rename(out / path.name)
    config = train_config_from_parameters("paper-b4", str(out), loss="flsd53")
    state = prepare_out(config, SimpleNamespace(main=True, barrier=lambda: None))
    assert state["config"]["model"] == "efficientnet_b4" and (out / "last.pt").exists()
    assert "replacing" not in capsys.readouterr().out


def test_clear_run_removes_only_the_run(tmp_path):
    a_run(tmp_path / "r", "quick")
    (tmp_path / "r" / "notes.txt").write_text("mine")
    for made_by_evaluate in ("eval-best-test.json", "eval-last-val.json", "predictions-best.npz"):
        (tmp_path / "r" / made_by_evaluate).write_text("{}")
    (tmp_path / "r" / "eval-my-own.pt-test.json").write_text("{}")     # of a checkpoint of the user's
    clear_run(tmp_path / "r")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["eval-my-own.pt-test.json", "notes.txt"]
    assert not any((tmp_path / "r" / name).exists() for name in RUN_FILES)


def test_a_run_with_a_folder_among_its_files_is_not_half_cleared(tmp_path):
    a_run(tmp_path / "r", "quick")
    (tmp_path / "r" / "predictions.npz").mkdir()
    before = sorted(p.name for p in (tmp_path / "r").iterdir())
    with pytest.raises(ConfigError) as e:
        clear_run(tmp_path / "r")
    assert str(e.value) == (f"cannot replace the run in {tmp_path / 'r'}: predictions.npz is a folder, not a run's "
                            f"file; move it away, or choose another out folder")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == before


def test_another_run_is_kept_and_the_cell_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_HW2_QUICK", "0")
    out = tmp_path / "04_train"
    a_run(out, "cpu-reference", loss="ce")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for resume in (True, False):
        with pytest.raises(ConfigError) as e:
            train_config_from_parameters("paper-b4", str(out), resume=resume, loss="ce")
        said = str(e.value)
        assert said.startswith(f"{out} holds a run that this one cannot continue: model 'small_cnn' there, "
                               "'efficientnet_b4' here; ")
        assert said.endswith(f"Set out to a new folder (papermill: -p out runs/NAME) to keep it, or delete {out} "
                             "to start over")
        assert "--overwrite" not in said and "resume = True" not in said and "; and 1 more. " in said
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_resume_false_on_this_run_says_resume_true_continues_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_HW2_QUICK", "0")
    out = tmp_path / "run"
    a_run(out, "cpu-reference", loss="ce")
    with pytest.raises(ConfigError, match=r"already holds this run \(model=small_cnn, loss=ce, lr=0.002, "
                                          r"batch_size=64\) and resume is False: set resume = True to continue it, "
                                          r"set out to a new folder"):
        train_config_from_parameters("cpu-reference", str(out), resume=False, loss="ce")
    # resume = True, the same settings (epochs may grow): it continues, and nothing is said about replacing
    config = train_config_from_parameters("cpu-reference", str(out), loss="ce", epochs=9)
    assert config.resume and not config.overwrite and (out / "last.pt").exists()


@pytest.mark.parametrize("last", ["damaged", "missing", "odd config"])
def test_a_run_that_cannot_be_continued_is_kept_unless_it_is_quick(last, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CIFAR_HW2_QUICK", "0")
    why = {"damaged": "is not a cifar_hw2 checkpoint", "missing": "it has no last.pt to continue from",
           "odd config": "its config is not a mapping of settings"}[last]
    for preset in ("cpu-reference", "quick"):
        folder = tmp_path / preset
        a_run(folder, preset, last="ok" if last == "odd config" else last)
        if last == "odd config":        # a well-formed checkpoint file whose config is not a dict
            save_checkpoint(folder / "last.pt", {"model_name": "small_cnn", "num_classes": 100, "epoch": 1,
                                                 "config": ["model", "small_cnn"], "model": {}})
        if preset == "quick":
            train_config_from_parameters("cpu-reference", str(folder))
            assert "holds a quick run" in capsys.readouterr().out and not (folder / "history.csv").exists()
        else:
            with pytest.raises(ConfigError, match=f"cannot continue: .*{why}"):
                train_config_from_parameters("cpu-reference", str(folder))


def test_a_folder_with_only_a_config_is_started_afresh(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_HW2_QUICK", "0")
    out = tmp_path / "run"
    out.mkdir()
    # a run killed before its first checkpoint: its record, nothing else
    (out / "config.json").write_text(json.dumps({"config": make_config("cpu-reference", out=str(out)).to_dict()}))
    config = train_config_from_parameters("cpu-reference", str(out))
    assert config.resume and not config.overwrite
    assert prepare_out(config, SimpleNamespace(main=True, barrier=lambda: None)) is None     # starts afresh


@pytest.mark.parametrize("resume", [False, True])
@pytest.mark.parametrize("theirs", ['{"my": "precious settings"}', '{"config": {"lr": 1}}', '{"config": {"model": [1]}}'])
def test_a_config_json_that_is_not_a_runs_record_is_never_written_over(tmp_path, resume, theirs):
    """Another tool's config.json (or a damaged one): --resume must not treat the folder as a run
    to start afresh and replace the file; --overwrite is the user saying so."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(theirs)
    cfg = make_config("quick", out=str(out), resume=resume)
    with pytest.raises(ConfigError) as e:
        prepare_out(cfg, SimpleNamespace(main=True, barrier=lambda: None))
    assert str(e.value) == (f"out folder {out} holds a config.json that is not a cifar_hw2 run's record; choose "
                            f"another out folder, or pass overwrite=True to replace it")
    assert (out / "config.json").read_text() == theirs
    assert prepare_out(make_config("quick", out=str(out), overwrite=True),
                       SimpleNamespace(main=True, barrier=lambda: None)) is None


def test_odd_json_in_a_run_folder_is_data_not_a_crash(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_HW2_QUICK", "0")
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("[" * 100_000 + "]" * 100_000)      # nested past Python's recursion limit
    (out / "metrics.json").write_text("[1]")
    (out / "slurm.json").write_text("[2]")
    with pytest.raises(ConfigError, match="no last.pt to continue from"):
        train_config_from_parameters("cpu-reference", str(out))
    from cifar_hw2.experiments.slurm import status
    assert status(out) == ("new", "")


def test_quick_mode_replaces_quick_runs_and_keeps_full_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CIFAR_HW2_QUICK", "1")
    a_run(tmp_path / "quick", "quick", loss="ce")
    config = train_config_from_parameters("paper-b4", str(tmp_path / "quick"), loss="flsd53")
    assert (config.model, config.loss) == ("small_cnn", "flsd53") and not (tmp_path / "quick" / "last.pt").exists()
    a_run(tmp_path / "full", "cpu-reference", loss="flsd53")
    with pytest.raises(ConfigError, match=r"cannot continue: .*train_per_class None there, 50 here.*to start over "
                                          r"\(CIFAR_HW2_QUICK=1 makes this run a quick one, and the folder holds"):
        train_config_from_parameters("paper-b4", str(tmp_path / "full"), loss="flsd53")
    assert (tmp_path / "full" / "last.pt").exists()
    capsys.readouterr()


def row_config_of(key, runs):
    from cifar_hw2.experiments.grid import row_config
    from cifar_hw2.experiments.rows import grid_rows
    return row_config(next(r for r in grid_rows() if r.key == key), runs, None)


def test_a_full_grid_replaces_quick_stand_ins_and_a_quick_grid_keeps_full_rows(tmp_path, monkeypatch):
    """A quick grid tried first in runs/ must not make the real grid there skip every row as done.
    The row is cleared by the grid itself, before its runner: a torchrun row runs `train --resume`."""
    runs, seen, said = tmp_path / "runs", {}, []

    def runner(row, runs, data, env, nproc):
        seen[row.key] = sorted(p.name for p in (runs / row.key).iterdir())
        return Outcome(row, "failed", 0.0, "not run here")
    a_run(runs / "b4-bs64-flsd53", "quick", loss="flsd53")                   # complete
    a_run(runs / "swin-bs64-flsd53", "paper-swin", loss="flsd53")             # complete
    monkeypatch.setenv("CIFAR_HW2_QUICK", "0")
    assert row_state(row_config_of("b4-bs64-flsd53", runs))[0] == "replace"
    assert row_state(row_config_of("swin-bs64-flsd53", runs)) == ("done", "skip (complete)")
    run_grid(runs, ["loss=flsd53"], echo=said.append, runner=runner)
    assert seen == {"b4-bs64-flsd53": ["grid.json"]}                         # cleared before it ran
    assert any("b4-bs64-flsd53" in line and "replace its quick run ..." in line for line in said), said

    a_run(runs / "b4-bs64-flsd53-quick", "quick", loss="flsd53")
    for path in (runs / "b4-bs64-flsd53-quick").iterdir():
        path.rename(runs / "b4-bs64-flsd53" / path.name)
    monkeypatch.setenv("CIFAR_HW2_QUICK", "1")
    assert row_state(row_config_of("swin-bs64-flsd53", runs)) == ("kept", KEPT)
    seen.clear()
    outcomes = run_grid(runs, ["loss=flsd53"], echo=said.append, runner=runner)
    assert seen == {}                          # the quick row is complete, the full one kept
    assert {o.row.key: o.message for o in outcomes} == {"b4-bs64-flsd53": "complete", "swin-bs64-flsd53": KEPT}


def test_a_row_whose_folder_holds_another_run_is_skipped_and_the_others_go_on(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_HW2_QUICK", "0")
    runs, ran, said = tmp_path / "runs", [], []
    a_run(runs / "b4-bs64-flsd53", "paper-b4", loss="flsd53", lr=5e-4, complete=False)

    def runner(row, runs, data, env, nproc):
        ran.append(row.key)
        return Outcome(row, "failed", 0.0, "not run here")
    outcomes = run_grid(runs, ["loss=flsd53"], echo=said.append, runner=runner)
    assert ran == ["swin-bs64-flsd53"]
    kept = next(o for o in outcomes if o.row.key == "b4-bs64-flsd53")
    assert kept.status == "skipped" and kept.message == (
        "skip (its folder holds a run this row does not continue: lr 0.0005 there, 0.001 here; move that run "
        "elsewhere or delete it to run this row)")
    assert (runs / "b4-bs64-flsd53" / "last.pt").exists()


def test_slurm_rows_replace_quick_stand_ins_when_submitted(tmp_path, monkeypatch):
    """A Slurm job resumes whatever its folder holds (slurm.TrainJob), so the grid clears a quick
    stand-in that the row does not continue when it submits the row, and only then (not on --dry-run)."""
    from cifar_hw2.experiments import slurm
    from cifar_hw2.experiments.grid import submit_rows
    from cifar_hw2.experiments.rows import grid_rows, select
    runs, said, submitted = tmp_path / "runs", [], []
    monkeypatch.setattr(slurm, "submit", lambda configs, names, *a, **k: submitted.extend(configs) or [])
    rows = select(grid_rows(), ["loss=flsd53"])
    a_run(runs / "b4-bs64-flsd53", "quick", loss="flsd53")
    a_run(runs / "swin-bs64-flsd53", "paper-swin", loss="flsd53")
    monkeypatch.setenv("CIFAR_HW2_QUICK", "0")
    submit_rows(rows, runs, None, slurm.SlurmOptions(), dry_run=True, echo=said.append)
    assert "[1/2] b4-bs64-flsd53             would replace its quick run" in said
    assert (runs / "b4-bs64-flsd53" / "last.pt").exists()
    assert any(line.startswith("[2/2] swin-bs64-flsd53") and "done, not submitted" in line for line in said)
    submitted.clear()
    submit_rows(rows, runs, None, slurm.SlurmOptions(), echo=said.append)
    assert [(c.model, c.resume, c.overwrite) for c in submitted] == [("efficientnet_b4", True, False)]
    assert sorted(p.name for p in (runs / "b4-bs64-flsd53").iterdir()) == ["grid.json"]

    # Quick mode: an interrupted stand-in made with other settings (another seed) is replaced too,
    # rather than submitted to fail on "cannot resume ... other settings".
    a_run(runs / "b4-bs64-flsd53" / "old", "quick", loss="flsd53", seed=3, complete=False)
    for path in (runs / "b4-bs64-flsd53" / "old").iterdir():
        path.rename(runs / "b4-bs64-flsd53" / path.name)
    monkeypatch.setenv("CIFAR_HW2_QUICK", "1")
    submitted.clear()
    submit_rows(rows[:1], runs, None, slurm.SlurmOptions(), echo=said.append)
    assert said[-2] == "[1/1] b4-bs64-flsd53             replacing its quick run"
    assert [(c.model, c.seed) for c in submitted] == [("small_cnn", 0)] and not (runs / "b4-bs64-flsd53" / "last.pt").exists()


@pytest.mark.parametrize("epochs_done", [1, "1", 1.0, True, [1], 10**30, -1])
def test_a_run_with_nothing_left_is_not_offered_resume_and_odd_metrics_change_nothing(tmp_path, epochs_done):
    """metrics.json says the run did the epochs asked: --resume is not offered, and evaluate is named
    only where best.pt is there. metrics.json is not trusted: any other value of epochs_done (a
    string, a float, a bool, a list, a negative count) leaves the ordinary message."""
    cfg = a_run(tmp_path / "run", "quick", epochs=1)
    (tmp_path / "run" / "metrics.json").write_text(json.dumps({"epochs_done": epochs_done}))
    with pytest.raises(ConfigError) as e:
        prepare_out(cfg, SimpleNamespace(main=True, barrier=lambda: None))
    finished = type(epochs_done) is int and epochs_done >= 1
    assert ("nothing left to do" in str(e.value)) == finished
    assert ("pass resume=True to continue it" in str(e.value)) == (not finished)     # in Python's terms here
    assert "evaluate --checkpoint" not in str(e.value)          # this folder has no best.pt
