"""The run folder `config.out`: what it holds, whether a run may use it, and how it is written.

    config.json    the resolved config, versions, git commit, device, precision and backend
                   settings picked (and why), data sizes, command line
    history.csv    one row per epoch (HISTORY_COLUMNS)
    metrics.json   test metrics of the final epoch and of the best-by-validation epoch (fractions)
    last.pt        everything needed to resume; best.pt  the weights of the best-by-val epoch
    events.out.tfevents.*   TensorBoard's curves (tensorboard.py)
    .lock          held while a run is alive (folderlock.py); slurm.json  its Slurm job (experiments/slurm.py)

Under torchrun only rank 0 writes these; every write is atomic (checkpoint.py), and a failed one
is one line (`RunFiles.write`).
"""
from __future__ import annotations

import contextlib
import os
import platform
import shlex
import subprocess
import tempfile
from pathlib import Path

import torch

from .. import __version__
from ..data import NUM_CLASSES
from ..models import MODELS
from .compiled import ARTIFACTS
from .checkpoint import (CheckpointError, check_resumable, leftover_temp_files, load_checkpoint, read_json_mapping, write_csv,
                         write_json)
from .paths import command_line, shown_path, this_python
from .progress import in_notebook
from .config import LOSS_SETTINGS, RUNTIME_FIELDS, ConfigError, TrainConfig, upgrade_saved
from .naming import as_flags, how_to_set, setting
from .folderlock import hold
from .stopping import what_is_kept

RUN_FILES = ("config.json", "history.csv", "metrics.json", "last.pt", "best.pt", "predictions.npz")
JOB_FILE = "slurm.json"     # the Slurm job of a run submitted through experiments/slurm.py


def run_files_in(out: str | Path) -> list[str]:
    """The RUN_FILES that `out` holds ([] for a folder that holds no run, or none at all)."""
    return [name for name in RUN_FILES if (Path(out) / name).exists()]


HISTORY_COLUMNS = ["epoch", "lr", "train_loss", "train_acc",
                   "val_top1", "val_top5", "val_nll", "val_ece",
                   "test_top1", "test_top5", "test_nll", "test_ece",
                   "temperature", "test_ece_ts", "temperature_ece", "test_ece_ts_ece",
                   "seconds", "images_per_s"]


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


# What the CPU's digits depend on. A CPU run repeats digit for digit (history.csv and metrics.json)
# only where all of these are the same, with the same code and data: the kernel family
# (cpu_capability) and the thread count change the order of float sums; so does the CPU itself,
# whose libraries pick code paths by model and vendor (an AMD EPYC with AVX-512 gave other digits
# than the AVX-512 machine that made the CPU reference), and so do the library versions. tests/test_reference.py compares only such runs.
SAME_DIGITS_ON = ("cpu_model", "cpu_capability", "torch_threads", "python", "torch", "torchvision",
                  "timm", "numpy")


def cpu_model() -> str:
    """The CPU's model name, as the OS gives it ('AMD EPYC 9R14 96-Core Processor')."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict:
    import numpy
    import timm
    import torchvision
    return {"cifar_hw2": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "timm": timm.__version__, "numpy": numpy.__version__,
            "cpu_model": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads(),
            # what a CUDA run's digits also depend on (None in a CPU build of torch); the GPU is `gpu`
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}


def _identity(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in RUNTIME_FIELDS}


def settings_changed(saved: dict, cfg: TrainConfig) -> dict:
    """{field: (saved, now)} for the settings that change what a run computes. A field the saved
    config predates counts as its default (an old `amp` as its `precision`)."""
    old, new = _identity({**TrainConfig().to_dict(), **upgrade_saved(saved)}), _identity(cfg.to_dict())
    return {k: (old.get(k), new.get(k)) for k in new if old.get(k) != new.get(k)}


def describe_changes(changed: dict) -> str:
    """settings_changed's result in words: "loss 'flsd53' there, 'ce' here; ..." (four at most)."""
    what = [f"{setting(k)} {a!r} there, {b!r} here" for k, (a, b) in changed.items()]
    return "; ".join(what[:4]) + (f"; and {len(what) - 4} more" if len(what) > 4 else "")


def describe_run(cfg: dict) -> str:
    return f"model={cfg.get('model')}, loss={cfg.get('loss')}, lr={cfg.get('lr')}, batch_size={cfg.get('batch_size')}"


def check_out_folder(out: str | Path, field: str = "out") -> None:
    """Can `out` be made and written to? Checked at start-up, before any data is loaded, so that a bad
    --out is one line (ConfigError), not a traceback an hour later. Leaves nothing behind: a folder
    that does not exist yet is not made here, a probe is made in its nearest existing parent.
    `field`: the setting that named it (the grid's is `runs`)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{setting(field)} {out} exists and is not a folder")
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"cannot make out folder {out}: {parent} is a file, not a folder")
    try:
        if parent == out:
            fd, probe = tempfile.mkstemp(dir=out, prefix=".write-probe-")
            os.close(fd)
            os.unlink(probe)
        else:
            os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".write-probe-"))
    except OSError as e:
        why = e.strerror or str(e)
        raise ConfigError(f"cannot write to out folder {out}: {why}" if parent == out else
                          f"cannot make out folder {out}: making a folder in {parent} fails ({why})") from None


def remove_partial_writes(out: str | Path) -> None:
    """Delete the temp files of run-file writes that a killed run left in `out` (kill -9 during a
    checkpoint write leaves a partial .last.pt.*.tmp; the file itself is intact). Only while holding
    the folder's lock: then no other run writes there. Files of other writers (an `evaluate`'s
    eval-*.json) are left alone."""
    for path in leftover_temp_files(Path(out), RUN_FILES):
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass            # harmless where it stays: nothing reads it


@contextlib.contextmanager
def claimed(out: str | Path, procs):
    """While a run lasts: its out folder can be written, no other run holds it (rank 0 holds its
    lock), and no partial write of a killed run is left in it. Checked before any data is loaded;
    a failure stops every rank together (`procs`: a processes.Processes)."""
    with contextlib.ExitStack() as held:
        error = None
        if procs.main:
            try:
                check_out_folder(out)
                held.enter_context(hold(out))
                remove_partial_writes(out)      # what a killed run's writes left
            except ConfigError as e:
                error = e
        error = procs.share(error)
        if error is not None:
            raise error
        yield


def run_paths(out: str | Path) -> list[Path]:
    """What --overwrite replaces in `out`: the run files, its TensorBoard event files (TensorBoard
    would draw the old curves under the new run's), its Slurm job record (`grid --status` would
    report that job for the next run), its compile cache artifacts (the old run's compiled code)
    and what `evaluate` made from its checkpoints (05 would read an old predictions-best.npz whose
    epoch number the new run happens to share)."""
    out = Path(out)
    derived = [p for pattern in ("eval-best-*.json", "eval-last-*.json") for p in sorted(out.glob(pattern))]
    return ([out / name for name in RUN_FILES + (JOB_FILE, ARTIFACTS, "predictions-best.npz", "predictions-last.npz")]
            + derived + sorted(out.glob("events.out.tfevents.*")))


def check_clearable(out: str | Path) -> None:
    """Refuse, before anything is deleted, a run whose files include a folder: deleting the rest and
    then stopping on it would leave half a run."""
    odd = [p.name for p in run_paths(out) if p.is_dir()]
    if odd:
        raise ConfigError(f"cannot replace the run in {out}: {', '.join(odd)} is a folder, not a run's file; "
                          f"move it away, or choose {another_out()}")


def clear_run(out: str | Path) -> None:
    """Delete the run in `out` (run_paths)."""
    check_clearable(out)
    for path in run_paths(out):
        path.unlink(missing_ok=True)


def replace_run(cfg: TrainConfig, procs) -> None:
    """--overwrite: delete the old run once the new one has its data and model, so that a new run
    that cannot start (data or weights missing, a refused file) leaves the old one whole.
    `procs`: a processes.Processes."""
    if not cfg.overwrite:
        return
    procs.barrier()
    if procs.main:
        clear_run(cfg.out)
    procs.barrier()


def saved_config(out: str | Path) -> dict:
    """The config of the run in `out`, as its config.json records it; {} where there is none (or it
    cannot be read: the file is not trusted, and only parsed as JSON)."""
    saved = read_json_mapping(Path(out) / "config.json").get("config", {})
    return saved if isinstance(saved, dict) else {}


def another_out() -> str:
    """The way out of a folder that holds another run, as the front end says it."""
    return "another --out" if as_flags() else "another out folder"


def prepare_out(cfg: TrainConfig, procs) -> dict | None:
    """Check the out folder against this run; return the checkpoint state to resume from, if any.
    `procs`: a processes.Processes (barrier, main)."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{setting('out')} {out} exists and is not a folder")
    existing = run_files_in(out)
    recorded = saved_config(out).get("model")
    if "config.json" in existing and not (isinstance(recorded, str) and recorded in MODELS) and not cfg.overwrite:
        # Not a run's record (another tool's file, or damaged): --resume would write over it.
        raise ConfigError(f"out folder {out} holds a config.json that is not a cifar_hw2 run's record; choose "
                          f"{another_out()}, or pass {how_to_set('overwrite', True)} to replace it")
    if existing and not (cfg.resume or cfg.overwrite):
        old = saved_config(out)
        try:
            changed = settings_changed(old, cfg) if old else {}
        except (TypeError, ValueError, AttributeError):    # config.json is not trusted: odd values
            changed = {}
        if changed:     # --resume would be refused: offer only what works
            raise ConfigError(f"out folder {out} already holds a run made with other settings "
                              f"({describe_changes(changed)}); pass {how_to_set('overwrite', True)} to replace it, or choose {another_out()}")
        done = read_json_mapping(out / "metrics.json").get("epochs_done")
        if isinstance(done, int) and not isinstance(done, bool) and done >= cfg.epochs:   # nothing to resume
            evaluate = (f" (`evaluate --checkpoint {out / 'best.pt'}` re-evaluates it)" if "best.pt" in existing
                        else "")
            raise ConfigError(f"out folder {out} already holds a run with nothing left to do ("
                              f"{describe_run(old) + ', ' if old else ''}{done} epoch{'s' if done != 1 else ''} "
                              f"done, {cfg.epochs} asked); pass {how_to_set('overwrite', True)} to train it again, or choose "
                              f"{another_out()}{evaluate}")
        raise ConfigError(f"out folder {out} already holds a run ({describe_run(old) if old else ', '.join(existing)}); "
                          f"pass {how_to_set('resume', True)} to continue it or {how_to_set('overwrite', True)} to replace it, or choose {another_out()}")
    if cfg.overwrite:           # checked now, deleted once the new run has loaded (replace_run)
        check_clearable(out)
        return None
    results = [name for name in ("history.csv", "metrics.json", "best.pt") if name in existing]
    if cfg.resume and results and "last.pt" not in existing:
        # Training again from epoch 1 would replace these: only --overwrite may do that.
        raise ConfigError(f"cannot resume {out}: it holds a run's results ({', '.join(results)}) but no last.pt, "
                          f"so there is nothing to continue from. Pass {how_to_set('overwrite', True)} to train it again from epoch 1 "
                          f"(replacing them), restore its last.pt, or choose {another_out()}")
    if cfg.resume and (out / "last.pt").exists():
        state = load_checkpoint(out / "last.pt", cfg.model, NUM_CLASSES)
        check_resumable(state, out / "last.pt")
        changed = settings_changed(state["config"], cfg)
        if changed:
            what = ", ".join(f"{setting(k)}: {a!r} in the checkpoint, {b!r} now" for k, (a, b) in changed.items())
            raise CheckpointError(f"cannot resume {out / 'last.pt'}: it was made with other settings ({what}). "
                                  f"Resume with the same settings, or pass {how_to_set('overwrite', True)} to start over")
        return state
    return None


def config_record(cfg: TrainConfig, **picked) -> dict:
    """config.json: the config as given, plus what this run picked (device, precision, ...).
    `loss_settings_used`: the loss's own settings that it read (`gamma` for focal; none for FLSD-53,
    whose γ is fixed): "config" lists every setting, those of other losses at unused defaults."""
    used = {name: getattr(cfg, name) for name, losses in LOSS_SETTINGS.items() if cfg.loss in losses}
    return {"config": cfg.to_dict(), "loss_settings_used": used, "versions": versions(), "git_commit": git_commit(),
            **picked, "command": command_line()}


def closing_lines(out: Path, best: dict, epochs: int) -> str:
    """What a finished run says last: its best epoch, where its files are, and what to run next. The
    commands name this interpreter (`.venv/bin/python` from the repository root, not a bare `python`,
    which outside the venv has no torch) and the tensorboard beside it, except in a notebook, whose
    saved output is read elsewhere."""
    python = "python" if in_notebook() else this_python()
    beside = Path(python).with_name("tensorboard")     # the venv's own, as for python: it may not be on PATH
    tensorboard = str(beside) if python != "python" and beside.is_file() else "tensorboard"
    shown, q = shown_path(out), shlex.quote        # quoted: a folder with a space pastes as one argument
    parent = shown_path(Path(out).parent) if shown_path(Path(out).parent) not in ("", ".") else "."
    return (f"{shown}: done, {epochs} epoch{'s' if epochs != 1 else ''}. "
            f"Best by validation: epoch {best['epoch']}, test top-1 "
            f"{100 * best['test_top1']:.2f} %, ECE {100 * best['test_ece']:.2f} % (metrics.json; curves in "
            f"history.csv and TensorBoard; predictions.npz).\n"
            f"Next: {q(python)} -m cifar_hw2 evaluate --checkpoint {q(f'{shown}/best.pt')}  |  {q(python)} -m "
            f"cifar_hw2 report --runs {q(parent)}  |  {q(tensorboard)} --logdir {q(parent)}  |  notebook 05 compares runs")


def metrics_record(history: list[dict], best: dict | None, epochs: int, calibration: dict) -> dict:
    """metrics.json: test metrics (fractions) at the final epoch and at the best-by-val epoch,
    with the reliability-diagram bins of both (before and after temperature scaling)."""
    def pick(row):
        return {"epoch": row["epoch"], "top1": row["test_top1"], "top5": row["test_top5"],
                "nll": row["test_nll"], "ece": row["test_ece"], "temperature": row["temperature"],
                "ece_ts": row["test_ece_ts"], "temperature_ece": row.get("temperature_ece"),
                "ece_ts_ece": row.get("test_ece_ts_ece"), "val_top1": row["val_top1"]}
    final = pick(history[-1])
    return {**{k: final[k] for k in ("top1", "top5", "nll", "ece")},
            "final": final, "best": pick(best), "epochs_done": history[-1]["epoch"], "epochs": epochs,
            "complete": history[-1]["epoch"] >= epochs, "reliability": calibration}


class RunFileError(RuntimeError):
    """A file of the run folder could not be written (a full disk, ...); the last good checkpoint is kept."""


class RunFiles:
    """A run's writes to its folder (rank 0 alone calls them). A failed write (a full disk) raises
    RunFileError, one line that says what is kept and how to go on; the old file is intact and no
    temp file is left."""

    def __init__(self, out: str | Path, epochs: int, resume_command: str):
        self.out, self.epochs, self.resume_command = Path(out), epochs, resume_command
        # (epochs done, steps into the next) of the last last.pt written: what a failure keeps.
        # Every rank tracks it, for the error that every rank raises on a NaN loss.
        self.saved: tuple[int, int] | None = None

    def write(self, name: str, write, *args) -> None:
        """`write(path, *args)` for the file `name` of the run folder."""
        path = self.out / name
        try:
            write(path, *args)
        except OSError as e:
            raise RunFileError(f"could not write {path}: {e.strerror or e}. {self.kept()}; free space or "
                               f"fix the folder, then resume: {self.resume_command}") from None

    def record(self, history: list[dict], best: dict | None, calibration: dict) -> None:
        """history.csv and metrics.json from the history so far."""
        self.write("history.csv", write_csv, history)
        self.write("metrics.json", write_json, metrics_record(history, best, self.epochs, calibration))

    def kept(self) -> str:
        return what_is_kept(self.out, self.saved, self.epochs)


def rng_lists(x):
    """Python's RNG state as nested lists: checkpoints hold no tuples-of-tuples surprises."""
    return [rng_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def rng_tuples(x):
    return tuple(rng_tuples(v) for v in x) if isinstance(x, list) else x
