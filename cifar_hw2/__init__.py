"""cifar_hw2: CIFAR-100 with EfficientNet-B4 / Swin-B and the CE, MC, focal and FLSD-53 losses.

A small package that the notebooks import; each module holds one concern:
data, augment, losses, metrics, schedule, models, trainer, cli.
"""
__version__ = "0.1.0"
