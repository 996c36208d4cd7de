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
from pathlib import Path

import torch

FORMAT = "cifar_hw2-checkpoint/1"
_UMASK = os.umask(0)
os.umask(_UMASK)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or belongs to another model or class count."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("epoch")
    except Exception:
        return None


def load_checkpoint(path: Path, model_name: str | None = None, num_classes: int | None = None) -> dict:
    """Load and check a checkpoint. Raises CheckpointError, never a bare unpickling error."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        # torch's own text here suggests weights_only=False, i.e. running the file's code: advice
        # this project never gives for a file it cannot vouch for. Say what the file is not.
        raise CheckpointError(f"{path} is not a cifar_hw2 checkpoint (or it is damaged): torch cannot "
                              f"read it as a file of tensors. Pass a best.pt or last.pt written by "
                              f"`cifar_hw2 train`") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a cifar_hw2 checkpoint (format {FORMAT!r} expected)")
    if model_name is not None and state["model_name"] != model_name:
        raise CheckpointError(f"{path} holds a {state['model_name']} model, not {model_name}; "
                              f"use another out folder or pass --overwrite to replace that run")
    if num_classes is not None and state["num_classes"] != num_classes:
        raise CheckpointError(f"{path} has {state['num_classes']} classes, not {num_classes}")
    return state
