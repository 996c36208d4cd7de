"""Notebook 04's plan cell: what one GPU session can do with this run, timed on the machine itself.

On Colab it times a few of the run's own training steps and says hours per row, epochs per session,
and where to keep the run folder so that it outlives the VM; elsewhere it says which command does it.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ..training.backends import backend_settings
from ..training.config import TrainConfig
from ..training.processes import Processes
from ..training.trainer import Trainer
from .bench import device_sync, trainer_window

COLAB_SESSION_HOURS = 12.0   # Colab's longest session; free sessions often end sooner, and idle ones within ~1.5 h


def session_plan(cfg: TrainConfig, steps: int = 8, session_hours: float = COLAB_SESSION_HOURS,
                 on_colab: bool | None = None, echo=print) -> dict | None:
    """On Colab: time `steps` of this run's own training steps on this machine (its model, batch,
    precision and data path, after one warm-up window) and say what that means: hours per row,
    epochs per session, and where to keep the run folder so that it outlives the VM.

    Elsewhere it prints one line and measures nothing (`python -m cifar_hw2 bench` does it on any
    machine). Training steps only: each epoch's evaluation adds about a tenth. Returns the numbers.
    """
    import sys
    if on_colab is None:
        on_colab = "google.colab" in sys.modules
    if not on_colab:
        echo(f"Not on Colab: no session plan needed. `python -m cifar_hw2 bench --model {cfg.model}` "
             f"estimates the hours a row takes on this machine.")
        return None
    import dataclasses
    import tempfile
    with tempfile.TemporaryDirectory(prefix="cifar_hw2-plan-") as tmp:
        probe = dataclasses.replace(cfg, out=tmp, resume=False, overwrite=True, progress="off", epochs=1,
                                    time_limit=None, pretrained=False)   # speed does not depend on the weights
        trainer = Trainer(probe, Processes())
        with backend_settings(trainer.device, deterministic=False, tf32=probe.tf32):
            trainer.setup(None)
            steps = min(steps, len(trainer.loader))
            window, sync = trainer_window(trainer, steps), device_sync(trainer.device)
            window()                                  # warm-up: cuDNN autotuning, caches, compile
            sync()
            start = time.perf_counter()
            window()
            sync()
            rate = steps * probe.batch_size / (time.perf_counter() - start)   # images/s
        name = torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else str(trainer.device)
        del trainer
    images = 100 * (cfg.train_per_class if cfg.train_per_class is not None else 500 - cfg.val_per_class)
    hours = cfg.epochs * images / rate / 3600
    per_session = int(session_hours * 0.9 * 3600 * rate / images)   # keep a tenth for evaluation
    echo(f"This GPU ({name}) trains {cfg.model} at batch {cfg.batch_size} at about {rate:,.0f} images/s "
         f"({steps} steps timed): {cfg.epochs} epochs of {images:,} images take about {hours:.1f} h of training, "
         f"about {min(per_session, cfg.epochs)} epochs in a {session_hours:g} h session.")
    if not str(cfg.out).startswith("/content/drive/"):
        echo(f"out = {cfg.out!r} is on the VM's disk, which goes with the session: mount Drive "
             f"(`from google.colab import drive; drive.mount('/content/drive')`) and set "
             f"out = \"/content/drive/MyDrive/cifar_hw2/runs/{Path(cfg.out).name}\".")
    if hours > session_hours:
        echo(f"The run outlasts a session: keep resume = True and set time_limit (hours, e.g. "
             f"{session_hours - 1:g}) so it stops cleanly and saves; run the notebook again in the next session "
             f"to continue. last.pt is also written every checkpoint_minutes ({cfg.checkpoint_minutes:g}) "
             f"inside an epoch, so a disconnect loses at most that.")
    return {"device": name, "images_per_s": rate, "hours_per_row": hours, "epochs_per_session": per_session}
