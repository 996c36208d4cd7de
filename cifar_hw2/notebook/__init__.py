"""The notebooks' own support: what their cells call that is not science.

- helpers: setup(), save_figure(), the reference runs, 05's tables. What cells call is
  re-exported here, so a cell says `from cifar_hw2.notebook import setup, save_figure`.
- widgets: interactive explorers (ipywidgets) that leave a static image in the saved output
- nbtools: `python -m cifar_hw2 notebooks --execute/--check/--repo-url`

May import: every floor but cli.
"""
from ..training.config import ConfigError
from ..training.parameters import train_config_from_parameters
from ..training.paths import repo_path, shown_path
from .helpers import REPO_URL, colab_badge, reference_path, save_figure, setup, setup_cell, show_run_tables

__all__ = ["REPO_URL", "ConfigError", "setup", "save_figure", "repo_path", "train_config_from_parameters",
           "colab_badge", "setup_cell", "shown_path", "reference_path", "show_run_tables"]
