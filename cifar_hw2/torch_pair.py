"""Is torchvision built for the installed torch? One line that says what to install, if not.

A torch and a torchvision from different builds (a CPU torch beside a CUDA torchvision, which a CPU
install gives when its index cannot be reached, or two releases apart) fail on the first
`import torchvision` with `RuntimeError: operator torchvision::nms does not exist`, which names
neither package nor the fix. The package checks once, when it is imported (cifar_hw2/__init__.py).
"""
from __future__ import annotations

import importlib.util
import sys
from importlib import metadata

CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module.split(".")[0]) is not None
    except (ImportError, ValueError):
        return False


def mismatch() -> str | None:
    """None when `import torchvision` works; else one line: what is installed and what to install.
    The commands it gives name this Python: a bare `pip` may be another one's."""
    try:
        import torchvision  # noqa: F401
    except ImportError as e:
        missing = [name for name in ("torch", "torchvision") if not _installed(name)]
        if not missing and e.name and not _installed(e.name):
            missing = [e.name]              # something torchvision itself needs
        if missing:                         # a system python beside the project's venv, most often
            return (f"{' and '.join(missing)} {'are' if len(missing) > 1 else 'is'} not installed in this Python "
                    f"({sys.executable}). Run the one the project was installed into, e.g. `.venv/bin/python -m "
                    f"cifar_hw2` from the repository's root (or `source .venv/bin/activate` first)")
        return _different_builds(e)         # both there, yet torchvision cannot import what it needs of torch
    except (RuntimeError, OSError) as e:   # a compiled operator or library that this torch cannot load
        return _different_builds(e)
    return None


def _different_builds(e: Exception) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return (f"torchvision {_version('torchvision')} does not work with torch {_version('torch')} "
            f"({first}): they come from different builds. Install both from one place, e.g. "
            f"`{sys.executable} -m pip install --force-reinstall torch torchvision` (CUDA), or with "
            f"`--index-url {CPU_INDEX}` for the CPU build")
