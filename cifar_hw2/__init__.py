"""cifar_hw2: CIFAR-100 with EfficientNet-B4 / Swin-B and the CE, MC, focal and FLSD-53 losses.

A small package that the notebooks import, laid out by role. Each floor imports only the floors
below it (tests/test_repo.py checks), so the science reads without the machinery that runs it.

The science, read beside the notebooks (this folder; it imports nothing of the package's machinery):

- data: the official archive, checked, as uint8 tensors, and its splits
- augment: the report's §2.1 augmentations, per image; batch_augment: the same per sample, batched on the device
- models: EfficientNet-B4, Swin-B and a small CNN, with their feature maps
- losses: CE, focal, FLSD-53 and MC (and the homework's variants)
- optim, schedule: optimizers and learning-rate schedules by name
- metrics: accuracy, NLL, ECE, reliability, temperature scaling
- plots: the figures of the notebooks and the report

The floors above it, one subpackage each (its docstring lists its modules):

- training: the machinery that trains one model: settings, batches, the loop, checkpoints, processes
- experiments: many runs and what they mean: Table 1, the grid, the report, seeds, Slurm
- perf: where a training step spends its time: the benchmark, host syncs
- notebook: the notebooks' own support: setup, figure files, widgets, executing them
- cli: `python -m cifar_hw2 COMMAND`, on top of them all

Modules that moved into the subpackages keep their old import path (`cifar_hw2.trainer` is
`cifar_hw2.training.trainer`), with a FutureWarning that names the new one.
"""
import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__version__ = "0.1.0"

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
        if prefix == __name__ and name in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None                       # a placeholder; exec_module swaps in the real module

    def exec_module(self, module):
        new = f"{__name__}.{MOVED[module.__name__.rpartition('.')[2]]}"
        warnings.warn(f"{module.__name__} has moved to {new}; import it from there.", FutureWarning,
                      stacklevel=2)
        # The import system returns whatever sys.modules holds under the name after exec_module.
        sys.modules[module.__name__] = importlib.import_module(new)


def __getattr__(name: str):
    """`cifar_hw2.trainer` as an attribute, never imported: import it (through the finder)."""
    if name in MOVED:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# One finder, also after importlib.reload(cifar_hw2) (which defines the class anew).
sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "_MovedModules"] + [_MovedModules()]
