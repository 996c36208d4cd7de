"""Where a training step spends its time: tools for measuring, not for training.

- bench: `python -m cifar_hw2 bench`: steps per second, compile times, peak memory, TFLOP/s
- session: notebook 04's Colab session plan (this run's own steps, timed on the machine)
- augmentation: bench's augmentation images/s on one core, ours against PIL at 224 px
- syncs: would-be host syncs (a GPU waiting for Python), counted on the CPU or the meta device
- syncdebug: host syncs of the steady-state step, asked of CUDA itself (sync debug mode)
- kernels: torch.profiler's top kernels of the steady-state step

May import: the science, the training machinery and itself. Never experiments, notebook or cli.
"""
