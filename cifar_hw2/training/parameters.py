"""Notebook 04's parameters cell → a validated TrainConfig, quick mode included.

04 and the grid's Slurm rows (experiments/grid.py) both build their run here, so a grid row trains
exactly what the notebook would. Lives in the machinery, not in notebook/, because the experiment
layer must not import the notebook support.
"""
from __future__ import annotations

from pathlib import Path

from .checkpoint import CheckpointError, load_checkpoint
from .config import QUICK_ENV, QUICK_STAND_IN, TrainConfig, make_config, quick_mode
from .paths import repo_path
from .runfolder import settings_changed
from .speed import slow_device_notice


def train_config_from_parameters(preset: str, out: str, resume: bool = True, **params) -> TrainConfig:
    """The TrainConfig for notebook 04's parameters cell, validated.

    Parameters left at None take the preset's value. In quick mode ($CIFAR_HW2_QUICK=1) the run
    becomes the `quick` preset (small_cnn on a subset, CPU) with the same loss and loss settings;
    this is printed, never silent. A loss that cannot run on small_cnn is replaced by its stand-in
    (config.QUICK_STAND_IN), also printed. A quick run resumes like any other, but one made with other
    settings is replaced (quick runs are cheap), and that is printed too.
    """
    overrides = {k: v for k, v in params.items() if v is not None}
    shown, out = out, str(repo_path(out))   # messages name the folder as the user wrote it
    # Every parameter is checked, also those quick mode then sets aside: a typo fails here, not on a GPU later.
    full = make_config(preset, **overrides, out=out, resume=resume)
    if quick_mode():
        kept = {k: v for k, v in overrides.items()
                if k in ("loss", "gamma", "mc_mu", "mc_lambda", "mc_drop_rate", "data", "seed", "time_limit",
                         "checkpoint_minutes")}
        dropped = sorted(set(overrides) - set(kept))
        print(f"{QUICK_ENV}=1 → quick mode: preset 'quick' instead of {preset!r}"
              + (f"; ignoring {', '.join(dropped)}" if dropped else "")
              + f". Unset {QUICK_ENV} (or set it to 0) for the real run.")
        if kept.get("loss") in QUICK_STAND_IN:
            stand_in, what = QUICK_STAND_IN[kept["loss"]]
            print(f"quick stand-in: loss {stand_in!r} instead of {kept['loss']!r}: {what}.")
            kept["loss"] = stand_in
        config = make_config("quick", **kept, out=out, device="cpu", resume=resume)
        if _holds_other_quick_run(config):
            print(f"{shown} holds a quick run with other settings: replacing it.")
            config = make_config("quick", **kept, out=out, device="cpu", overwrite=True)
    else:
        config = full
        notice = slow_device_notice(config, preset, cpu_choice=f"preset = \"quick\" or {QUICK_ENV}=1")
        if notice:
            print(notice)
    return config


def _holds_other_quick_run(config: TrainConfig) -> bool:
    last = Path(config.out) / "last.pt"
    if not last.exists():
        return (Path(config.out) / "config.json").exists() and not config.resume
    try:
        state = load_checkpoint(last)
    except CheckpointError:
        return True
    return state["config"].get("model") == "small_cnn" and (bool(settings_changed(state["config"], config))
                                                             or not config.resume)
