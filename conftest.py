"""Test configuration shared by the unit tests and `pytest --nbval`.

CIFAR_HW2_QUICK=1 makes the notebooks run the `quick` preset on a subset on the CPU, so that
`pytest --nbval` finishes in minutes; each notebook prints that it did. Export
CIFAR_HW2_QUICK=0 to run them with their real (GPU-sized) defaults instead.
"""
import os

os.environ.setdefault("CIFAR_HW2_QUICK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")       # tests never download weights
