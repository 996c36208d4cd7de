"""cifar_hw2: CIFAR-100 with EfficientNet-B4 / Swin-B and the CE, MC, focal and FLSD-53 losses.

A small package that the notebooks import, laid out by role. Each floor imports only the floors
below it (lint-imports checks the contracts in pyproject.toml), so the science reads without the
machinery that runs it.

The science, read beside the notebooks (this folder; it imports nothing of the package's machinery):

- data: the official archive, checked, as uint8 tensors, and its splits
- augment: the report's §2.1 augmentations, per image; batch_augment: the same per sample, batched on the device
- models: EfficientNet-B4, Swin-B and a small CNN, with their feature maps
- losses: CE, focal, FLSD-53 and MC (and the homework's variants)
- optim, schedule: optimizers and learning-rate schedules by name
- metrics: accuracy, NLL, ECE, reliability, temperature scaling
- errors: what a classifier gets wrong (superclass confusion, confident mistakes, hard classes)
- plots: the figures of the notebooks and the report; loss_curves: the losses against p_t (02)
- error_plots: the figures of errors
- torch_pair: is torchvision built for this torch (checked on import)

The floors above it (each subpackage's docstring lists its modules):

- training: the machinery that trains one model: settings, batches, the loop, checkpoints, processes
- experiments: many runs and what they mean: Table 1, the grid, the report, seeds, Slurm
- perf: where a training step spends its time: the benchmark, host syncs
- notebook: the notebooks' own support: setup, figure files, widgets, executing them
- cli: `python -m cifar_hw2 COMMAND`, on top of them all (a package: its commands, and flags.py)
"""
__version__ = "0.1.0"
# Ctrl-C while `python -m cifar_hw2` starts (here, and in __main__.py): one line, exit 130
INTERRUPTED_AT_START = "cifar-hw2: interrupted while starting; nothing was done"


def _check_torch_pair() -> None:
    """A torchvision from another build than torch fails with a message that names neither: say
    which, and what to install (torch_pair.py). On the command line, one line and exit status 2."""
    import sys
    from pathlib import Path
    from .torch_pair import mismatch
    try:
        why = mismatch()        # imports torch and torchvision: the seconds a start-up takes
    except KeyboardInterrupt:
        if sys.argv[:1] == ["-m"] or Path(sys.argv[0]).name == "cifar-hw2":    # not a traceback into torch
            print(INTERRUPTED_AT_START, file=sys.stderr)
            raise SystemExit(130) from None
        raise
    if why is None:
        return
    if sys.argv[:1] == ["-m"] or Path(sys.argv[0]).name == "cifar-hw2":   # python -m cifar_hw2 (argv[0] is "-m"
        print(f"cifar-hw2: error: {why}", file=sys.stderr)                 # while -m imports the package), the script
        raise SystemExit(2)
    raise ImportError(why)


_check_torch_pair()
