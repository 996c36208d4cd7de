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


def shown_path(path: str | os.PathLike) -> str:
    """`path` as messages show it: relative to the repository root when inside the checkout, else
    to the working folder when below it, else as given. An absolute path names the machine that
    ran a notebook, and would end up in its committed output (tests/test_notebooks.py checks)."""
    p = Path(path).expanduser()
    if not p.is_absolute():
        return str(p)
    resolved = p.resolve()
    for base in ([REPO_ROOT] if in_checkout() else []) + [Path.cwd().resolve()]:
        if resolved.is_relative_to(base):
            return str(resolved.relative_to(base))
    return str(p)


# The reference runs that ship with the project. In a checkout they are results/cpu-reference/;
# an installed package (Colab opens 05 without a clone) carries the same files as
# cifar_hw2/cpu_reference, which pyproject.toml maps onto that folder rather than copying it.
REFERENCE = "results/cpu-reference"
PACKAGED_REFERENCE = Path(__file__).resolve().parent / "cpu_reference"


def reference_path(path: str | os.PathLike = REFERENCE) -> Path:
    """Where 05's `reference` runs are: `path` from the repository root, or for the default, when
    no checkout holds it, the copy installed with the package."""
    found = repo_path(path)
    if not found.exists() and Path(path) == Path(REFERENCE) and PACKAGED_REFERENCE.is_dir():
        return PACKAGED_REFERENCE
    return found


# Columns that say what was run rather than how it did. Where every row has the same value, the
# table says it once above instead of repeating it in a column (the notebook is 968 px wide).
SETTING_COLUMNS = ("model", "batch_size", "epochs", "best_epoch")


def narrow_table(rows: list[dict]) -> str:
    """Markdown for `rows` with the columns that are empty in every row left out (for CPU runs
    the Table 1 columns always are), and setting columns shared by all rows said once above."""
    if not rows:
        return "(no rows)\n"
    from .report import _fmt, markdown_table
    keys = [k for k in rows[0] if any(r[k] is not None for r in rows)]
    shared = [k for k in SETTING_COLUMNS if k in keys and len(rows) > 1 and len({r[k] for r in rows}) == 1]
    head = ("Every run: " + ", ".join(f"{k} {_fmt(k, rows[0][k])}" for k in shared) + ".\n\n") if shared else ""
    return head + markdown_table([{k: r[k] for k in keys if k not in shared} for r in rows])


def run_tables(rows: list[dict]) -> list[str]:
    """report.comparison_table rows as two Markdown tables, accuracy and calibration (one table
    of 16 columns did not fit a notebook at 1400 px)."""
    from .report import ACCURACY_COLUMNS, CALIBRATION_COLUMNS
    return [f"**{title}**\n\n" + narrow_table([{k: row[k] for k in keys} for row in rows])
            for title, keys in (("Accuracy (%)", ACCURACY_COLUMNS),
                                ("Calibration (ECE in %; NLL in nats)", CALIBRATION_COLUMNS))]


def show_run_tables(rows: list[dict]) -> None:
    from IPython.display import Markdown, display
    for table in run_tables(rows):
        display(Markdown(table))


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
           "colab_badge", "setup_cell", "shown_path", "reference_path",
           "show_run_tables"]
