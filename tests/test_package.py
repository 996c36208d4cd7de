"""The package as a student gets it on Colab: a wheel installed without the repository.

Notebook 05 opened from GitHub has no results/ folder beside it; the reference runs must come
with the package (pyproject.toml maps cifar_hw2.cpu_reference onto results/cpu-reference).
"""
import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "results" / "cpu-reference"
RUN_FILES = ("config.json", "history.csv", "metrics.json")   # what report.find_runs reads


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from this checkout's files, installed into a folder of its own."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    # A copy of what the build reads, so that the build's own folders (build/, *.egg-info) stay out of the checkout.
    shutil.copytree(ROOT / "cifar_hw2", src / "cifar_hw2", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REFERENCE, src / "results" / "cpu-reference")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(src)],
                   check=True, timeout=300)
    wheel = next((tmp / "dist").glob("cifar_hw2-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp / "site"), str(wheel)], check=True, timeout=300)
    return tmp / "site"


@pytest.mark.slow
def test_the_wheel_carries_the_reference_runs_unchanged(installed):
    packaged = installed / "cifar_hw2" / "cpu_reference"
    runs = sorted(p.parent.name for p in REFERENCE.glob("*/metrics.json"))
    assert runs and sorted(p.parent.name for p in packaged.glob("*/metrics.json")) == runs
    for run in runs:
        for name in RUN_FILES:
            assert filecmp.cmp(REFERENCE / run / name, packaged / run / name, shallow=False), f"{run}/{name}"


@pytest.mark.slow
def test_05_from_the_installed_package_outside_the_checkout_shows_the_reference(installed, tmp_path, monkeypatch):
    from nbclient import NotebookClient
    nb = nbformat.read(ROOT / "notebooks" / "05_compare.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import cifar_hw2; print('PACKAGE', cifar_hw2.__file__)"))
    work = tmp_path / "colab"
    work.mkdir()
    monkeypatch.setenv("PYTHONPATH", str(installed))   # the installed copy only, not this checkout
    monkeypatch.chdir(work)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()

    outputs = [(cell.source, out) for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    printed = "".join(out.get("text", "") for _, out in outputs)
    assert f"PACKAGE {installed / 'cifar_hw2' / '__init__.py'}" in printed
    assert not any(out.output_type == "error" for _, out in outputs)
    tables = [out.data["text/markdown"] for source, out in outputs
              if "find_runs(reference_path(reference))" in source and "text/markdown" in out.get("data", {})]
    assert len(tables) == 2 and all("| ce-seed0 |" in t and "| mc-seed0 |" in t for t in tables)
    images = [source for source, out in outputs if "image/png" in out.get("data", {})]
    # Figure 7, ECE before/after, reliability before and after T: every reference figure cell drew
    assert sum("figure7(shipped)" in s for s in images) == 1
    assert sum("reliability_figure(shipped" in s for s in images) == 3
    assert "No runs under runs yet" in printed
