"""Notebook 04's parameters cell → a validated TrainConfig, quick mode included.

04 and the grid's Slurm rows (experiments/grid.py) both build their run here, so a grid row trains
exactly what the notebook would. Lives in the machinery, not in notebook/, because the experiment
layer must not import the notebook support.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .checkpoint import CheckpointError, load_checkpoint
from .config import QUICK_ENV, QUICK_STAND_IN, ConfigError, TrainConfig, is_quick_run, make_config, quick_mode
from .paths import repo_path
from .runfolder import RUN_FILES, describe_run, saved_config, settings_changed
from .speed import slow_device_notice


def train_config_from_parameters(preset: str, out: str, resume: bool = True, **params) -> TrainConfig:
    """The TrainConfig for notebook 04's parameters cell, validated, its out folder settled.

    Parameters left at None take the preset's value. In quick mode ($CIFAR_HW2_QUICK=1) the run
    becomes the `quick` preset (small_cnn on a subset, CPU) with the same loss and loss settings;
    this is printed, never silent. A loss that cannot run on small_cnn is replaced by its stand-in
    (config.QUICK_STAND_IN), also printed. The out folder is settled here, before any data is
    loaded (`settle_out`): a run there is continued, replaced (a quick run) or kept (any other).
    """
    overrides = {k: v for k, v in params.items() if v is not None}
    shown, out = out, str(repo_path(out))   # messages name the folder as the user wrote it
    # Every parameter is checked, also those quick mode then sets aside: a typo fails here, not on a GPU later.
    config = make_config(preset, **overrides, out=out, resume=resume)
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
    else:
        notice = slow_device_notice(config, preset, cpu_choice=f"preset = \"quick\" or {QUICK_ENV}=1")
        if notice:
            print(notice)
    return settle_out(config, shown)


def settle_out(config: TrainConfig, shown: str) -> TrainConfig:
    """`config`, once the run already in its out folder (if any) is dealt with, in the notebook's words
    (`shown`: the folder as the user wrote it). The same run is continued when resume is True. A
    quick run is replaced, and that is printed: it takes a minute to make again, and the quick
    mode of the tests leaves one in 04's default folder. Any other run is kept: ConfigError, with
    what to set. The trainer's own checks (runfolder.prepare_out) come later and say the same in
    the command line's words; here they are said before the data and the model are loaded."""
    out = Path(config.out)
    held = [name for name in RUN_FILES if (out / name).exists()]
    if not held:
        return config
    saved, trouble = _saved_run(out, config)
    results = [name for name in ("history.csv", "metrics.json", "best.pt") if name in held]
    if config.resume and (trouble is None or ("last.pt" not in held and not results)):
        return config       # continued (or, with nothing to continue or lose, started afresh)
    if is_quick_run(saved):
        print(f"{shown} holds a quick run ({describe_run(saved)}): replacing it with this one.")
        return dataclasses.replace(config, resume=False, overwrite=True).validate()
    elsewhere = (f"set out to a new folder (papermill: -p out runs/NAME), or delete {shown} to start over "
                 f"there")
    if not config.resume:
        raise ConfigError(f"{shown} already holds a run ({describe_run(saved) if saved else ', '.join(held)}) "
                          f"and resume is False: set resume = True to continue it, or {elsewhere}")
    if quick_mode() and saved:
        elsewhere += f" ({QUICK_ENV}=1 asks for a quick run: unset it to continue that one)"
    raise ConfigError(f"{shown} holds a run that this one cannot continue: {trouble}. To keep it, {elsewhere}")


def _saved_run(out: Path, config: TrainConfig) -> tuple[dict, str | None]:
    """(the config of the run in `out`, why `config` cannot continue it; None where it can)."""
    last = out / "last.pt"
    if not last.exists():
        return saved_config(out), "it has no last.pt to continue from"
    try:
        saved = load_checkpoint(last)["config"]
    except CheckpointError as e:
        return saved_config(out), str(e)
    changed = settings_changed(saved, config)
    if not changed:
        return saved, None
    what = [f"{k} {a!r} there, {b!r} here" for k, (a, b) in changed.items()]
    return saved, "; ".join(what[:4]) + (f"; and {len(what) - 4} more" if len(what) > 4 else "")
