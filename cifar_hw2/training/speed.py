"""How long an epoch takes where there is no GPU, said before a run starts rather than discovered.

The paper presets are sized for a GPU. On a CPU a B4 step at 224 px takes minutes and the run
prints nothing for a long time, so `slow_device_notice` gives one line up front: the estimate per
epoch from speeds measured on a 2-core CPU (one AdamW step, forward + backward), scaled by the
threads torch uses here.
"""
from __future__ import annotations

import torch

from .config import TrainConfig

# Training images/s on 2 CPU cores (torch 2.14.1, AdamW, forward + backward at 224 / 384 px), measured on
# the machine the project was built on; an estimate, said as one.
CPU_TRAIN_IMAGES_PER_S = {"efficientnet_b4": 0.4, "swin_b": 0.1}
MEASURED_CORES = 2
EVAL_SPEEDUP = 3.0   # a forward pass alone costs about a third of forward + backward


def epoch_images(cfg: TrainConfig) -> tuple[int, int]:
    """(training images, evaluated images) per epoch, as the trainer will use them."""
    train = 100 * (cfg.train_per_class or 500 - cfg.val_per_class)
    test = 100 * (cfg.test_per_class or 100)
    return train, 100 * cfg.val_per_class + test


def cpu_epoch_hours(cfg: TrainConfig, threads: int | None = None) -> float | None:
    """Estimated hours per epoch of `cfg` on this CPU, or None for a model fast enough not to ask."""
    rate = CPU_TRAIN_IMAGES_PER_S.get(cfg.model)
    if rate is None:
        return None
    rate *= (threads or torch.get_num_threads()) / MEASURED_CORES
    train, evaluated = epoch_images(cfg)
    return (train + evaluated / EVAL_SPEEDUP) / rate / 3600


def slow_device_notice(cfg: TrainConfig, preset: str, cpu_choice: str = "--preset quick",
                       then: str = "Continuing as asked; Ctrl-C stops.") -> str | None:
    """One line when `cfg` would train a GPU-sized model on the CPU; None otherwise. `cpu_choice` is
    how the caller's user asks for the quick preset instead (a flag, a notebook parameter, ...);
    `then`, what happens next (a dry run: nothing)."""
    from .processes import pick_device
    if cfg.device not in ("auto", "cpu") or pick_device(cfg.device).type != "cpu":
        return None
    hours = cpu_epoch_hours(cfg)
    if hours is None:
        return None
    took = f"{hours:.0f} hours" if hours >= 2 else f"{hours * 60:.0f} minutes"
    # Already the quick preset, with its model swapped for a GPU one: the advice is its own model.
    instead = (f"keep the quick preset's own model, small_cnn, instead of {cfg.model} (under 2 min)"
               if preset == "quick" else f"use {cpu_choice} (small_cnn, under 2 min)")
    return (f"note: {preset} ({cfg.model}) needs a CUDA GPU; on this CPU ({torch.get_num_threads()} threads) "
            f"one epoch would take about {took} ({cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''} asked). For a CPU run "
            f"{instead}." + (f" {then}" if then else ""))
