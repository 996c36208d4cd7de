"""The trainer on a tiny archive written by the tests (tests/conftest.py): fast, runs anywhere."""
import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cifar_hw2.metrics import classification_metrics
from cifar_hw2.data import DataError
from cifar_hw2.training.checkpoint import CheckpointError, load_checkpoint
from cifar_hw2.training.predictions import load_predictions
from cifar_hw2.training.config import ConfigError, make_config
from cifar_hw2.training.paths import this_python
from cifar_hw2.training.runfolder import HISTORY_COLUMNS
from cifar_hw2.training.trainer import NonFiniteLossError, Trainer, fit

TIMING = {"seconds", "images_per_s"}
ROOT = Path(__file__).resolve().parents[1]


def tiny(tiny_data, out, **kw):
    """small_cnn on 10 images per class (1,000), 2 per class for val, 4 for test."""
    base = dict(data=str(tiny_data), out=str(out), train_per_class=10, val_per_class=2,
                test_per_class=None, epochs=3, batch_size=50, workers=0, progress="off")
    return make_config("quick", **{**base, **kw})


def read_history(out) -> list[dict]:
    with open(Path(out) / "history.csv") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


@pytest.mark.slow
def test_fit_writes_the_run_folder(tiny_data, tmp_path):
    history = fit(tiny(tiny_data, tmp_path / "run"))
    out = tmp_path / "run"
    files = sorted(p.name for p in out.iterdir())
    assert [f for f in files if not f.startswith("events.out.tfevents.")] == [
        "best.pt", "config.json", "history.csv", "last.pt", "metrics.json", "predictions.npz"]
    assert any(f.startswith("events.out.tfevents.") for f in files)    # TensorBoard (tests/test_tensorboard.py)
    assert len(history) == 3 and list(history[0]) == HISTORY_COLUMNS
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["model"] == "small_cnn" and cfg["versions"]["torch"] == torch.__version__
    assert cfg["config"]["augment_on"] == "auto" and cfg["augment_on"] == "device"   # what auto chose
    assert cfg["data_sizes"] == {"train": 1000, "val": 200, "test": 400}
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("top1", "top5", "nll", "ece"):
        assert 0 <= metrics["final"][key] and metrics[key] == metrics["final"][key]
        assert key in metrics["best"]
    assert metrics["complete"] and metrics["final"]["epoch"] == 3
    assert history[-1]["lr"] == pytest.approx(2e-3)   # step schedule: still lr0 in epochs 1-3
    # the class-coloured tiny data is learnable: the run beats chance clearly
    assert metrics["top1"] > 0.05
    assert [r["epoch"] for r in read_history(out)] == ["1", "2", "3"]
    state = load_checkpoint(out / "best.pt", "small_cnn", 100)
    assert state["epoch"] == metrics["best"]["epoch"]
    # predictions.npz holds the best epoch's logits: they give metrics.json's "best" numbers exactly
    preds = load_predictions(out / "predictions.npz")
    assert preds.epoch == metrics["best"]["epoch"] and len(preds.test_labels) == 400 and len(preds.val_labels) == 200
    again = classification_metrics(preds.test_logits, preds.test_labels)
    assert {k: again[k] for k in ("top1", "top5", "nll", "ece")} == {k: metrics["best"][k] for k in ("top1", "top5", "nll", "ece")}


@pytest.mark.slow
def test_same_config_gives_the_same_numbers_with_any_worker_count(tiny_data, tmp_path):
    fit(tiny(tiny_data, tmp_path / "a", epochs=2, workers=0, augment_on="loader"))
    fit(tiny(tiny_data, tmp_path / "b", epochs=2, workers=2, augment_on="loader"))
    assert read_history(tmp_path / "a") == read_history(tmp_path / "b")


@pytest.mark.slow
def test_resume_at_an_epoch_boundary_equals_an_uninterrupted_run(tiny_data, tmp_path):
    fit(tiny(tiny_data, tmp_path / "full", epochs=3))
    fit(tiny(tiny_data, tmp_path / "part", epochs=1))
    fit(tiny(tiny_data, tmp_path / "part", epochs=3, resume=True))
    assert read_history(tmp_path / "full") == read_history(tmp_path / "part")
    assert (tmp_path / "full" / "metrics.json").read_text() == (tmp_path / "part" / "metrics.json").read_text()


def _train_cmd(tiny_data, out, *extra):
    return [sys.executable, "-m", "cifar_hw2", "train", "--preset", "quick", "--data", str(tiny_data),
            "--out", str(out), "--train-per-class", "10", "--val-per-class", "2", "--test-per-class", "all",
            "--epochs", "4", "--batch-size", "20", "--workers", "2", "--progress", "off", *extra]


@pytest.mark.slow
def test_sigkill_inside_an_epoch_then_resume_gives_the_same_results(tiny_data, tmp_path):
    subprocess.run(_train_cmd(tiny_data, tmp_path / "full"), check=True, cwd=ROOT)
    proc = subprocess.Popen(_train_cmd(tiny_data, tmp_path / "killed"), cwd=ROOT)
    history = tmp_path / "killed" / "history.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (history.exists() and len(history.read_text().splitlines()) >= 3):
        time.sleep(0.02)
    time.sleep(0.3)                                     # well inside epoch 3
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = json.loads((tmp_path / "killed" / "metrics.json").read_text())["epochs_done"]
    assert done < 4
    assert not [p for p in (tmp_path / "killed").iterdir() if p.name.endswith(".tmp")]
    subprocess.run(_train_cmd(tiny_data, tmp_path / "killed", "--resume"), check=True, cwd=ROOT)
    assert read_history(tmp_path / "full") == read_history(tmp_path / "killed")
    assert (tmp_path / "full" / "metrics.json").read_text() == (tmp_path / "killed" / "metrics.json").read_text()


@pytest.mark.slow
def test_an_existing_run_is_never_silently_replaced(tiny_data, tmp_path):
    fit(tiny(tiny_data, tmp_path / "run", epochs=1))
    before = (tmp_path / "run" / "last.pt").read_bytes()
    # fit() from Python: the message says what to set in Python's terms (the CLI's: tests/test_cli.py)
    with pytest.raises(ConfigError, match="already holds a run .*resume=True.*overwrite=True"):
        fit(tiny(tiny_data, tmp_path / "run", epochs=2))                 # the same settings: resume would work
    with pytest.raises(ConfigError) as other:                             # other settings: only what works
        fit(tiny(tiny_data, tmp_path / "run", epochs=1, loss="ce"))
    assert str(other.value) == (f"out folder {tmp_path / 'run'} already holds a run made with other settings (loss "
                                f"'flsd53' there, 'ce' here); pass overwrite=True to replace it, or choose another "
                                f"out folder")
    with pytest.raises(CheckpointError, match="other settings .*loss"):
        fit(tiny(tiny_data, tmp_path / "run", epochs=2, loss="ce", resume=True))
    assert (tmp_path / "run" / "last.pt").read_bytes() == before
    # --overwrite whose new run cannot load (here its data): the old run is still whole afterwards
    kept = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    with pytest.raises(DataError):
        fit(tiny(tiny_data, tmp_path / "run", epochs=1, loss="ce", overwrite=True,
                 data=str(tiny_data / "cifar-100-python")))
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()} == kept
    (tmp_path / "run" / "predictions-best.npz").write_bytes(b"evaluate's, of the old best.pt")
    fit(tiny(tiny_data, tmp_path / "run", epochs=1, loss="ce", overwrite=True))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["loss"] == "ce"
    assert not (tmp_path / "run" / "predictions-best.npz").exists()


def test_the_next_commands_name_the_venvs_python_and_tensorboard(tmp_path, monkeypatch):
    """Not a bare `python` or `tensorboard`: neither is on PATH when the venv was never activated."""
    from cifar_hw2.training import runfolder
    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    monkeypatch.setattr(runfolder, "this_python", lambda: str(venv / "python"))
    best = {"epoch": 1, "test_top1": 0.5, "test_ece": 0.05}
    (venv / "tensorboard").write_text("")
    assert runfolder.closing_lines(tmp_path / "run", best, 1).splitlines()[1] == (
        f"Next: {venv}/python -m cifar_hw2 evaluate --checkpoint {tmp_path}/run/best.pt  |  {venv}/python -m cifar_hw2 "
        f"report --runs {tmp_path}  |  {venv}/tensorboard --logdir {tmp_path}  |  notebook 05 compares runs")
    (venv / "tensorboard").unlink()          # a tensorboard installed elsewhere: the one on PATH
    assert f"  |  tensorboard --logdir {tmp_path}  |" in runfolder.closing_lines(tmp_path / "run", best, 1)
    spaced = tmp_path / "my runs" / "run 1"  # pasted, each path is one argument
    assert f"--checkpoint '{spaced}/best.pt'  |" in runfolder.closing_lines(spaced, best, 1)
    assert f"--runs '{spaced.parent}'  |" in runfolder.closing_lines(spaced, best, 1)


def test_checkpoint_of_another_model_or_corrupt_is_refused_and_kept(tiny_data, tmp_path):
    out = tmp_path / "run"
    fit(tiny(tiny_data, out, epochs=1))
    with pytest.raises(CheckpointError, match="holds a small_cnn model, not efficientnet_b4"):
        load_checkpoint(out / "last.pt", "efficientnet_b4", 100)
    with pytest.raises(CheckpointError, match="has 100 classes, not 10"):
        load_checkpoint(out / "last.pt", "small_cnn", 10)
    (out / "last.pt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="is not a cifar_hw2 checkpoint"):
        fit(tiny(tiny_data, out, epochs=2, resume=True))
    assert (out / "last.pt").read_bytes() == b"\x00garbage"


def _overflow_the_weights(monkeypatch):
    # lr belongs to the run's settings, so a resume cannot change it; set it in the optimizer
    # instead, so large that the first step overflows the weights.
    original = Trainer.setup

    def setup(self, state):
        original(self, state)
        for group in self.optimizer.param_groups:
            group["lr"] = 1e30
    monkeypatch.setattr(Trainer, "setup", setup)


def _overflow_the_outputs(monkeypatch):
    # Finite training losses, yet outputs that overflow in evaluation: the run stops in one line, as
    # for a non-finite loss, instead of a bare ValueError from the metrics.
    original = Trainer.predict

    def predict(self, split):
        logits, labels = original(self, split)
        logits[0, 0] = float("inf")
        return logits, labels
    monkeypatch.setattr(Trainer, "predict", predict)


@pytest.mark.parametrize("break_it, message", [
    (_overflow_the_weights, r"epoch 2, step \d+.*last good checkpoint .*after epoch 1"),
    (_overflow_the_outputs, r"outputs became NaN or infinite in this epoch's evaluation; the run stopped\. "
                            r".*last good checkpoint .*after epoch 1"),
])
def test_non_finite_loss_or_outputs_stop_the_run_and_keep_the_checkpoint(tiny_data, tmp_path, monkeypatch,
                                                                          break_it, message):
    out = tmp_path / "run"
    fit(tiny(tiny_data, out, epochs=1))
    before = (out / "last.pt").read_bytes()
    break_it(monkeypatch)
    with pytest.raises(NonFiniteLossError, match=message):
        fit(tiny(tiny_data, out, epochs=2, resume=True))
    assert (out / "last.pt").read_bytes() == before


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["ce", "focal", "flsd53", "mc"])
def test_every_loss_trains(loss, tiny_data, tmp_path):
    """With each loss the training loss falls from epoch 1 to epoch 2 (by 0.3 to 5 on this data):
    a trainer that does not step, or steps on the wrong quantity, fails this."""
    history = fit(tiny(tiny_data, tmp_path / loss, epochs=2, loss=loss))
    first, second = (row["train_loss"] for row in history)
    assert math.isfinite(first) and second < first - 0.1


@pytest.mark.parametrize("optimizer", ["ranger", "sgd"])
def test_other_optimizers(optimizer, tiny_data, tmp_path):
    fit(tiny(tiny_data, tmp_path / optimizer, epochs=1, optimizer=optimizer))
    state = load_checkpoint(tmp_path / optimizer / "last.pt")
    assert state["optimizer"]["state"]


@pytest.mark.slow
def test_device_augmentation_path_trains_and_is_deterministic(tiny_data, tmp_path):
    """augment_on="device" (the default on CUDA and CPU): no loader workers, same results twice."""
    fit(tiny(tiny_data, tmp_path / "a", epochs=2, augment_on="device"))
    fit(tiny(tiny_data, tmp_path / "b", epochs=2, augment_on="device"))
    assert read_history(tmp_path / "a") == read_history(tmp_path / "b")
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["top1"] > 0.02


@pytest.mark.slow
def test_progress_bar_redraws_at_most_about_once_a_second(tiny_data, tmp_path, monkeypatch):
    """In a notebook each redraw is a widget update on iopub; nbval reads iopub only after the cell
    ends and ZeroMQ drops messages past its queue limit (the kernel's "idle" among them). A redraw
    per step (set_postfix refreshes by default) failed 04_train.ipynb in CI; redraws must follow
    the 1 s rate limit whatever the number of steps."""
    import io

    from tqdm.std import tqdm as plain_tqdm

    bars = []

    class CountingBar(plain_tqdm):
        def __init__(self, *args, **kwargs):
            self.draws = 0
            super().__init__(*args, file=io.StringIO(), **kwargs)
            bars.append(self)

        def display(self, *args, **kwargs):
            self.draws += 1
            return super().display(*args, **kwargs)

    monkeypatch.setattr("cifar_hw2.training.progress.text_tqdm", CountingBar)
    start = time.perf_counter()
    fit(tiny(tiny_data, tmp_path / "run", epochs=2, batch_size=10, progress="bar"))   # 100 steps/epoch
    elapsed = time.perf_counter() - start
    assert len(bars) == 2 and all(bar.n == bar.total == 100 for bar in bars)
    assert all("loss=" in bar.postfix for bar in bars)
    # one draw when a bar opens, one when it closes, and at most one per second in between
    assert sum(bar.draws for bar in bars) <= 2 * len(bars) + elapsed + 1, [bar.draws for bar in bars]


@pytest.mark.slow
def test_compile_trains_like_eager_and_saves_plain_weights(tiny_data, tmp_path):
    """--compile (inductor, here on the CPU): same losses up to kernel rounding, and checkpoints
    hold the plain module's weights (no "_orig_mod." prefixes), loadable without compile."""
    eager = fit(tiny(tiny_data, tmp_path / "eager", epochs=1))
    compiled = fit(tiny(tiny_data, tmp_path / "compiled", epochs=1, compile=True))
    assert compiled[0]["train_loss"] == pytest.approx(eager[0]["train_loss"], rel=1e-2)
    state = load_checkpoint(tmp_path / "compiled" / "best.pt", "small_cnn", 100)
    assert not any(k.startswith("_orig_mod.") for k in state["model"])
    assert state["model"].keys() == load_checkpoint(tmp_path / "eager" / "best.pt", "small_cnn", 100)["model"].keys()


def test_training_and_evaluate_give_one_calibration_number_per_checkpoint(tiny_data, tmp_path, monkeypatch):
    """A run trained in bf16 autocast: its in-training evaluation (history.csv) and `evaluate` on
    its best.pt compute logits the same way (fp32, eager), so ECE, NLL and both temperatures agree.
    Before, training evaluated in bf16 and evaluate in fp32, and they differed. `evaluate` also
    predicts under the run's backend settings (here --deterministic), and puts them back after."""
    from cifar_hw2.experiments import evaluate
    history = fit(tiny(tiny_data, tmp_path / "bf16", epochs=1, precision="bf16", train_per_class=2,
                       deterministic=True))
    row = history[0]
    seen, predict = [], evaluate.predict

    def recording(*args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return predict(*args, **kwargs)
    monkeypatch.setattr(evaluate, "predict", recording)
    result = evaluate.evaluate_checkpoint(tmp_path / "bf16" / "best.pt", "test", device="cpu")
    assert seen == [True, True] and not torch.are_deterministic_algorithms_enabled()
    for ours, theirs in (("test_top1", "top1"), ("test_nll", "nll"), ("test_ece", "ece"),
                         ("temperature", "temperature"), ("test_ece_ts", "ece_ts"),
                         ("temperature_ece", "temperature_ece")):
        assert row[ours] == pytest.approx(result[theirs], rel=1e-6, abs=1e-9), ours


def test_a_finished_run_says_where_its_results_are_and_evaluate_finds_its_data(tiny_data, tmp_path, monkeypatch,
                                                                               capsys):
    """The closing lines name the best epoch, the folder and the next commands; `evaluate` reads
    CIFAR-100 from the folder the run used (found through $CIFAR_HW2_DATA at training time)."""
    from cifar_hw2.experiments.evaluate import evaluate_checkpoint
    monkeypatch.setenv("CIFAR_HW2_DATA", str(tiny_data))
    out = tmp_path / "run"
    fit(tiny(tiny_data, out, data=None, epochs=1, progress="epoch"))
    printed = capsys.readouterr().out.strip().splitlines()
    metrics = json.loads((out / "metrics.json").read_text())
    assert printed[-2].endswith(f"done, 1 epoch. Best by validation: epoch 1, test top-1 "
                                f"{100 * metrics['best']['top1']:.2f} %, ECE {100 * metrics['best']['ece']:.2f} % "
                                f"(metrics.json; curves in history.csv and TensorBoard; predictions.npz).")
    assert printed[-1].startswith(f"Next: {this_python()} -m cifar_hw2 evaluate --checkpoint ")   # not a bare python
    assert "best.pt" in printed[-1]
    assert json.loads((out / "config.json").read_text())["data_folder"] == str(tiny_data)
    monkeypatch.delenv("CIFAR_HW2_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))     # the default folder holds nothing
    result = evaluate_checkpoint(out / "best.pt")
    assert result["top1"] == metrics["best"]["top1"]
    assert (out / "predictions-best.npz").exists()


def test_a_last_pt_that_cannot_continue_the_run_is_one_error_and_nothing_is_changed(tiny_data, tmp_path):
    """A best.pt copied over last.pt (a likely mistake; refused before any data is loaded), or a
    last.pt whose values do not fit (found as it is restored): a CheckpointError that says what to
    do, not a KeyError from deep in the restore, and nothing of the run is changed."""
    out = tmp_path / "run"
    fit(tiny(tiny_data, out, epochs=1, train_per_class=2, val_per_class=1))
    last = torch.load(out / "last.pt", weights_only=True)
    (out / "last.pt").write_bytes((out / "best.pt").read_bytes())
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(CheckpointError) as e:
        fit(tiny(tiny_data, out, epochs=2, train_per_class=2, val_per_class=1, resume=True))
    assert str(e.value) == (f"{out / 'last.pt'} cannot be resumed: it holds a model's weights but not optimizer, "
                            f"scheduler, history, best, calibration, rng (a best.pt, written for evaluation?); "
                            f"restore the run's last.pt, or pass overwrite=True to start over")
    for odd, says in [({"epoch": -3}, "its epoch (-3) and its history (1 epochs) disagree"),
                      ({"rng": {"python": []}}, "it does not fit this run (KeyError: 'torch'); restore the run's "
                                                "last.pt, or pass overwrite=True to start over"),
                      ({"position": {"step": 3}}, "it does not fit this run (KeyError: 'world')")]:
        torch.save({**last, **odd}, out / "last.pt")
        with pytest.raises(CheckpointError, match=re.escape(says)):
            fit(tiny(tiny_data, out, epochs=2, train_per_class=2, val_per_class=1, resume=True))
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != "last.pt"} == \
        {k: v for k, v in files.items() if k != "last.pt"}
