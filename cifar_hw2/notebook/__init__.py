"""The notebooks' own support: what their cells call that is not science.

- helpers: setup(), save_figure(), the reference runs, 05's tables. What cells call is
  re-exported here, so a cell says `from cifar_hw2.notebook import setup, save_figure`.
- bad_input: bad input in one line, papermill's parameters checked (setup() turns both on)
- widgets: interactive explorers (ipywidgets) that leave a static image in the saved output
- nbtools: `python -m cifar_hw2 notebooks --execute/--check/--repo-url`

May import: every floor but cli.
"""
from ..training.config import quick_mode
from ..training.parameters import train_config_from_parameters
from ..training.paths import repo_path
from .helpers import (reference_path, save_figure, setup, show_mistakes, show_run_tables, tensorboard_on_path,
                      tensorboard_wanted)

# What notebooks/*.ipynb import from here (their cells; the setup cell is helpers.setup_cell).
__all__ = ["setup", "save_figure", "quick_mode", "train_config_from_parameters", "repo_path", "reference_path",
           "show_run_tables", "show_mistakes", "tensorboard_on_path", "tensorboard_wanted"]
