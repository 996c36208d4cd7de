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

from .config import QUICK_ENV, QUICK_STAND_IN, ConfigError, TrainConfig, make_config, quick_mode
from .processes import pick_device

# The one place the repository's address is written. Every notebook's Colab badge and setup cell
# are generated from it: `python -m cifar_hw2 notebooks --repo-url URL` rewrites this line and
# them together (a fork does the same), and tests/test_notebooks.py checks that they agree.
REPO_URL = "https://github.com/cifar-hw2/cifar-hw2"
BRANCH = "main"
REPO_ROOT = Path(__file__).resolve().parents[1]
FIGURES_ENV = "CIFAR_HW2_FIGURES"   # another folder for figures (the tests use one: see conftest.py)
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def colab_badge(notebook_name: str, url: str = REPO_URL) -> str:
    """The Markdown of the 'Open in Colab' badge of notebooks/<notebook_name>."""
    owner_repo = url.removeprefix("https://github.com/")
    return ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/github/{owner_repo}/blob/{BRANCH}/notebooks/{notebook_name})")


def setup_cell(url: str = REPO_URL) -> str:
    """The source of every notebook's first code cell.

    On Colab, opened straight from GitHub with no clone, it installs the package from the
    repository (torch is already there); CIFAR-100 downloads on first use into
    the one default data folder (`data.default_data_root()`), shared with the CLI.
    """
    return f"""# NBVAL_IGNORE_OUTPUT
# (the device, and the hint, depend on the machine)
# Setup. On Colab this installs cifar_hw2 from {url} (no clone needed; CIFAR-100 downloads
# on first use). Then: seeds, plot style, and the device: cuda → mps → cpu.
import sys
if "google.colab" in sys.modules:
    %pip install -q "cifar_hw2 @ git+{url}"

from cifar_hw2.notebook import setup, save_figure
device = setup(seed=0)"""


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


def in_checkout() -> bool:
    """True when the package is used from a clone of the repository (not an installed copy)."""
    return (REPO_ROOT / "pyproject.toml").exists()


def figures_dir() -> Path:
    """$CIFAR_HW2_FIGURES if set; else figures/ at the repository root in a checkout, else ./figures."""
    if os.environ.get(FIGURES_ENV):
        return Path(os.environ[FIGURES_ENV])
    return REPO_ROOT / "figures" if in_checkout() else Path("figures")


def save_figure(fig, name: str) -> Path:
    """Save `fig` as figures/<name>.png (a stable name that the README and tests can point at)."""
    path = figures_dir() / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def repo_path(path: str | os.PathLike) -> Path:
    """In a checkout, a relative path is taken from the repository root, so that a notebook reads
    and writes the same folders (runs/, results/) whether it runs from notebooks/ (Jupyter, nbval)
    or from the root (papermill): 04 writes runs/04_train where 05 looks for it."""
    p = Path(path).expanduser()
    return REPO_ROOT / p if in_checkout() and not p.is_absolute() else p


# 05's comparison, in two tables narrow enough for a notebook at 1400 px (one had 16 columns).
def show_run_tables(rows: list[dict]) -> None:
    """Display report.comparison_table rows as an accuracy table and a calibration table."""
    from IPython.display import Markdown, display
    from .report import ACCURACY_COLUMNS, CALIBRATION_COLUMNS, markdown_table
    for title, keys in (("Accuracy (%)", ACCURACY_COLUMNS), ("Calibration (ECE in %; NLL in nats)", CALIBRATION_COLUMNS)):
        display(Markdown(f"**{title}**\n\n" + markdown_table([{k: row[k] for k in keys} for row in rows])))


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
        from .speed import slow_device_notice
        notice = slow_device_notice(config, preset)
        if notice:
            print(notice.replace("--preset quick", f"preset = \"quick\" (or {QUICK_ENV}=1)"))
    return config


def _holds_other_quick_run(config: TrainConfig) -> bool:
    from .checkpoint import CheckpointError, load_checkpoint
    from .runfolder import settings_changed
    last = Path(config.out) / "last.pt"
    if not last.exists():
        return (Path(config.out) / "config.json").exists() and not config.resume
    try:
        state = load_checkpoint(last)
    except CheckpointError:
        return True
    return state["config"].get("model") == "small_cnn" and (bool(settings_changed(state["config"], config))
                                                             or not config.resume)


__all__ = ["REPO_URL", "ConfigError", "setup", "save_figure", "repo_path", "train_config_from_parameters",
           "colab_badge", "setup_cell"]
