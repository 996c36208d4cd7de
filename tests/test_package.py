"""The package as a student gets it on Colab: a wheel installed without the repository.

Notebook 05 opened from GitHub has no results/ folder beside it; the reference runs must come
with the package (pyproject.toml maps cifar_hw2.cpu_reference onto results/cpu-reference, and
cifar_hw2.cpu_reference_reruns, with the re-runs' predictions, onto results/cpu-reference-reruns).
"""
import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
# results/ folder -> (package folder, the files of each run it carries: what report.find_runs reads,
# and for the re-runs the predictions that 05's error analysis reads)
SHIPPED = {"cpu-reference": ("cpu_reference", ("config.json", "history.csv", "metrics.json")),
           "cpu-reference-reruns": ("cpu_reference_reruns",
                                    ("config.json", "history.csv", "metrics.json", "predictions.npz"))}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from this checkout's files, installed into a folder of its own."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    # A copy of what the build reads, so that the build's own folders (build/, *.egg-info) stay out of the checkout.
    shutil.copytree(ROOT / "cifar_hw2", src / "cifar_hw2", ignore=shutil.ignore_patterns("__pycache__"))
    for folder in SHIPPED:
        shutil.copytree(ROOT / "results" / folder, src / "results" / folder)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(src)],
                   check=True, timeout=300)
    wheel = next((tmp / "dist").glob("cifar_hw2-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp / "site"), str(wheel)], check=True, timeout=300)
    return tmp / "site"


@pytest.mark.slow
@pytest.mark.parametrize("folder", SHIPPED)
def test_the_wheel_carries_the_reference_runs_unchanged(installed, folder):
    here, (package, files) = ROOT / "results" / folder, SHIPPED[folder]
    packaged = installed / "cifar_hw2" / package
    runs = sorted(p.parent.name for p in here.glob("*/metrics.json"))
    assert runs and sorted(p.parent.name for p in packaged.glob("*/metrics.json")) == runs
    for run in runs:
        for name in files:
            assert filecmp.cmp(here / run / name, packaged / run / name, shallow=False), f"{folder}/{run}/{name}"


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
    # the re-runs' error analysis, read from the predictions.npz that the package carries
    reran = [out for source, out in outputs if "show_mistakes(reran" in source]
    shown = "".join(out.get("data", {}).get("text/markdown", "") for out in reran)
    assert "**Confidently wrong**" in shown and "| flsd53-seed0 | FLSD-53 |" in shown
    assert sum("image/png" in out.get("data", {}) for out in reran) == 5   # shares, 2 galleries, superclasses, per class
    assert "No runs under runs yet" in printed
