"""Test configuration shared by the unit tests and `pytest --nbval`.

CIFAR_HW2_QUICK=1 makes the notebooks run the `quick` preset on a subset on the CPU, so that
`pytest --nbval` finishes in minutes; each notebook prints that it did. Export
CIFAR_HW2_QUICK=0 to run them with their real (GPU-sized) defaults instead.

The notebooks' figures go to a temporary folder ($CIFAR_HW2_FIGURES), not to the tracked
figures/: a test run must leave the checkout as it found it (.ci/run checks `git status`).
`python -m cifar_hw2 notebooks --execute` is what writes figures/.
"""
import os
import shutil
import tempfile

os.environ.setdefault("CIFAR_HW2_QUICK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")       # tests never download weights
_FIGURES = tempfile.mkdtemp(prefix="cifar_hw2-figures-")
os.environ["CIFAR_HW2_FIGURES"] = _FIGURES          # the nbval kernels inherit it


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_FIGURES, ignore_errors=True)
