"""Helpers the notebooks share: setup, figure files, and papermill parameters → TrainConfig.

Every notebook starts with `device = setup()`; figures go to `save_figure(fig, "name")`, which
writes figures/name.png at the repository root under a stable name.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from .config import QUICK_ENV, ConfigError, TrainConfig, make_config, quick_mode
from .trainer import pick_device

# The one place the repository's address is written (badges and the Colab install use it; a
# test checks that every notebook agrees).
REPO_URL = "https://github.com/cifar-hw2/cifar-hw2"
REPO_ROOT = Path(__file__).resolve().parents[1]


def setup(seed: int = 0, quiet: bool = False) -> torch.device:
    """Seed python/numpy/torch, choose cuda → mps → cpu, set a plain plotting style.

    Prints the device (and a hint when there is no GPU) unless quiet.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    import matplotlib
    import seaborn as sns
    sns.set_theme(context="notebook", style="whitegrid")
    matplotlib.rcParams.update({"figure.dpi": 80, "savefig.dpi": 120, "savefig.bbox": "tight"})
    device = pick_device("auto")
    if not quiet:
        print(f"device: {device.type}")
        if device.type == "cpu":
            print("No GPU found: fine for this notebook's previews; for real training use a CUDA GPU "
                  "(on Colab: Runtime → Change runtime type → GPU).")
        if quick_mode():
            print(f"{QUICK_ENV}=1: quick mode — small model, small subset, CPU-sized runs.")
    return device


def figures_dir() -> Path:
    """figures/ at the repository root when the package is used from a checkout, else ./figures."""
    root = REPO_ROOT / "figures"
    return root if (REPO_ROOT / "pyproject.toml").exists() else Path("figures")


def save_figure(fig, name: str) -> Path:
    """Save `fig` as figures/<name>.png (a stable name that the README and tests can point at)."""
    path = figures_dir() / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def repo_path(path: str | os.PathLike) -> Path:
    """A relative path that does not exist from here is taken from the repository root, so the
    notebooks find results/ whether they run from notebooks/ (Jupyter, nbval) or the root (papermill)."""
    p = Path(path)
    if p.is_absolute() or p.exists() or not (REPO_ROOT / "pyproject.toml").exists():
        return p
    return REPO_ROOT / p


def train_config_from_parameters(preset: str, out: str, resume: bool = True, **params) -> TrainConfig:
    """The TrainConfig for notebook 04's parameters cell, validated.

    Parameters left at None take the preset's value. In quick mode ($CIFAR_HW2_QUICK=1) the run
    becomes the `quick` preset (small_cnn on a subset, CPU) with the same loss and loss settings;
    this is printed, never silent. A quick run resumes like any other, but one made with other
    settings is replaced (quick runs are cheap), and that is printed too.
    """
    overrides = {k: v for k, v in params.items() if v is not None}
    if quick_mode():
        kept = {k: v for k, v in overrides.items()
                if k in ("loss", "gamma", "mc_mu", "mc_lambda", "mc_drop_rate", "data", "seed")}
        dropped = sorted(set(overrides) - set(kept))
        print(f"{QUICK_ENV}=1 → quick mode: preset 'quick' instead of {preset!r}"
              + (f"; ignoring {', '.join(dropped)}" if dropped else "")
              + f". Unset {QUICK_ENV} (or set it to 0) for the real run.")
        config = make_config("quick", **kept, out=out, device="cpu", resume=resume)
        if _holds_other_quick_run(config):
            print(f"{out} holds a quick run with other settings: replacing it.")
            config = make_config("quick", **kept, out=out, device="cpu", overwrite=True)
    else:
        config = make_config(preset, **overrides, out=out, resume=resume)
        from .speed import slow_device_notice
        notice = slow_device_notice(config, preset)
        if notice:
            print(notice.replace("--preset quick", f"preset = \"quick\" (or {QUICK_ENV}=1)"))
    return config


def _holds_other_quick_run(config: TrainConfig) -> bool:
    from .checkpoint import CheckpointError, load_checkpoint
    from .trainer import settings_changed
    last = Path(config.out) / "last.pt"
    if not last.exists():
        return (Path(config.out) / "config.json").exists() and not config.resume
    try:
        state = load_checkpoint(last)
    except CheckpointError:
        return True
    return state["config"].get("model") == "small_cnn" and (bool(settings_changed(state["config"], config))
                                                             or not config.resume)


__all__ = ["REPO_URL", "ConfigError", "setup", "save_figure", "repo_path", "train_config_from_parameters"]
