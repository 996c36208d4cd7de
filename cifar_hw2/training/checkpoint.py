"""Crash-safe files: every write goes to a temp file in the same folder, then os.replace.

A reader (or a resumed run) therefore sees either the old file or the new one, never half of one.
Checkpoints are loaded with `weights_only=True`: they hold only tensors, numbers, strings, lists
and dicts, so loading one cannot run code.
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import warnings
from pathlib import Path

import torch

from .naming import how_to_set

FORMAT = "cifar_hw2-checkpoint/1"
_UMASK = os.umask(0)
os.umask(_UMASK)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or belongs to another model or class count."""


def _temp_affixes(name: str) -> tuple[str, str]:
    """The temp file of a write of `name` is `.NAME.<random>.tmp`, beside it."""
    return f".{name}.", ".tmp"


def leftover_temp_files(folder: Path, names) -> list[Path]:
    """The temp files of writes of `names` in `folder`: each one is what a process killed during the
    write (kill -9, a power cut) left, unless a write is in progress now (the caller must know that
    no other process writes these names: the run folder's lock)."""
    found = []
    for name in names:
        prefix, suffix = _temp_affixes(name)
        found += sorted(Path(folder).glob(f"{prefix}*{suffix}"))
    return found


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = _temp_affixes(path.name)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def read_json_mapping(path: Path) -> dict:
    """A run folder's JSON file (config.json, metrics.json, slurm.json) as a dict; {} where it is
    missing, unreadable or not a mapping. These files come from outside: data of any shape."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return obj if isinstance(obj, dict) else {}


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def save_checkpoint(path: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    atomic_write_bytes(path, buf.getvalue())


def checkpoint_epoch(path: Path) -> int | None:
    """The epoch a checkpoint was written after, None if it is missing or unreadable (memory-mapped:
    reads little of a large file)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("epoch")
    except Exception:
        return None


def load_checkpoint(path: Path, model_name: str | None = None, num_classes: int | None = None,
                    mmap: bool = False) -> dict:
    """Load and check a checkpoint. Raises CheckpointError, never a bare unpickling error. `mmap`:
    the tensors stay on disk until read (to look at a 1 GB last.pt's config, say)."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.pt") if p.is_file())
        if not found:     # not a run folder either (or a last.pt that is a folder): no file to point to
            raise CheckpointError(f"checkpoint {path} is a folder that holds no .pt file; expected a checkpoint "
                                  f"file: a run folder's best.pt or last.pt")
        example = "best.pt" if "best.pt" in found else found[0]
        raise CheckpointError(f"checkpoint {path} is a folder; expected a checkpoint file such as "
                              f"{path / example} (it holds {', '.join(found)})")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} " + ("is not a regular file" if path.exists() else "does not exist"))
    try:
        # torch warns about some foreign files (another pickle protocol) before refusing them; the
        # one line below says all there is to say about such a file.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception:
        # torch's own text here suggests weights_only=False, i.e. running the file's code: advice
        # this project never gives for a file it cannot vouch for. Say what the file is not.
        raise CheckpointError(f"{path} is not a cifar_hw2 checkpoint (or it is damaged): torch cannot "
                              f"read it as a file of tensors. Pass a best.pt or last.pt written by "
                              f"`cifar_hw2 train`") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a cifar_hw2 checkpoint (format {FORMAT!r} expected)")
    missing = [k for k in ("model_name", "num_classes", "epoch", "config", "model") if k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a complete cifar_hw2 checkpoint: it lacks {', '.join(missing)}")
    if not isinstance(state["config"], dict):
        raise CheckpointError(f"{path} is not a cifar_hw2 checkpoint: its config is not a mapping of settings")
    if model_name is not None and state["model_name"] != model_name:
        raise CheckpointError(f"{path} holds a {state['model_name']} model, not {model_name}; "
                              f"use another out folder or pass --overwrite to replace that run")
    if num_classes is not None and state["num_classes"] != num_classes:
        raise CheckpointError(f"{path} has {state['num_classes']} classes, not {num_classes}")
    return state


# What last.pt holds beyond best.pt's weights: everything a run needs to continue (runstate.py).
RESUME_KEYS = ("optimizer", "scheduler", "history", "best", "calibration", "rng")


def start_over() -> str:
    """What to do with a last.pt that cannot be resumed, in the front end's terms."""
    return f"restore the run's last.pt, or pass {how_to_set('overwrite', True)} to start over"


def check_resumable(state: dict, path: Path, remedy: bool = True) -> None:
    """Refuse a checkpoint that cannot continue a run before any data is loaded: a best.pt copied
    to last.pt (weights only), or one whose epoch and history disagree (not written by a run).
    `remedy`: end with what to do (start_over); notebook 04 and the grid say their own."""
    tail = f"; {start_over()}" if remedy else ""
    missing = [k for k in RESUME_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path} cannot be resumed: it holds a model's weights but not "
                              f"{', '.join(missing)} (a best.pt, written for evaluation?){tail}")
    epoch, history = state["epoch"], state["history"]
    if not (type(epoch) is int and epoch >= 0 and isinstance(history, list) and len(history) == epoch):
        size = f"{len(history)} epochs" if isinstance(history, list) else f"a {type(history).__name__}"
        raise CheckpointError(f"{path} cannot be resumed: its epoch ({epoch!r}) and its history ({size}) "
                              f"disagree, so it was not written by a run{tail}")
