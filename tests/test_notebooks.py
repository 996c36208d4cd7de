"""What every notebook promises, checked without running it (nbval runs them)."""
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from cifar_hw2.notebook import REPO_URL

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_the_five_notebooks_exist():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_title_purpose_badge_setup_and_parameters(path):
    nb = nbformat.read(path, as_version=4)
    head = nb.cells[0].source
    assert head.startswith("# ") and len(head.splitlines()) >= 3
    badges = re.findall(r"\(https://colab\.research\.google\.com/github/([^)]+)\)", head)
    assert len(badges) == 1
    owner_repo = REPO_URL.split("github.com/")[1]
    assert badges[0] == f"{owner_repo}/blob/main/notebooks/{path.name}"
    assert (ROOT / badges[0].split("/blob/main/")[1]).exists()
    setup = nb.cells[1].source
    assert 'if "google.colab" in sys.modules:' in setup and f"git+{REPO_URL}" in setup and "setup(" in setup
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    for line in params[0].source.splitlines():
        assert re.match(r"^\w+ = .+  # .+$", line), line


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_are_committed_and_free_of_errors_and_warnings(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "run the notebook before committing"
    for c in code:
        for out in c.outputs:
            assert out.output_type != "error"
            if out.output_type == "stream" and out.name == "stderr":
                assert "Warning" not in out.text, out.text


def test_train_notebook_parameters():
    nb = nbformat.read(ROOT / "notebooks" / "04_train.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", [])).source
    names = [line.split(" = ")[0] for line in params.splitlines()]
    for name in ("model", "loss", "preset", "epochs", "batch_size", "lr", "data", "out", "gamma", "mc_mu"):
        assert name in names


def test_papermill_with_an_unknown_loss_fails_and_shows_the_error(tmp_path):
    out = tmp_path / "out.ipynb"
    run = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "04_train.ipynb"), str(out),
                          "-p", "loss", "fl", "-p", "out", str(tmp_path / "run"), "--no-progress-bar"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    nb = nbformat.read(out, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors and errors[0].ename == "ConfigError"
    assert "unknown loss 'fl'; valid choices: ce, focal, flsd53, mc" in errors[0].evalue
    assert not (tmp_path / "run").exists()
