"""Does a steady-state training step make the host wait for the GPU? Checked on CUDA itself.

    python -m cifar_hw2.perf.syncdebug --model efficientnet_b4 --batch-size 64 [--data DIR] [--json FILE]

`perf/syncs.py` counts would-be syncs on the CPU or the meta device, from a list of the ops that
sync. This asks CUDA: after a warm-up (cuDNN autotuning, the first compiled step, the caching
allocator filling up), it runs the trainer's own data path and step (the device batches with
their batched augmentation, normalisation and noise, `Trainer.step`) for more steps, spanning at
least one new augmentation chunk, under `torch.cuda.set_sync_debug_mode`:

  1. "warn": every synchronizing CUDA call becomes a warning; they are collected with where they
     came from (listed in the result)
  2. "error": the same steps again; the first synchronizing call raises. This is the verdict:
     the check passes only if nothing is raised.

What the epoch loop adds around the step is left out on purpose: it reads its metrics every 25
steps (a deliberate sync, trainer.py). Without CUDA there is nothing to ask: the check says so
in one line and is skipped (exit 0).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import torch

from ..training.backends import backend_settings
from ..training.config import make_config
from ..training.processes import Processes
from ..training.trainer import Trainer

SKIPPED_ON = "torch.cuda.set_sync_debug_mode needs a CUDA device"


def steady_trainer(model: str, batch_size: int, device: str = "auto", precision: str = "auto",
                   compile_mode: str | None = None, data: str | None = None, out: str | None = None,
                   train_per_class: int | None = None, loss: str = "ce") -> Trainer:
    """A set-up Trainer on the whole training split (or `train_per_class`), from scratch, with the
    default data path (device batches on CUDA and the CPU); `compile_mode`: None for eager.
    Call it inside `backend_settings(trainer.device, ...)`, as the run does (cudnn.benchmark)."""
    cfg = make_config("quick", model=model, pretrained=False, loss=loss, batch_size=batch_size, device=device,
                      precision=precision, compile=compile_mode is not None, compile_mode=compile_mode or "default",
                      train_per_class=train_per_class, test_per_class=None, data=data,
                      out=out or tempfile.mkdtemp(prefix="cifar_hw2-steady-"), overwrite=True, progress="off")
    trainer = Trainer(cfg, Processes())
    trainer.setup(None)
    return trainer


def step_stream(trainer: Trainer):
    """The trainer's batches, epoch after epoch without end: (images, labels) on the device."""
    for epoch in itertools.count(1):
        trainer.sampler.set_epoch(epoch)
        yield from trainer.loader


def run_steps(trainer: Trainer, batches, steps: int) -> None:
    """`steps` training steps on the next batches of `batches` (step_stream): what the epoch loop
    does per step, less its periodic metric reads."""
    dev = trainer.device
    trainer.train_model.train()
    for images, labels in itertools.islice(batches, steps):
        images, labels = images.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
        trainer.timed_step(trainer.inputs(images), labels)


def window_steps(trainer: Trainer, steps: int) -> int:
    """At least one more than a chunk's batches, so that a window always augments a new chunk."""
    return max(steps, getattr(trainer.loader, "batches_per_chunk", 1) + 1)


def _where(frames) -> str:
    """The innermost frame outside torch (this package's or torchvision's call), as
    "file.py:line in function"."""
    for frame in reversed(frames):
        path = frame.filename.replace("\\", "/")
        if "/torch/" not in path:
            return f"{path.rsplit('/', 1)[-1]}:{frame.lineno} in {frame.name}"
    return "?"


def check_syncs(run, set_mode=None) -> dict:
    """Run `run()` (the steps to check) under sync debug mode "warn", then again under "error".
    Returns {"warnings": ["where: message", ...], "error": "where: message" or None, "ok": bool}.
    `set_mode`: torch.cuda.set_sync_debug_mode (replaced in tests, where there is no CUDA)."""
    set_mode = set_mode or torch.cuda.set_sync_debug_mode
    found = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        set_mode("warn")
        try:
            run()
        finally:
            set_mode("default")
    for w in caught:
        if "synchroniz" in str(w.message).lower():
            found.append(f"{Path(w.filename).name}:{w.lineno}: {str(w.message).splitlines()[0][:200]}")
    error = None
    set_mode("error")
    try:
        run()
    except RuntimeError as e:
        error = f"{_where(traceback.extract_tb(e.__traceback__))}: {str(e).splitlines()[0][:200]}"
    finally:
        set_mode("default")
    return {"warnings": found, "error": error, "ok": error is None and not found}


def steady_state_syncs(trainer: Trainer, warmup_steps: int = 16, steps: int = 16) -> dict:
    """Warm up, then check_syncs on `steps` further steps (at least a chunk and one more) of the
    trainer's stream. CUDA only."""
    batches = step_stream(trainer)
    run_steps(trainer, batches, window_steps(trainer, warmup_steps))
    torch.cuda.synchronize(trainer.device)
    n = window_steps(trainer, steps)
    result = check_syncs(lambda: run_steps(trainer, batches, n))
    torch.cuda.synchronize(trainer.device)
    return {**result, "steps_checked": n, "warmup_steps": window_steps(trainer, warmup_steps)}


def steady_step_parser(module: str, doc: str, verb: str, steps: int, device_help: str = "auto | cuda | cpu"):
    """The flags of the two steady-state commands (this one and kernels.py): which step, where, how long."""
    p = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.splitlines()[0])
    p.add_argument("--model", default="efficientnet_b4")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help=device_help)
    p.add_argument("--precision", default="auto")
    p.add_argument("--compile-mode", default=None, help=f"{verb} the compiled step in this mode (default: eager)")
    p.add_argument("--data", default=None, help="folder holding cifar-100-python/")
    p.add_argument("--warmup-steps", type=int, default=16)
    p.add_argument("--steps", type=int, default=steps)
    return p


def main(argv: list[str] | None = None, echo=print) -> int:
    p = steady_step_parser("cifar_hw2.perf.syncdebug", __doc__, "check", steps=16,
                           device_help="auto | cuda | cpu (cpu: skipped, with a line that says so)")
    p.add_argument("--json", default=None, help="also write the result to this file")
    args = p.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    trainer = None
    if device.type == "cuda":
        trainer = steady_trainer(args.model, args.batch_size, str(device), args.precision, args.compile_mode,
                                 args.data)
    ok = report_syncs(trainer, args.json, args.warmup_steps, echo, args.steps,
                      skipped={"model": args.model, "batch_size": args.batch_size, "device": device.type})
    return 0 if ok is not False else 1


def report_syncs(trainer: Trainer | None, json_path: str | None, warmup_steps: int = 16, echo=print,
                 steps: int = 16, skipped: dict | None = None) -> bool | None:
    """Run the check on `trainer` (None, or not on CUDA: skipped), print its lines, write its JSON;
    True (no sync), False (syncs found) or None (skipped)."""
    if trainer is None or trainer.device.type != "cuda":
        where = trainer.device.type if trainer is not None else (skipped or {}).get("device", "cpu")
        record = {**(skipped or {}), "skipped": f"{SKIPPED_ON}; this run is on {where} (perf/syncs.py counts "
                                                f"on the CPU)"}
        if trainer is not None:
            record.update(model=trainer.cfg.model, batch_size=trainer.cfg.batch_size)
        echo(f"sync check skipped: {record['skipped']}")
    else:
        cfg = trainer.cfg
        compiled = cfg.compile_mode if cfg.compile else False
        record = {"model": cfg.model, "batch_size": cfg.batch_size, "precision": trainer.precision.name,
                  "compile": compiled, "device": torch.cuda.get_device_name(trainer.device)}
        with backend_settings(trainer.device, deterministic=False, tf32=False):
            record.update(steady_state_syncs(trainer, warmup_steps, steps))
        verdict = "no host sync" if record["ok"] else "HOST SYNCS FOUND"
        echo(f"sync check, {cfg.model} batch {cfg.batch_size} {record['precision']} {compiled or 'eager'}: "
             f"{verdict} in {record['steps_checked']} steady-state steps (after {record['warmup_steps']} warm-up steps)")
        for line in record["warnings"] + ([f"raised: {record['error']}"] if record["error"] else []):
            echo(f"  {line}")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(record, indent=1) + "\n")
    return record.get("ok")


if __name__ == "__main__":
    sys.exit(main())
