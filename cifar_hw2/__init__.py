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

The floors above it (each subpackage's docstring lists its modules):

- training: the machinery that trains one model: settings, batches, the loop, checkpoints, processes
- experiments: many runs and what they mean: Table 1, the grid, the report, seeds, Slurm
- perf: where a training step spends its time: the benchmark, host syncs
- notebook: the notebooks' own support: setup, figure files, widgets, executing them
- cli: `python -m cifar_hw2 COMMAND`, on top of them all (a module)

Modules that moved into the subpackages keep their old import path (`cifar_hw2.trainer` is
`cifar_hw2.training.trainer`), with a FutureWarning that names the new one (_moved.py).
"""
from ._moved import MOVED, install as _install, moved_attribute as __getattr__  # noqa: F401

__version__ = "0.1.0"
_install()
