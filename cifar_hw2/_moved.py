"""Old import paths of the modules that moved into subpackages: `cifar_hw2.trainer` is the module
cifar_hw2.training.trainer itself, imported with a FutureWarning that names the new path."""
import importlib
import importlib.abc
import importlib.util
import sys
import warnings

PACKAGE = "cifar_hw2"

# Old path (before the package was laid out by role) → where the module lives now.
MOVED = {name: f"{floor}.{name}" for floor, names in {
    "training": "backends checkpoint compiled config folderlock loader precision processes progress "
                "runfolder speed stopping trainer",
    "experiments": "evaluate grid reference report slurm spread",
    "perf": "bench syncs",
    "notebook": "nbtools widgets"}.items() for name in names.split()}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`import cifar_hw2.trainer` gives the module cifar_hw2.training.trainer itself (one module
    object, so monkeypatching and isinstance still agree), not a copy."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, name = fullname.rpartition(".")
        if prefix == PACKAGE and name in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None                       # a placeholder; exec_module swaps in the real module

    def exec_module(self, module):
        new = f"{PACKAGE}.{MOVED[module.__name__.rpartition('.')[2]]}"
        warnings.warn(f"{module.__name__} has moved to {new}; import it from there.", FutureWarning,
                      stacklevel=2)
        # The import system returns whatever sys.modules holds under the name after exec_module.
        sys.modules[module.__name__] = importlib.import_module(new)


def moved_attribute(name: str):
    """`cifar_hw2.trainer` as an attribute, never imported: import it (through the finder)."""
    if name in MOVED:
        return importlib.import_module(f"{PACKAGE}.{name}")
    raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}")


def install() -> None:
    """One finder, also after importlib.reload(cifar_hw2) (which defines the class anew)."""
    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "_MovedModules"] + [_MovedModules()]
