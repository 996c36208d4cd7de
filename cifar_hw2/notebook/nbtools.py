"""Maintain the notebooks: `python -m cifar_hw2 notebooks ...`.

    --repo-url URL   point the project at another repository (a fork, the real home): rewrites
                     REPO_URL in cifar_hw2/notebook/helpers.py and every notebook's Colab badge and setup cell
    --check          report notebooks whose badge, setup cell or kernelspec disagree with notebook/helpers.py
    --execute        run the five notebooks in order, in quick mode, from one clean state, and save
                     their outputs (what is committed). Needs CIFAR-100 ($CIFAR_HW2_DATA).

Running them in order from one state is what makes their outputs agree: 05 reads the run that 04
has just written (runs/04_train), and both read results/.
"""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import nbformat

from .. import data
from ..training.paths import FIGURES_ENV, REPO_ROOT, RUNS_ENV, this_python
from . import helpers

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
GITHUB = re.compile(r"^https://github\.com/[A-Za-z0-9][\w.-]*/[\w.-]+$")
OWN_RUN = "04_train"   # notebook 04's default out folder, under runs/


# The project's notebooks, in the order they run. Any other notebook in notebooks/ is a user's
# (papermill's output, a copy): git ignores it (.gitignore lists these five) and pytest does not
# collect it (conftest.py).
NOTEBOOKS = ("01_data_augmentation.ipynb", "02_focal_loss.ipynb", "03_models.ipynb", "04_train.ipynb",
             "05_compare.ipynb")


def notebook_paths(folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    return [Path(folder) / name for name in NOTEBOOKS if (Path(folder) / name).exists()]


def _expected(nb, path: Path, url: str) -> tuple[str, str]:
    head = BADGE.sub(lambda _: helpers.colab_badge(path.name, url), nb.cells[0].source)
    return head, helpers.setup_cell(url)


def notebook_reads_data(path: Path) -> bool:
    """A notebook needs the dataset when its `parameters` cell has a `data = ...` line
    (the tests skip such notebooks where the dataset is missing, rather than download it)."""
    nb = nbformat.read(path, as_version=4)
    params = [c.source for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    return any(line.startswith("data = ") for src in params for line in src.splitlines())


def problems(url: str = helpers.REPO_URL, folder: Path = NOTEBOOKS_DIR) -> list[str]:
    """What disagrees with helpers.py: badges, setup cells, kernelspecs. Empty when all agree."""
    found = []
    for path in notebook_paths(folder):
        nb = nbformat.read(path, as_version=4)
        head, setup = _expected(nb, path, url)
        if len(BADGE.findall(nb.cells[0].source)) != 1 or nb.cells[0].source != head:
            found.append(f"{path.name}: the Colab badge is not {helpers.colab_badge(path.name, url)}")
        if nb.cells[1].source != setup:
            found.append(f"{path.name}: the setup cell differs from notebook.setup_cell()")
        if nb.metadata.get("kernelspec") != helpers.KERNELSPEC:
            found.append(f"{path.name}: kernelspec is {nb.metadata.get('kernelspec')}, not {helpers.KERNELSPEC}")
    return found


def set_repo_url(url: str, folder: Path = NOTEBOOKS_DIR, source: Path | None = None) -> list[Path]:
    """Write `url` into helpers.py (`source`) and every notebook's badge and setup cell in
    `folder`. Returns the files it changed."""
    url = url.rstrip("/").removesuffix(".git")
    if not GITHUB.match(url):
        raise ValueError(f"--repo-url must look like https://github.com/OWNER/NAME (Colab opens notebooks "
                         f"from GitHub), got {url!r}")
    changed = []
    source = Path(source or helpers.__file__)
    text = source.read_text()
    new = re.sub(r'^REPO_URL = ".*"$', f'REPO_URL = "{url}"', text, count=1, flags=re.M)
    if new != text:
        source.write_text(new)
        changed.append(source)
    for path in notebook_paths(folder):
        nb = nbformat.read(path, as_version=4)
        head, setup = _expected(nb, path, url)
        if (nb.cells[0].source, nb.cells[1].source, nb.metadata.get("kernelspec")) != (head, setup, helpers.KERNELSPEC):
            nb.cells[0].source, nb.cells[1].source = head, setup
            nb.metadata["kernelspec"] = dict(helpers.KERNELSPEC)
            nbformat.write(nb, path)
            changed.append(path)
    return changed


def _tidy(nb) -> None:
    """What a saved notebook should hold: the current kernelspec, no per-run timing metadata,
    no widget state when no output shows a widget."""
    nb.metadata["kernelspec"] = dict(helpers.KERNELSPEC)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    widgets = any("application/vnd.jupyter.widget-view+json" in out.get("data", {})
                  for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)
    if not widgets:
        nb.metadata.pop("widgets", None)


def execute_all(timeout: int | None = None, echo=print) -> list[Path]:
    """Run 01–05 in order in quick mode (as the tests do) and save them with their outputs.

    No cell timeout by default: 04 trains for 35 s to 1.5 min on 2 quiet cores, but over an hour when
    the machine is shared (seen at nice 15), and a timeout would throw that work away."""
    runs = REPO_ROOT / "runs"
    others = sorted(str(p.parent.relative_to(runs)) for p in runs.rglob("metrics.json")
                    if p.parent != runs / OWN_RUN) if runs.exists() else []
    if others:
        raise ValueError(f"runs/ holds other runs ({', '.join(others)}); 05 would show them in its committed "
                         f"output. Move them out of {runs} first")
    if not data.is_present():
        raise ValueError(f"CIFAR-100 is not in {data.data_root()}: run `{this_python()} -m cifar_hw2 data` "
                         f"once, or set {data.ENV_VAR} to a folder that holds cifar-100-python/ (01, 03 and 04 need it)")
    shutil.rmtree(runs / OWN_RUN, ignore_errors=True)   # 04 trains from scratch, not a resume
    # The kernels inherit this environment: quick mode, no weight downloads, this checkout's package.
    os.environ.update({"CIFAR_HW2_QUICK": "1", "HF_HUB_OFFLINE": "1"})
    os.environ.pop(FIGURES_ENV, None)
    os.environ.pop(RUNS_ENV, None)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    paths = notebook_paths()
    for path in paths:
        execute(path, timeout, echo)
    return paths


def execute(path: Path, timeout: int | None = None, echo=print) -> None:
    """Run one notebook from its folder, as Jupyter and nbval do, and save it with its outputs."""
    from nbclient import NotebookClient
    start = time.perf_counter()
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    _tidy(nb)
    nbformat.write(nb, path)
    echo(f"{path.relative_to(REPO_ROOT)}: executed in {time.perf_counter() - start:.0f} s")
