"""The notebooks' own support: what their cells call that is not science.

- helpers: setup(), save_figure(), the reference runs, 05's tables. What cells call is
  re-exported here, so a cell says `from cifar_hw2.notebook import setup, save_figure`.
- widgets: interactive explorers (ipywidgets) that leave a static image in the saved output
- nbtools: `python -m cifar_hw2 notebooks --execute/--check/--repo-url`

May import: every floor but cli.
"""
import warnings

from ..training import config as _config, paths as _paths, processes as _processes
from ..training.config import ConfigError, quick_mode
from ..training.parameters import train_config_from_parameters
from ..training.paths import repo_path, shown_path
from . import helpers
from .helpers import REPO_URL, colab_badge, reference_path, save_figure, setup, setup_cell, show_run_tables

__all__ = ["REPO_URL", "ConfigError", "setup", "save_figure", "repo_path", "train_config_from_parameters",
           "colab_badge", "setup_cell", "shown_path", "reference_path", "show_run_tables", "quick_mode"]


def __getattr__(name: str):
    """Every other name the one-module cifar_hw2.notebook had (before the layout by role) still
    imports: from helpers as is, from the training machinery with a FutureWarning naming its home."""
    if not name.startswith("__") and hasattr(helpers, name):
        return getattr(helpers, name)
    for module in (_paths, _config, _processes):
        if not name.startswith("_") and hasattr(module, name):
            warnings.warn(f"cifar_hw2.notebook.{name} has moved to {module.__name__}.{name}; import it from there.",
                          FutureWarning, stacklevel=2)
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
