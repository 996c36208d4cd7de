"""Where a training step spends its time: tools for measuring, not for training.

- bench: `python -m cifar_hw2 bench`: steps per second, compile times, a Colab session plan
- syncs: would-be host syncs (a GPU waiting for Python), counted

May import: the science, the training machinery and itself. Never experiments, notebook or cli.
"""
