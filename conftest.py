"""Test configuration shared by the unit tests and `pytest --nbval`.

CIFAR_HW2_QUICK=1 makes the notebooks run the `quick` preset on a subset on the CPU, so that
`pytest --nbval` finishes in minutes; each notebook prints that it did. Export
CIFAR_HW2_QUICK=0 to run them with their real (GPU-sized) defaults instead.

The notebooks' figures go to a temporary folder ($CIFAR_HW2_FIGURES), not to the tracked
figures/: a test run must leave the checkout as it found it (.ci/run checks `git status`). Their
runs/ is a temporary folder too ($CIFAR_HW2_RUNS): 04 always trains, and a run of yours in
runs/04_train is neither read nor replaced.
`python -m cifar_hw2 notebooks --execute` is what writes figures/.

Tests never download. Without the real CIFAR-100 (a fresh, offline clone), the tests marked
`needs_real_data` and the notebooks whose parameters name `data` are skipped, and the summary says
so in one line with how to get the data; every other skip (a test for another machine, say) gets
a line with its reason. CIFAR_HW2_NO_SKIP=1 (.ci/run sets it) turns any skipped
notebook or real-data test into a failed session: CI must run them all.
"""
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("CIFAR_HW2_QUICK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")       # tests never download weights
_FIGURES = tempfile.mkdtemp(prefix="cifar_hw2-figures-")
os.environ["CIFAR_HW2_FIGURES"] = _FIGURES          # the nbval kernels inherit it
_RUNS = tempfile.mkdtemp(prefix="cifar_hw2-runs-")
os.environ["CIFAR_HW2_RUNS"] = _RUNS                # 04 trains its own runs/04_train there, and 05 reads it there

from cifar_hw2 import data  # noqa: E402  (after the environment above, which the package reads)
from cifar_hw2.notebook.nbtools import NOTEBOOKS, notebook_reads_data  # noqa: E402
from cifar_hw2.training.paths import this_python  # noqa: E402

NO_DATA = (f"CIFAR-100 is not in {data.data_root()} and tests never download it: run "
           f"`{this_python()} -m cifar_hw2 data` once ({data.DOWNLOAD_SIZE}), or set {data.ENV_VAR} to a folder holding "
           f"cifar-100-python/")
STRICT = os.environ.get("CIFAR_HW2_NO_SKIP") == "1"
_skipped: list[str] = []    # node ids of skipped notebook cells and real-data tests
_other_skips: dict[str, int] = {}   # every other skip's reason, and how many tests gave it


def pytest_ignore_collect(collection_path, config):
    """Only the project's notebooks are tests: a papermill output or a copy in notebooks/ is not."""
    if collection_path.suffix == ".ipynb" and collection_path.name not in NOTEBOOKS:
        return True
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_real_data: reads the real CIFAR-100 (skipped without it)")
    config.addinivalue_line("markers", "slow: a real training run, a notebook, torchrun, Slurm or a wheel build; "
                                       "`pytest -m \"not slow\"` is the quick loop (docs/install-and-tests.md)")


@pytest.hookimpl(tryfirst=True)     # before `-m` deselects: the notebooks' marks must be there by then
def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(str(item.fspath)).suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
    if data.is_present():
        return
    skip, reads = pytest.mark.skip(reason=NO_DATA), {}
    for item in items:
        path = Path(str(item.fspath))
        if path.suffix == ".ipynb":
            if path not in reads:
                reads[path] = notebook_reads_data(path)
            if reads[path]:
                item.add_marker(skip)
        elif item.get_closest_marker("needs_real_data"):
            item.add_marker(skip)


def pytest_runtest_logreport(report):
    if report.skipped and (".ipynb" in report.nodeid or NO_DATA in str(report.longrepr)):
        _skipped.append(report.nodeid)
    elif report.skipped and not hasattr(report, "wasxfail"):   # an xfail is no skip; longrepr: (file, line, "Skipped: why")
        why = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        why = (why.removeprefix("Skipped: ").strip().splitlines() or ["(no reason given)"])[0]
        _other_skips[why] = _other_skips.get(why, 0) + 1


def pytest_terminal_summary(terminalreporter):
    if _skipped:
        notebooks = sorted({n.split("::")[0] for n in _skipped if ".ipynb" in n})
        where = f" (notebooks: {', '.join(Path(n).name for n in notebooks)})" if notebooks else ""
        terminalreporter.write_line(f"{len(_skipped)} skipped{where}: {NO_DATA}"
                                    if not data.is_present() else f"{len(_skipped)} notebook cells or "
                                    f"real-data tests skipped{where}")
    for why, n in _other_skips.items():     # by design (another machine, no GPU runs yet): each says why
        terminalreporter.write_line(f"{n} skipped: {why}")
    if STRICT and _skipped:
        terminalreporter.write_line(f"CIFAR_HW2_NO_SKIP=1: {len(_skipped)} notebook cells or real-data tests were "
                                    f"skipped, and CI must run them all; this session fails", red=True)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_FIGURES, ignore_errors=True)
    shutil.rmtree(_RUNS, ignore_errors=True)
    if STRICT and _skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
