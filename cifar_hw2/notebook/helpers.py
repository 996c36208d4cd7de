"""Helpers the notebooks share: setup, figure files, the reference runs and 05's tables.

Every notebook starts with `device = setup()`; figures go to `save_figure(fig, "name")`, which
writes figures/name.png at the repository root under a stable name.
"""
from __future__ import annotations

import os
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from ..training.config import QUICK_ENV, quick_mode
from ..training.paths import PACKAGE_DIR, figures_dir, repo_path, shown_path
from ..training.processes import pick_device
from . import bad_input

# The one place the repository's address is written. Every notebook's Colab badge and setup cell
# are generated from it: `python -m cifar_hw2 notebooks --repo-url URL` rewrites this line and
# them together (a fork does the same), and tests/test_notebooks.py checks that they agree.
REPO_URL = "https://github.com/cifar-hw2/cifar-hw2"
BRANCH = "main"
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

    Prints the device (and a hint when there is no GPU) unless quiet. In IPython, the project's
    bad-input errors show as one line from now on, and a cell injected by papermill is checked against
    the parameters cell (bad_input.turn_on).
    """
    bad_input.turn_on()
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
            print("No GPU found: the figures and the quick runs work on a CPU; the paper presets need a "
                  "CUDA GPU (on Colab: Runtime → Change runtime type → GPU).")
        if quick_mode():
            print(f"{QUICK_ENV}=1: quick mode — small model, small subset, CPU-sized runs.")
    return device


def save_figure(fig, name: str) -> Path:
    """Save `fig` as figures/<name>.png (a stable name that the README and tests can point at)."""
    path = figures_dir() / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


# The reference runs that ship with the project. In a checkout they are results/cpu-reference/
# (and results/cpu-reference-reruns/, CE and FLSD-53 at seed 0 again, with their predictions);
# an installed package (Colab opens 05 without a clone) carries the same files as
# cifar_hw2/cpu_reference(_reruns), which pyproject.toml maps onto those folders rather than copying them.
REFERENCE, RERUNS = "results/cpu-reference", "results/cpu-reference-reruns"
PACKAGED = {REFERENCE: PACKAGE_DIR / "cpu_reference", RERUNS: PACKAGE_DIR / "cpu_reference_reruns"}


def tensorboard_wanted(tensorboard: bool, logdir: str | os.PathLike) -> bool:
    """Whether 04 opens TensorBoard in its page; where not, one line says why and how to see the curves.
    Not in quick mode (the tests), and not under papermill unless `-p tensorboard True` asks for it:
    headless no page shows TensorBoard, and the saved notebook would keep a frame of a server that
    stopped with the run's kernel (papermill's output opened later shows an empty box)."""
    passed = bad_input.papermill_passed()
    headless = passed is not None and "tensorboard" not in passed
    if tensorboard and not quick_mode() and not headless:
        return True
    why = ("tensorboard = False" if not tensorboard else "quick mode" if quick_mode() else
           "run by papermill, no page to show it in; -p tensorboard True, or tensorboard = True in "
           "papermill's Parameters cell, starts it")
    print(f"TensorBoard not started ({why}); from a terminal: tensorboard --logdir {shown_path(logdir)}")
    return False


def tensorboard_on_path() -> None:
    """Let `%tensorboard` start this kernel's own TensorBoard. The magic runs the `tensorboard`
    program found on PATH; a kernel from a virtual environment that was never activated
    (`.venv/bin/jupyter lab`, an editor's kernel) has it beside its Python instead, and the magic
    would print "Could not find `tensorboard`". TENSORBOARD_BINARY is the magic's own setting."""
    beside = Path(sys.executable).with_name("tensorboard")
    if "TENSORBOARD_BINARY" not in os.environ and shutil.which("tensorboard") is None and beside.is_file():
        os.environ["TENSORBOARD_BINARY"] = str(beside)


def reference_path(path: str | os.PathLike = REFERENCE) -> Path:
    """Where 05's shipped runs are: `path` from the repository root, or, for a folder of results/
    that the package carries (PACKAGED) when no checkout holds it, the installed copy."""
    found = repo_path(path)
    packaged = PACKAGED.get(Path(path).as_posix())
    if not found.exists() and packaged is not None and packaged.is_dir():
        return packaged
    return found


# Columns that say what was run rather than how it did. Where every row has the same value, the
# table says it once above instead of repeating it in a column (the notebook is 968 px wide).
SETTING_COLUMNS = ("model", "batch_size", "epochs", "best_epoch")


def narrow_table(rows: list[dict]) -> str:
    """Markdown for `rows` with the columns that are empty in every row left out (for CPU runs
    the Table 1 columns always are), and setting columns shared by all rows said once above."""
    if not rows:
        return "(no rows)\n"
    from ..experiments.report import _fmt, markdown_table
    keys = [k for k in rows[0] if any(r[k] is not None for r in rows)]
    shared = [k for k in SETTING_COLUMNS if k in keys and len(rows) > 1 and len({r[k] for r in rows}) == 1]
    head = ("Every run: " + ", ".join(f"{k} {_fmt(k, rows[0][k])}" for k in shared) + ".\n\n") if shared else ""
    return head + markdown_table([{k: r[k] for k in keys if k not in shared} for r in rows])


def run_tables(rows: list[dict]) -> list[str]:
    """report.comparison_table rows as two Markdown tables, accuracy and calibration (one table
    of 16 columns did not fit a notebook at 1400 px)."""
    from ..experiments.report import ACCURACY_COLUMNS, CALIBRATION_COLUMNS
    return [f"**{title}**\n\n" + narrow_table([{k: row[k] for k in keys} for row in rows])
            for title, keys in (("Accuracy (%)", ACCURACY_COLUMNS),
                                ("Calibration (ECE in %; NLL in nats)", CALIBRATION_COLUMNS))]


def show_run_tables(rows: list[dict]) -> None:
    from IPython.display import Markdown, display
    for table in run_tables(rows):
        display(Markdown(table))


def _show(fig, name: str) -> None:
    """Save `fig` as figures/<name>.png and display it here, in order with the tables around it."""
    import matplotlib.pyplot as plt
    from IPython.display import display
    save_figure(fig, name)
    display(fig)
    plt.close(fig)


def show_mistakes(runs, name: str, k: int = 10) -> None:
    """05's "What each loss gets wrong" for the runs that have a predictions.npz: how often each is
    confidently wrong, its most confident mistakes, the superclass confusion and the most confused
    pairs, and which classes each finds hard. `name` prefixes the figure files."""
    from IPython.display import Markdown, display
    from .. import error_plots, errors
    from ..experiments import mistakes
    from ..experiments.report import markdown_table
    analysed = mistakes.with_predictions(runs)
    if not analysed:
        print("No run here has a predictions.npz (the trainer writes one since predictions were added; "
              "`python -m cifar_hw2 evaluate --checkpoint RUN/best.pt` writes one for an older run).")
        return
    titles = mistakes.run_titles([run for run, _ in analysed])
    display(Markdown("**Confidently wrong** (% of all test images; `top1`, `ece` and `mean confidence` "
                     "in %)\n\n" + markdown_table(mistakes.confident_table(analysed))))
    _show(error_plots.confident_mistakes_figure(
        {titles[run.name]: errors.confident_mistakes(p.test_logits, p.test_labels) for run, p in analysed}),
        f"{name}_confident_mistakes")
    for run, p in analysed:
        n = min(16, len(p.mistake_at))
        _show(error_plots.mistake_gallery(p.mistake_images[:n], mistakes.gallery_titles(p)[:n],
                                          title=f"{titles[run.name]}: its {n} most confident mistakes"),
              f"{name}_gallery_{run.name}")
    matrices = {titles[run.name]: errors.superclass_confusion(errors.predicted(p.test_logits)[1], p.test_labels,
                                                              p.coarse_of) for run, p in analysed}
    for start in range(0, len(analysed), 2):     # two heatmaps a row: wider ones would be scaled down
        part = dict(list(matrices.items())[start:start + 2])
        _show(error_plots.superclass_confusion_figure(part, analysed[0][1].coarse_classes),
              f"{name}_superclass_confusion_{start // 2 + 1}")
    for run, p in analysed:
        display(Markdown(f"**{titles[run.name]} ({run.name}): the {k} most confused pairs** (test images "
                         f"of a predicted as b, and of b as a)\n\n" + markdown_table(mistakes.confused_pairs_table(p, k))))
    _show(error_plots.per_class_accuracy_figure({titles[run.name]: mistakes.class_accuracy(p) for run, p in analysed}),
          f"{name}_per_class_accuracy")
    display(Markdown(f"**The {k} hardest and easiest classes** (test accuracy in %)\n\n"
                     + markdown_table(mistakes.hard_classes_table(analysed, k))
                     + "".join(f"\n\n{note}" for note in mistakes.ties_at_the_cut(analysed, k))))
    if len(analysed) > 1:
        display(Markdown("**Do the runs find the same classes hard?**\n\n" + markdown_table(mistakes.agreement_rows(analysed, k))))
