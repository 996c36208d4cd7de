"""Bad input in a notebook says what was wrong in one line, as on the command line. setup() turns
both of these on in its IPython kernel (`turn_on`):

- The project's bad-input errors (a setting, a path, a file) show as their message, not as a 70-line
  traceback whose clear line comes last (`show_in_one_line`).
- The cell that papermill injects is checked against the parameters cell before it
  (`check_papermill_parameters`): `-p los ce`, a misspelt name, only makes papermill warn "Passed
  unknown parameter" and run on with the default, in 04 a 3-hour FLSD-53 run instead of CE; and
  `-p tensorboard false` passes the string 'false', which is true. The injected cell stops instead.
"""
from __future__ import annotations

import ast
import os
import subprocess
from pathlib import Path

from ..training.config import ConfigError, check_bool, nearest

# The first line of the cell that papermill injects after the parameters cell (its Python translator's
# comment; tests/test_notebooks.py runs papermill to guard it).
PAPERMILL_CELL_MARK = "# Parameters\n"


def bad_input_errors() -> tuple[type[BaseException], ...]:
    """The errors that mean "fix a setting, a path or a file", those the CLI prints in one line (exit 2).
    Their message says what was wrong and what is accepted; the stack under it gives nothing to act on."""
    from ..data import DataError
    from ..models import ModelError
    from ..training.checkpoint import CheckpointError
    from ..training.predictions import PredictionsError
    return ConfigError, DataError, ModelError, CheckpointError, PredictionsError


def _ipython():
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def turn_on() -> None:
    """In an IPython kernel: bad-input errors in one line, and papermill's cell checked. Elsewhere: nothing."""
    shell = _ipython()
    if shell is None:
        return
    if shell.custom_exceptions in ((), bad_input_errors()):   # another handler's errors are left to it
        shell.set_custom_exc(bad_input_errors(), show_in_one_line)
    if check_papermills_cell not in shell.input_transformers_post:
        shell.input_transformers_post.append(check_papermills_cell)


def show_in_one_line(shell, etype, value, tb, tb_offset=None) -> None:
    """IPython's handler for `bad_input_errors()`: its "use %tb to see the full traceback" line and the
    message. The cell still fails (papermill and nbval stop on it); every other error keeps its traceback."""
    shell.showtraceback((etype, value, tb), exception_only=True)


def check_papermills_cell(lines: list[str]) -> list[str]:
    """IPython input transformer: the cell that papermill injects gets one more line, which checks it
    (the cell is in `In` by then, beside the parameters cell run before it). Other cells pass unchanged."""
    if lines and lines[0] == PAPERMILL_CELL_MARK:
        return lines + ["\nfrom cifar_hw2.notebook.bad_input import check_papermill_parameters\n",
                        "check_papermill_parameters()\n"]
    return lines


def _is_literal(node: ast.expr | None) -> bool:
    try:
        ast.literal_eval(node)
        return True
    except (ValueError, TypeError, SyntaxError, RecursionError):
        return False


def _assigned(source: str, only: bool = False) -> dict[str, ast.expr]:
    """What a cell's top-level statements assign: name → the expression (`x = ...`, `x: int = ...`).
    With `only`: {} unless every statement assigns a literal (a number, a string, True, None, a list
    of them), as in a parameters cell, and not as in the setup cell (`device = setup(seed=0)`)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    values = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        names = [t for t in targets if isinstance(t, ast.Name)]
        if only and (not names or len(names) != len(targets) or not _is_literal(node.value)):
            return {}
        values.update((t.id, node.value) for t in names)
    return values


def papermill_parameters(history: list[str]) -> tuple[dict[str, ast.expr], dict[str, ast.expr]]:
    """(what papermill passed, the parameters cell's defaults), each name → its expression, from the
    cells run so far, oldest first (IPython's `In`). Papermill runs its cell right after the parameters
    cell: the last cell that starts with its mark is read with the cell run before it. Both are empty
    when there is no such cell, or when the cell before it is not a parameters cell, all assignments
    (the injected cell was run again by hand, after the setup cell, say). Papermill's own
    PAPERMILL_INPUT_PATH and PAPERMILL_OUTPUT_PATH (--inject-paths) are not parameters."""
    for i in range(len(history) - 1, 0, -1):
        if history[i].startswith(PAPERMILL_CELL_MARK):
            defaults = _assigned(history[i - 1], only=True)
            given = {k: v for k, v in _assigned(history[i]).items() if not k.startswith("PAPERMILL_")}
            return (given, defaults) if defaults else ({}, {})
    return {}, {}


def _this_kernels_papermill_parameters() -> tuple[dict[str, ast.expr], dict[str, ast.expr]]:
    """papermill_parameters of the cells this IPython kernel has run; ({}, {}) outside IPython."""
    shell = _ipython()
    return papermill_parameters(list(shell.user_ns.get("In", []))) if shell is not None else ({}, {})


def papermill_passed() -> set[str] | None:
    """The names that papermill passed with -p to this kernel ({} for none), or None where papermill
    does not run it. Papermill given no -p injects no cell; its command line then tells it apart."""
    given, defaults = _this_kernels_papermill_parameters()
    if defaults:
        return set(given)
    return set() if started_by_papermills_command() else None


def started_by_papermills_command() -> bool:
    """Whether this kernel's parent process is the `papermill` command (`papermill ...` or `python -m
    papermill ...`): the kernel manager that papermill's engine uses starts the kernel as its child.
    Read from /proc, or from `ps` (macOS); where neither answers (Windows), False. papermill's Python
    API called from a script is not recognised: that script is the parent. Only the program is read,
    not its arguments: JupyterLab started in a folder named papermill is not papermill."""
    command = _parent_command()
    if command and Path(command[0]).stem.startswith("python"):    # `python [-u ...] papermill`, `python -m papermill`
        command = command[1:]
        while command and command[0].startswith("-") and command[0] != "-m":   # the interpreter's own options
            command = command[2:] if command[0] in ("-W", "-X") else command[1:]   # -W ignore, -X dev: a value
        command = command[1:] if command[:1] == ["-m"] else command
    return bool(command) and Path(command[0]).stem == "papermill"


def _parent_command() -> list[str]:
    ppid = os.getppid()
    try:
        return Path(f"/proc/{ppid}/cmdline").read_bytes().rstrip(b"\0").decode(errors="replace").split("\0")
    except OSError:
        pass
    try:
        ps = subprocess.run(["ps", "-o", "args=", "-p", str(ppid)], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return []
    return ps.stdout.split()


def _is(node: ast.expr, kind: type) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is kind


def check_papermill_parameters() -> None:
    """Raise ConfigError, in one line, if papermill passed a parameter that the notebook does not have,
    or a string for one whose default is True or False (`-p tensorboard false`: 'false' is true)."""
    given, defaults = _this_kernels_papermill_parameters()
    unknown, known = sorted(set(given) - set(defaults)), sorted(defaults)
    if unknown:
        raise ConfigError(
            f"unknown papermill parameter{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(name) + nearest(name, known) for name in unknown)}; this "
            f"notebook's parameters are {', '.join(known)}. Papermill only warns and would run on with the "
            "default value, so the notebook stops here.")
    for name in known:
        if name in given and _is(defaults[name], bool) and _is(given[name], str):
            check_bool(name, given[name].value)
