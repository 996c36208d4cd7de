"""Where things are: the repository, the figures folder, and paths as messages show them.

The package runs from a clone (a student's checkout, CI) or installed without one (Colab opens a
notebook straight from GitHub). Relative paths mean "from the repository root" in a checkout, so
04 writes runs/04_train where 05 looks for it, whether Jupyter runs it from notebooks/ or
papermill from the root. Messages never print an absolute path: it names the machine that ran a
notebook and would end up in its committed output (tests/test_notebooks.py checks).
"""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]      # cifar_hw2/
REPO_ROOT = PACKAGE_DIR.parent                         # the clone, when there is one
FIGURES_ENV = "CIFAR_HW2_FIGURES"   # another folder for figures (the tests use one: see conftest.py)
RUNS_ENV = "CIFAR_HW2_RUNS"         # another folder for the notebooks' runs/ (the tests use one: see conftest.py)


def in_checkout() -> bool:
    """True when the package is used from a clone of the repository (not an installed copy)."""
    return (REPO_ROOT / "pyproject.toml").exists()


def figures_dir() -> Path:
    """$CIFAR_HW2_FIGURES if set; else figures/ at the repository root in a checkout, else ./figures."""
    if os.environ.get(FIGURES_ENV):
        return Path(os.environ[FIGURES_ENV])
    return REPO_ROOT / "figures" if in_checkout() else Path("figures")


def repo_path(path: str | os.PathLike) -> Path:
    """In a checkout, a relative path is taken from the repository root, so that a notebook reads
    and writes the same folders (runs/, results/) whether it runs from notebooks/ (Jupyter, nbval)
    or from the root (papermill): 04 writes runs/04_train where 05 looks for it. With $CIFAR_HW2_RUNS
    set, `runs/...` is taken from that folder instead: the tests train 04 there, never reading or
    replacing a run of yours in runs/04_train."""
    p = Path(path).expanduser()
    if os.environ.get(RUNS_ENV) and not p.is_absolute() and p.parts[:1] == ("runs",):
        return Path(os.environ[RUNS_ENV]).joinpath(*p.parts[1:])   # runs/X → $CIFAR_HW2_RUNS/X
    return REPO_ROOT / p if in_checkout() and not p.is_absolute() else p


def shown_path(path: str | os.PathLike) -> str:
    """`path` as messages show it: relative to the repository root when inside the checkout, else
    to the working folder when below it, else as given."""
    p = Path(path).expanduser()
    if not p.is_absolute():
        return str(p)
    resolved = p.resolve()
    for base in ([REPO_ROOT] if in_checkout() else []) + [Path.cwd().resolve()]:
        if resolved.is_relative_to(base):
            return str(resolved.relative_to(base))
    return str(p)


def this_python() -> str:
    """The interpreter running now, as a command to paste: `.venv/bin/python` from the repository
    root, not a bare `python`, which outside an activated environment is another Python. Not
    resolved: the venv's python is a link to the system's, and only the link's path finds the venv.
    Absolute when the interpreter is outside the working folder: for the CLI and the tests' lines,
    never for a notebook's output."""
    exe = Path(sys.executable)
    try:
        return str(exe.relative_to(Path.cwd()))
    except ValueError:
        return str(exe)


def lacking(extra: str, *modules: str) -> str | None:
    """None when this Python has every module; else what it lacks and the install line of the
    optional extra (pyproject.toml) that brings them, e.g. "this Python has no papermill: install the
    notebooks extra: `.venv/bin/python -m pip install -e ".[notebooks]"` in the checkout"."""
    import importlib.util
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if not absent:
        return None
    names = " or ".join(absent) if len(absent) < 3 else f"{', '.join(absent[:-1])} or {absent[-1]}"
    return (f"this Python has no {names}: install the {extra} extra: "
            f"`{this_python()} -m pip install -e \".[{extra}]\"` in the checkout")


def command_line(args: list[str] | None = None) -> str:
    """This process's command as one can paste it again, from the same folder: `.venv/bin/python -m
    cifar_hw2 train ...` where Python ran the package (sys.argv[0] is then its __main__.py), else the
    program as it was called (a console script, a kernel's launcher). Under torchrun, the torchrun
    command (its own flags are not visible here: the common ones). `args`: other arguments to show."""
    args = list(sys.argv[1:] if args is None else args)
    world, local = os.environ.get("WORLD_SIZE", "1"), os.environ.get("LOCAL_WORLD_SIZE", "1")
    # torchrun sets these as numbers; anything else is someone's environment (init_processes says so)
    if "TORCHELASTIC_RUN_ID" in os.environ and world.isdigit() and local.isdigit() and int(world) > 1:
        nodes = int(world) // max(1, int(local))
        launcher = (f"torchrun --standalone --nproc_per_node={local}" if nodes == 1 else
                    f"torchrun --nnodes={nodes} --nproc_per_node={local} (your rendezvous flags, on every node)")
        return f"{launcher} -m cifar_hw2 {shlex.join(args)}"
    program = ([this_python(), "-m", "cifar_hw2"] if not sys.argv or sys.argv[0].endswith("__main__.py")
               else [sys.argv[0]])
    return shlex.join(program + args)
