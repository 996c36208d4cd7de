"""The run folder `config.out`: what it holds, whether a run may use it, and how it is written.

    config.json    the resolved config, versions, git commit, device, precision and backend
                   settings picked (and why), data sizes, command line
    history.csv    one row per epoch (HISTORY_COLUMNS)
    metrics.json   test metrics of the final epoch and of the best-by-validation epoch (fractions)
    last.pt        everything needed to resume; best.pt  the weights of the best-by-val epoch
    .lock          held while a run is alive (folderlock.py); slurm.json  its Slurm job (experiments/slurm.py)

Under torchrun only rank 0 writes these; every write is atomic (checkpoint.py).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from .. import __version__
from ..data import NUM_CLASSES
from .checkpoint import CheckpointError, load_checkpoint, write_csv, write_json
from .config import RUNTIME_FIELDS, ConfigError, TrainConfig, upgrade_saved

RUN_FILES = ("config.json", "history.csv", "metrics.json", "last.pt", "best.pt")
JOB_FILE = "slurm.json"     # the Slurm job of a run submitted through experiments/slurm.py

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


def versions() -> dict:
    import timm
    import torchvision
    return {"cifar_hw2": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "timm": timm.__version__,
            # CPU results are bit-exact only for the same kernels and thread count: both change the
            # order of float sums (measured: 1 and 2 threads give different epoch-1 rows).
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch_threads": torch.get_num_threads()}


def _identity(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in RUNTIME_FIELDS}


def settings_changed(saved: dict, cfg: TrainConfig) -> dict:
    """{field: (saved, now)} for the settings that change what a run computes. A field the saved
    config predates counts as its default (an old `amp` as its `precision`)."""
    old, new = _identity({**TrainConfig().to_dict(), **upgrade_saved(saved)}), _identity(cfg.to_dict())
    return {k: (old.get(k), new.get(k)) for k in new if old.get(k) != new.get(k)}


def _describe(cfg: dict) -> str:
    return f"model={cfg.get('model')}, loss={cfg.get('loss')}, lr={cfg.get('lr')}, batch_size={cfg.get('batch_size')}"


def check_out_folder(out: str | Path) -> None:
    """Can `out` be made and written to? Checked at start-up, before any data is loaded, so that a bad
    --out is one line (ConfigError), not a traceback an hour later. Leaves nothing behind: a folder
    that does not exist yet is not made here, a probe is made in its nearest existing parent."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out {out} exists and is not a folder")
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


def prepare_out(cfg: TrainConfig, procs) -> dict | None:
    """Check the out folder against this run; return the checkpoint state to resume from, if any.
    `procs`: a processes.Processes (barrier, main)."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out {out} exists and is not a folder")
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if existing and not (cfg.resume or cfg.overwrite):
        old = {}
        if (out / "config.json").exists():
            try:
                old = json.loads((out / "config.json").read_text()).get("config", {})
            except ValueError:
                pass
        raise ConfigError(f"out folder {out} already holds a run ({_describe(old) if old else ', '.join(existing)}); "
                          f"pass --resume to continue it or --overwrite to replace it, or choose another --out")
    if cfg.overwrite:
        procs.barrier()
        if procs.main:
            for name in existing:
                (out / name).unlink()
            # The old run's Slurm job record too: `grid --status` would report that job for this run.
            (out / JOB_FILE).unlink(missing_ok=True)
        procs.barrier()
        return None
    if cfg.resume and (out / "last.pt").exists():
        state = load_checkpoint(out / "last.pt", cfg.model, NUM_CLASSES)
        changed = settings_changed(state["config"], cfg)
        if changed:
            what = ", ".join(f"{k}: {a!r} in the checkpoint, {b!r} now" for k, (a, b) in changed.items())
            raise CheckpointError(f"cannot resume {out / 'last.pt'}: it was made with other settings ({what}). "
                                  f"Resume with the same settings, or pass --overwrite to start over")
        return state
    return None


def config_record(cfg: TrainConfig, **picked) -> dict:
    """config.json: the config as given, plus what this run picked (device, precision, ...)."""
    return {"config": cfg.to_dict(), "versions": versions(), "git_commit": git_commit(), **picked,
            "command": " ".join(sys.argv)}


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


def rng_lists(x):
    """Python's RNG state as nested lists: checkpoints hold no tuples-of-tuples surprises."""
    return [rng_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def rng_tuples(x):
    return tuple(rng_tuples(v) for v in x) if isinstance(x, list) else x
