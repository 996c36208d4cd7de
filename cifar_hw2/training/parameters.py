"""Notebook 04's parameters cell → a validated TrainConfig, quick mode included.

04 and the grid's Slurm rows (experiments/grid.py) both build their run here, so a grid row trains
exactly what the notebook would. Lives in the machinery, not in notebook/, because the experiment
layer must not import the notebook support.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from .checkpoint import CheckpointError, check_resumable, load_checkpoint
from .config import QUICK_ENV, QUICK_STAND_IN, ConfigError, TrainConfig, is_quick_run, make_config, quick_mode
from .folderlock import hold
from .paths import repo_path
from .runfolder import clear_run, describe_changes, describe_run, run_files_in, saved_config, settings_changed
from .speed import slow_device_notice


def train_config_from_parameters(preset: str, out: str, resume: bool = True, settle: bool = True,
                                 **params) -> TrainConfig:
    """The TrainConfig for notebook 04's parameters cell, validated, its out folder settled.

    Parameters left at None take the preset's value. In quick mode ($CIFAR_HW2_QUICK=1) the run
    becomes the `quick` preset (small_cnn on a subset, CPU) with the same loss and loss settings;
    this is printed, never silent. A loss that cannot run on small_cnn is replaced by its stand-in
    (config.QUICK_STAND_IN), also printed. With `settle`, the run already in the out folder is
    dealt with here, before any data is loaded (`settle_out`): continued, replaced (a quick run) or
    kept (any other). The grid decides that per row itself (experiments/grid.py).
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
        print(f"{QUICK_ENV}=1 → quick mode: preset 'quick'" + (f" instead of {preset!r}" if preset != "quick" else "")
              + (f"; ignoring {', '.join(dropped)} (preset = \"quick\" with {QUICK_ENV} unset keeps them)"
                 if dropped else "")
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
    return settle_out(config, shown) if settle else config


class OutFolder(NamedTuple):
    """What a run with some config finds in its out folder (`judge_out`)."""
    action: str          # "empty" | "continue" | "replace" (a quick run) | "keep" (any other run)
    why: str | None      # why the run there cannot be continued (None: it can, or there is none)
    saved: dict          # the config of the run there ({} where none can be read)


def judge_out(config: TrainConfig) -> OutFolder:
    """What `config` would do with the run already in its out folder; reads, never changes it.
    Continued: the same settings, and resume. Replaced: a quick run (config.is_quick_run) that this
    run does not continue. Kept: any other run."""
    out = Path(config.out)
    held = run_files_in(out)
    if not held:
        return OutFolder("empty", None, {})
    saved, why = _saved_run(out, config)
    results = [name for name in ("history.csv", "metrics.json", "best.pt") if name in held]
    if config.resume and (why is None or ("last.pt" not in held and not results)):
        return OutFolder("continue", None, saved)   # or, with nothing to continue or lose, start afresh
    return OutFolder("replace" if is_quick_run(saved) else "keep", why, saved)


def replace_quick_run(out: str | Path) -> None:
    """Delete the quick run in `out`, holding the folder's lock while at it (a live run's folder is
    refused: FolderInUse)."""
    with hold(out):
        clear_run(out)


def settle_out(config: TrainConfig, shown: str) -> TrainConfig:
    """Deal with the run already in `config.out`, in the notebook's words (`shown`: the folder as
    the user wrote it), before the data and the model are loaded. A quick run is replaced now, and
    that is printed: it takes a minute to make again, and the tests' quick mode leaves one in 04's
    default folder. Any other run that `config` does not continue is kept: ConfigError, with what to
    set. (The trainer's own checks, runfolder.prepare_out, say the same in the words of the front end
    that runs them: naming.py.)"""
    found = judge_out(config)
    if found.action == "replace":
        print(f"{shown} holds a quick run ({describe_run(found.saved)}): replacing it with this one.")
        replace_quick_run(config.out)
    if found.action != "keep":
        return config
    elsewhere = f"set out to a new folder (papermill: -p out runs/NAME) to keep it, or delete {shown} to start over"
    if found.why is None:       # the same settings, and resume = False
        raise ConfigError(f"{shown} already holds this run ({describe_run(found.saved)}) and resume is False: "
                          f"set resume = True to continue it, {elsewhere}")
    if quick_mode() and found.saved:
        elsewhere += f" ({QUICK_ENV}=1 makes this run a quick one, and the folder holds another kind)"
    raise ConfigError(f"{shown} holds a run that this one cannot continue: {found.why}. {elsewhere[0].upper()}"
                      f"{elsewhere[1:]}")


def _saved_run(out: Path, config: TrainConfig) -> tuple[dict, str | None]:
    """(the config of the run in `out`, why `config` cannot continue it; None where it can)."""
    last = out / "last.pt"
    if not last.exists():
        return saved_config(out), "it has no last.pt to continue from"
    try:
        state = load_checkpoint(last, mmap=True)      # mmap: only the config and the counts are read
        check_resumable(state, last, remedy=False)     # settle_out says what to set
        saved = state["config"]
    except CheckpointError as e:
        return saved_config(out), str(e)
    try:
        changed = settings_changed(saved, config)
    except (TypeError, ValueError, AttributeError) as e:       # a config of odd values: not ours to trust
        return saved, f"its settings cannot be read ({e})"
    if not changed:
        return saved, None
    return saved, describe_changes(changed)
