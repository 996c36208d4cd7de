"""What every notebook promises, checked without running it (nbval runs them)."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from cifar_hw2.notebook import nbtools
from cifar_hw2.training.config import ConfigError, make_config
from cifar_hw2.notebook.helpers import REPO_URL, narrow_table, run_tables
from cifar_hw2.experiments.report import comparison_table, find_runs
from cifar_hw2.training.paths import shown_path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = nbtools.notebook_paths()


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


def test_badges_setup_cells_and_kernelspecs_agree_with_the_notebook_helpers():
    """REPO_URL in cifar_hw2/notebook/helpers.py is the one place the address is written."""
    assert nbtools.problems() == []
    for path in [*NOTEBOOKS, ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
                 *sorted((ROOT / "cifar_hw2").rglob("*.py"))]:
        if path != ROOT / "cifar_hw2" / "notebook" / "helpers.py":
            assert "github.com/cifar-hw2" not in path.read_text() or path.suffix == ".ipynb", path


def test_repo_url_rewrites_every_badge_and_setup_cell(tmp_path):
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    source = tmp_path / "helpers.py"
    shutil.copy(ROOT / "cifar_hw2" / "notebook" / "helpers.py", source)
    fork = "https://github.com/someone/my-fork"
    changed = nbtools.set_repo_url(fork + ".git", tmp_path / "notebooks", source)
    assert len(changed) == 1 + len(NOTEBOOKS)
    assert f'REPO_URL = "{fork}"' in source.read_text()
    assert nbtools.problems(fork, tmp_path / "notebooks") == []
    for path in nbtools.notebook_paths(tmp_path / "notebooks"):
        nb = nbformat.read(path, as_version=4)
        assert "someone/my-fork/blob/main/notebooks/" + path.name in nb.cells[0].source
        assert f"git+{fork}" in nb.cells[1].source and REPO_URL not in nb.cells[1].source
        assert nb.cells[2:] == nbformat.read(ROOT / "notebooks" / path.name, as_version=4).cells[2:]   # untouched
    assert nbtools.set_repo_url(fork, tmp_path / "notebooks", source) == []     # idempotent
    with pytest.raises(ValueError, match="https://github.com/OWNER/NAME"):
        nbtools.set_repo_url("gitlab.com/x/y", tmp_path / "notebooks", source)


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


def _outputs(name: str):
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    return [(cell, out) for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_outputs_read_the_same_trusted_or_not(path):
    """No widget outputs (an untrusted notebook shows their '0%|' text fallback, a trusted one a
    blank gap once the state is gone) and no figure shown twice."""
    images = []
    for cell, out in _outputs(path.name):
        data = out.get("data", {})
        assert "application/vnd.jupyter.widget-view+json" not in data, cell.source[:80]
        assert " 0%|" not in data.get("text/plain", "") + out.get("text", ""), cell.source[:80]
        if "image/png" in data:
            images.append(data["image/png"])
    assert len(images) == len(set(images)), "a figure is shown twice"


def _markdown_rows(text: str) -> list[dict]:
    lines = [l for l in text.splitlines() if l.startswith("| ")]
    keys = [k.strip() for k in lines[0].strip("|").split("|")]
    return [dict(zip(keys, (v.strip() for v in l.strip("|").split("|")))) for l in lines[1:]]


def test_05s_row_for_04s_run_is_04s_metrics():
    """Committed together, 04 and 05 must show the same run: 05's 'your runs' row for runs/04_train
    has the best epoch and accuracy that 04 printed from its metrics.json."""
    printed = "".join(out.get("text", "") for cell, out in _outputs("04_train.ipynb") if "metrics.json" in cell.source)
    epoch, top1, top5 = re.search(r"best +epoch +(\d+): top-1 ([\d.]+) %  top-5 ([\d.]+) %", printed).groups()
    tables = [out.data["text/markdown"] for cell, out in _outputs("05_compare.ipynb")
              if "find_runs(repo_path(runs_root))" in cell.source and "text/markdown" in out.get("data", {})]
    row = next(r for r in _markdown_rows(tables[0]) if r["run"] == "04_train")
    assert (row["best_epoch"], row["best_top1"], row["top5"]) == (epoch, top1, top5)


def test_05s_reference_tables_are_results_as_they_are_now():
    """05 shows results/cpu-reference as committed; re-run the notebooks when it changes."""
    rows = comparison_table(find_runs(ROOT / "results" / "cpu-reference"))
    shown = [out.data["text/markdown"] for cell, out in _outputs("05_compare.ipynb")
             if "find_runs(reference_path(reference))" in cell.source]
    assert shown == run_tables(rows)
    # CPU runs have no Table 1 row: those columns are left out, not shown as a column of "–"
    assert all("report_top1" not in text and "| – |" not in text for text in shown)


def test_narrow_table_drops_empty_columns_and_says_shared_settings_once():
    rows = [{"run": "a", "model": "small_cnn", "epochs": 7, "report_top1": None, "top5": 0.5},
            {"run": "b", "model": "small_cnn", "epochs": 6, "report_top1": None, "top5": None}]
    text = narrow_table(rows)
    assert text.startswith("Every run: model small_cnn.\n\n")
    assert text.splitlines()[2] == "| run | epochs | top5 |" and "| b | 6 | – |" in text
    assert narrow_table(rows[:1]).splitlines()[0] == "| run | model | epochs | top5 |"   # one row: nothing shared


# An absolute path in a committed output names the machine (and folder) that executed it.
ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])/(?:[A-Za-z_][\w.-]*/)+[\w.-]*|\b[A-Za-z]:\\[\w.-]")


def _output_texts(out) -> list[str]:
    texts = [out.get("text", "")] + [v for k, v in out.get("data", {}).items() if k.startswith("text/")]
    texts += [str(v) for v in out.get("evalue", [])] + list(out.get("traceback", []))
    return ["".join(t) if isinstance(t, list) else str(t) for t in texts]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_outputs_show_no_absolute_paths(path):
    found = [m.group() for _, out in _outputs(path.name) for text in _output_texts(out)
             for m in ABSOLUTE_PATH.finditer(text)]
    assert found == [], f"absolute paths in {path.name}'s outputs (show them with cifar_hw2.training.paths.shown_path): {found}"


def test_the_absolute_path_check_sees_paths_and_not_urls_or_units():
    hits = lambda text: [m.group() for m in ABSOLUTE_PATH.finditer(text)]
    assert hits("/work/main/runs/04_train: cpu") == ["/work/main/runs/04_train"]
    assert hits("see /home/me/data.") == ["/home/me/data."] and hits(r"C:\Users\me") == ["C:\\U"]
    assert hits("https://github.com/x/y 579 img/s lr / lr0 1/6 runs/04_train ~/.cache/cifar_hw2") == []


def test_shown_path_is_relative_to_the_repository():
    assert shown_path(ROOT / "runs" / "04_train") == str(Path("runs") / "04_train")
    assert shown_path("runs/x") == "runs/x"
    outside = Path("/nonexistent-root-for-test/run")
    assert shown_path(outside) == str(outside)   # outside the checkout and the working folder: as given


def test_train_notebook_parameters():
    nb = nbformat.read(ROOT / "notebooks" / "04_train.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", [])).source
    names = [line.split(" = ")[0] for line in params.splitlines()]
    for name in ("model", "loss", "preset", "epochs", "batch_size", "lr", "pretrained", "data", "out", "gamma", "mc_mu"):
        assert name in names


@pytest.mark.slow
def test_papermill_given_no_p_is_recognised_by_the_kernel(tmp_path):
    # No -p: papermill injects no cell, and 04 would start a TensorBoard server that no page shows.
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell("from cifar_hw2.notebook import bad_input\n"
                                          "print('passed:', bad_input.papermill_passed())")]
    nbformat.write(nb, tmp_path / "in.ipynb")
    script = Path(sys.executable).with_name("papermill")       # what `papermill` runs in this environment
    for command in ([sys.executable, "-m", "papermill"], *([[str(script)]] if script.is_file() else [])):
        run = subprocess.run([*command, str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), "--no-progress-bar"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        out = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[0].outputs
        assert out[0].text == "passed: set()\n", command


@pytest.mark.parametrize("name, value, message", [
    ("loss", "fl", "unknown loss 'fl' (did you mean 'focal'?); valid choices: ce, focal, flsd53, mc"),
    ("pretrained", "maybe", "pretrained weights file 'maybe' does not exist; pass True"),
    # papermill only warns about a name 04 does not have; 04 stops on it (notebook/bad_input.py)
    ("los", "ce", "unknown papermill parameter 'los' (did you mean 'loss'?); this notebook's parameters are "
                  "batch_size, data, epochs, gamma, loss, lr,"),
])
@pytest.mark.slow
def test_papermill_with_a_bad_parameter_fails_and_shows_the_error(tmp_path, name, value, message):
    out = tmp_path / "out.ipynb"
    run = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "04_train.ipynb"), str(out),
                          "-p", name, value, "-p", "out", str(tmp_path / "run"), "--no-progress-bar"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and message in run.stderr
    assert ("Passed unknown parameter" in run.stderr) == (name == "los")
    nb = nbformat.read(out, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert len(errors) == 1 and errors[0].ename == "ConfigError"
    assert message in errors[0].evalue
    assert len(errors[0].traceback) == 2    # IPython's "use %tb to see the full traceback" and the line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name, value, message", [
    ("resume", "false", "resume must be True or False, got 'false' (a string: write -p resume False; papermill's -p "
                        "reads only True,"),
    ("epochs", "10", "epochs must be a positive integer, got '10' (a string: papermill's -p"),
    ("lr", "1e-3 ", "lr must be > 0, got '1e-3 ' (a string: papermill's -p"),
    ("pretrained", "False ", "pretrained weights file 'False ' does not exist; pass True (--pretrained) to"),
    ("pretrained", "false", "the path of a timm weight file (a string: write -p pretrained False; papermill's -p"),
    ("resume", 1, "resume must be True or False, got 1"),
])
def test_papermills_strings_where_python_values_belong_are_refused_and_explained(tmp_path, name, value, message):
    """`-p resume false` (lower case) reaches the notebook as the string 'false', which is true:
    every bool field takes only True or False, and a string where a number or a bool belongs says why
    (papermill's -r, raw, and a quoted YAML value pass "10" as a string too)."""
    from cifar_hw2.notebook import train_config_from_parameters
    with pytest.raises(ConfigError) as raised:
        train_config_from_parameters("paper-b4", str(tmp_path / "run"), **{name: value}, device="cpu")
    assert message in str(raised.value)
    assert ("(a string" in str(raised.value)) == (value in ("false", "False ", "10", "1e-3 "))


@pytest.mark.parametrize("where", ["preset", "loss", "model"])
def test_a_list_or_dict_where_a_name_belongs_is_refused_in_one_line(where, tmp_path):
    """papermill's -y/-f pass YAML, so a list can reach a parameter that names a preset, loss or model."""
    from cifar_hw2.notebook import train_config_from_parameters
    preset, params = ("paper-b4", {where: ["ce"]}) if where != "preset" else (["ce"], {})
    with pytest.raises(ConfigError, match=rf"^unknown {where} \['ce'\]; valid"):
        train_config_from_parameters(preset, str(tmp_path / "run"), **params, device="cpu")


def test_quick_mode_says_what_it_set_aside_and_how_to_keep_it(monkeypatch, tmp_path, capsys):
    from cifar_hw2.notebook import train_config_from_parameters
    monkeypatch.setenv("CIFAR_HW2_QUICK", "1")
    config = train_config_from_parameters("paper-b4", str(tmp_path / "a"), epochs=1, batch_size=8, loss="ce")
    assert (config.model, config.epochs, config.loss) == ("small_cnn", make_config("quick").epochs, "ce")
    assert capsys.readouterr().out.startswith(
        "CIFAR_HW2_QUICK=1 → quick mode: preset 'quick' instead of 'paper-b4'; ignoring batch_size, epochs "
        "(preset = \"quick\" with CIFAR_HW2_QUICK unset keeps them). Unset CIFAR_HW2_QUICK")
    train_config_from_parameters("quick", str(tmp_path / "b"), epochs=1)
    assert capsys.readouterr().out.startswith("CIFAR_HW2_QUICK=1 → quick mode: preset 'quick'; ignoring epochs")


@pytest.mark.parametrize("quick", ["1", "0"])
def test_pretrained_parameter_is_accepted_and_validated(quick, monkeypatch, tmp_path, capsys):
    from cifar_hw2.notebook import train_config_from_parameters
    monkeypatch.setenv("CIFAR_HW2_QUICK", quick)
    config = train_config_from_parameters("paper-b4", str(tmp_path / "run"), pretrained=False, device="cpu")
    assert config.pretrained is False
    if quick == "0":
        assert config.model == "efficientnet_b4" and "needs a CUDA GPU" in capsys.readouterr().out


def test_tensorboard_magic_finds_the_kernels_own_tensorboard(monkeypatch, tmp_path):
    # 04's %tensorboard runs the program on PATH; from a venv that was never activated it is not
    # there, and the magic prints "Could not find `tensorboard`" (seen in JupyterLab).
    from cifar_hw2.notebook import tensorboard_on_path
    beside = Path(sys.executable).with_name("tensorboard")
    if not beside.is_file():
        pytest.skip(f"no tensorboard program beside {sys.executable}")
    monkeypatch.delenv("TENSORBOARD_BINARY", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))          # an empty folder: nothing on PATH
    tensorboard_on_path()
    assert os.environ["TENSORBOARD_BINARY"] == str(beside)
    monkeypatch.delenv("TENSORBOARD_BINARY")
    monkeypatch.setenv("PATH", str(beside.parent))     # on PATH: the magic finds it, nothing is set
    tensorboard_on_path()
    assert "TENSORBOARD_BINARY" not in os.environ
