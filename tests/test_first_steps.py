"""The path from a clone to results has no trap: a mismatched torchvision says what to install,
papermill's output inside notebooks/ stays out of git and out of the tests, the notebook tests
never read or replace a run of the user's, a bad setting in a notebook is one line, and a misspelt
papermill parameter stops 04 instead of training with the default."""
import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from cifar_hw2.notebook.nbtools import NOTEBOOKS
from cifar_hw2.training.config import ConfigError
from cifar_hw2.training.paths import RUNS_ENV, repo_path

ROOT = Path(__file__).resolve().parents[1]
needs_git = pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs a git checkout")


def _broken_torchvision(tmp_path: Path) -> dict:
    """An environment whose `import torchvision` fails as a CPU torch beside a CUDA torchvision does."""
    fake = tmp_path / "site" / "torchvision"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake.parent), str(ROOT)])}


def test_a_mismatched_torchvision_is_one_line_on_the_command_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "cifar_hw2", "data"], env=_broken_torchvision(tmp_path),
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert lines[0].startswith("cifar-hw2: error: torchvision ") and "does not work with torch" in lines[0]
    assert f"`{sys.executable} -m pip install --force-reinstall" in lines[0] and "--index-url" in lines[0]


def test_a_python_without_torch_is_told_to_use_the_projects_venv(tmp_path):
    """From the repository's root, a system python finds ./cifar_hw2 but not torch (the trainer's
    'Next: python -m ...' line, run outside the venv): one line, not a traceback."""
    fake = tmp_path / "site" / "torchvision"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('import no_such_torch_here\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake.parent), str(ROOT)])}
    run = subprocess.run([sys.executable, "-m", "cifar_hw2", "data"], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip() == (f"cifar-hw2: error: no_such_torch_here is not installed in this Python "
                                  f"({sys.executable}). Run the one the project was installed into, e.g. "
                                  f"`.venv/bin/python -m cifar_hw2` from the repository's root (or `source "
                                  f".venv/bin/activate` first)")


@pytest.mark.parametrize("body", ["from torch.library import no_such_name_zz", "raise ImportError('boom')"])
def test_a_torchvision_that_cannot_import_from_an_installed_torch_is_a_mismatch_not_a_missing_package(tmp_path, body):
    """torch and torchvision both installed, and `import torchvision` fails with an ImportError (a
    name its torch lacks): the two builds differ; neither 'torch.library' nor 'None' is missing."""
    fake = tmp_path / "site" / "torchvision"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(body + "\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake.parent), str(ROOT)])}
    run = subprocess.run([sys.executable, "-m", "cifar_hw2", "data"], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert run.stderr.startswith("cifar-hw2: error: torchvision ") and "does not work with torch" in run.stderr
    assert "not installed" not in run.stderr


def test_a_python_with_neither_torch_nor_torchvision_names_both(tmp_path):
    """-S: no site-packages, as in a system python: both are missing, and the line says so."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-S", "-m", "cifar_hw2", "data"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.startswith(f"cifar-hw2: error: torch and torchvision are not installed in this Python "
                                 f"({sys.executable}). Run the one"), run.stderr


def _plain(traceback: list[str]) -> list[str]:
    """An error output's traceback without IPython's colours."""
    return [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in traceback]


def test_bad_input_in_a_notebook_cell_is_one_line_and_other_errors_keep_their_traceback(tmp_path):
    """After setup(): the project's bad-input errors in one line (%tb shows the rest), a bug's traceback
    whole, and papermill's injected cell checked against the parameters cell run before it."""
    from nbclient import NotebookClient
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in (
        "from cifar_hw2.notebook import setup\ndevice = setup(quiet=True)",
        "from cifar_hw2.training.config import make_config\nmake_config('quick', loss='nope')",
        "%tb",
        "def f():\n    raise ValueError('a bug of ones own')\nf()",
        "from cifar_hw2.models import ModelError\nraise ModelError('one clear line')",
        'loss = "flsd53"   # a parameters cell\nepochs = None',
        '# Parameters\nlos = "ce"\n')])                      # then papermill's cell, with a misspelt name
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    NotebookClient(nb, timeout=300, allow_errors=True, resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [[o for o in cell.outputs if o.output_type == "error"] for cell in nb.cells]
    assert [len(e) for e in errors] == [0, 1, 1, 1, 1, 0, 1]   # the cells still fail: papermill and nbval stop there
    config_error, whole, bug, model_error, _, misspelt = (e[0] if e else None for e in errors[1:])
    assert _plain(misspelt.traceback)[1].startswith("ConfigError: unknown papermill parameter 'los' (did you mean "
                                                    "'loss'?); this notebook's parameters are epochs, loss.")
    assert whole.ename == "ConfigError" and any("----> 2 make_config('quick', loss='nope')" in line
                                                for line in _plain(whole.traceback))   # %tb: the whole traceback
    assert config_error.ename == "ConfigError" and len(config_error.traceback) == 2, config_error.traceback
    said = _plain(config_error.traceback)
    assert "%tb" in said[0] and said[1].startswith("ConfigError: unknown loss 'nope'; valid choices: ce,"), said
    assert model_error.ename == "ModelError" and _plain(model_error.traceback)[1] == "ModelError: one clear line\n"
    assert bug.ename == "ValueError" and any("raise ValueError" in line for line in _plain(bug.traceback))


def test_turning_on_twice_adds_nothing_and_leaves_another_handler_alone(monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell
    from cifar_hw2.notebook import bad_input
    shell = InteractiveShell.instance()
    monkeypatch.setattr(bad_input, "_ipython", lambda: shell)
    try:
        bad_input.turn_on()
        bad_input.turn_on()                     # the setup cell run again
        assert shell.custom_exceptions == bad_input.bad_input_errors()
        assert shell.input_transformers_post.count(bad_input.check_papermills_cell) == 1
        shell.set_custom_exc((KeyError,), None)  # e.g. a hosted notebook's own handler
        bad_input.turn_on()
        assert shell.custom_exceptions == (KeyError,)
    finally:
        shell.set_custom_exc((), None)
        shell.input_transformers_post.remove(bad_input.check_papermills_cell)
        InteractiveShell.clear_instance()


def test_papermills_cell_is_read_beside_the_parameters_cell(monkeypatch):
    from cifar_hw2.notebook import bad_input
    params = 'preset = "paper-b4"\nloss = "flsd53"\nepochs = None   # a comment\ntensorboard: bool = True\n'
    given, defaults = bad_input.papermill_parameters(["", "import sys", params, '# Parameters\nlos = "ce"\n', "x = 1"])
    assert set(given) == {"los"} and set(defaults) == {"preset", "loss", "epochs", "tensorboard"}
    assert bad_input.papermill_parameters(["", params, "los = 1"]) == ({}, {})            # no papermill: no check
    assert bad_input.papermill_parameters(["", "print(1)", '# Parameters\nlos = 1\n']) == ({}, {})  # by hand
    setup = "from cifar_hw2.notebook import setup\ndevice = setup(seed=0)"       # run by hand after the setup cell
    assert bad_input.papermill_parameters(["", setup, '# Parameters\nloss = "ce"\n']) == ({}, {})
    assert bad_input.papermill_parameters(["", "device = setup(seed=0)", '# Parameters\nloss = "ce"\n']) == ({}, {})
    given, _ = bad_input.papermill_parameters(["", params, '# Parameters\nloss = "ce"\nPAPERMILL_INPUT_PATH = "a"\n'])
    assert set(given) == {"loss"}                                 # papermill's --inject-paths: not a parameter
    for name in NOTEBOOKS:                                        # every notebook's parameters cell is recognised
        nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        assert bad_input.papermill_parameters(["", cell.source, "# Parameters\nzz = 1\n"])[0], name

    def check(*history):
        monkeypatch.setattr(bad_input, "_ipython", lambda: type("Shell", (), {"user_ns": {"In": list(history)}})())
        with pytest.raises(ConfigError) as raised:
            bad_input.check_papermill_parameters()
        return str(raised.value)

    assert check("", params, '# Parameters\nlos = "ce"\nepoch = 3\nzzz = 1\n').startswith(
        "unknown papermill parameters 'epoch' (did you mean 'epochs'?), 'los' (did you mean 'loss'?), 'zzz'; this "
        "notebook's parameters are epochs, loss, preset, tensorboard.")
    assert check("", params, '# Parameters\ntensorboard = "false"\n').startswith(
        "tensorboard must be True or False, got 'false' (a string: write -p tensorboard False; papermill's -p reads "
        "only True, False and None,")
    monkeypatch.setattr(bad_input, "_ipython", lambda: type("Shell", (), {"user_ns": {"In": [
        "", params, '# Parameters\ntensorboard = False\nloss = "ce"\nepochs = 3\n']}})())
    bad_input.check_papermill_parameters()       # right names and kinds: nothing to say


@pytest.mark.parametrize("history, quick, tensorboard, started, why", [
    (["", "x = 1"], "0", True, True, None),                                     # a page (JupyterLab, Colab)
    (["", "x = 1"], "0", False, False, "tensorboard = False"),
    (["", "x = 1"], "1", True, False, "quick mode"),                           # the tests
    (["", "loss = 'ce'\ntensorboard = True", "# Parameters\nloss = 'mc'\n"], "0", True, False, "run by papermill"),
    (["", "loss = 'ce'\ntensorboard = True", "# Parameters\nPAPERMILL_INPUT_PATH = 'a'\n"], "0", True, False,
     "run by papermill"),                                                       # --inject-paths alone: papermill too
    (["", "loss = 'ce'\ntensorboard = False", "# Parameters\ntensorboard = True\n"], "0", True, True, None),
])
def test_tensorboard_starts_only_where_a_page_can_show_it(monkeypatch, capsys, history, quick, tensorboard, started, why):
    # Headless under papermill no page shows the %tensorboard magic's server, which stops with the kernel.
    from cifar_hw2.notebook import bad_input, tensorboard_wanted
    monkeypatch.setattr(bad_input, "_ipython", lambda: type("Shell", (), {"user_ns": {"In": history}})())
    monkeypatch.setenv("CIFAR_HW2_QUICK", quick)
    assert tensorboard_wanted(tensorboard, Path("runs") / "flsd53") is started
    out = capsys.readouterr().out
    if started:
        assert out == ""
    else:
        assert out.startswith(f"TensorBoard not started ({why}") and out.count("\n") == 1
        assert out.endswith("); from a terminal: tensorboard --logdir runs/flsd53\n")


@pytest.mark.parametrize("parent, headless", [
    (["/usr/bin/python3", "/home/u/.venv/bin/papermill", "04_train.ipynb", "out.ipynb"], True),
    (["python", "-m", "papermill", "04_train.ipynb", "out.ipynb"], True),
    (["python", "-u", "-m", "papermill", "04_train.ipynb", "out.ipynb"], True),    # a job script's unbuffered Python
    (["python", "-W", "ignore", "-m", "papermill", "a.ipynb", "b.ipynb"], True),
    (["/usr/bin/python3.12", "-I", "/home/u/.venv/bin/papermill", "a.ipynb", "b.ipynb"], True),
    (["/usr/bin/python3", "/home/u/.venv/bin/jupyter-lab"], False),          # JupyterLab's server
    (["python", "analyse.py", "papermill-runs/04.ipynb"], False),             # papermill only as a word in a path
    (["/usr/bin/python3", "/home/u/.venv/bin/jupyter-lab", "/home/u/papermill"], False),   # a folder named papermill
    (["python3", "-m", "jupyter", "nbconvert", "--execute", "papermill.ipynb"], False),    # a notebook named so
    (["/usr/bin/python3.12"], False),                                       # a Python alone
    ([], False),                                                            # no /proc and no ps (Windows)
])
def test_papermill_given_no_p_is_told_by_its_command(monkeypatch, capsys, parent, headless):
    # With no -p papermill injects no cell: only the kernel's parent process says that papermill runs it.
    from cifar_hw2.notebook import bad_input, tensorboard_wanted
    monkeypatch.setattr(bad_input, "_ipython", lambda: type("Shell", (), {"user_ns": {"In": ["", "x = 1"]}})())
    monkeypatch.setattr(bad_input, "_parent_command", lambda: parent)
    monkeypatch.setenv("CIFAR_HW2_QUICK", "0")
    assert bad_input.papermill_passed() == (set() if headless else None)
    assert tensorboard_wanted(True, Path("runs") / "ce") is not headless
    assert capsys.readouterr().out.startswith("TensorBoard not started (run by papermill") is headless


def test_the_parent_command_is_read_from_this_machine():
    # The real lookup, not a stand-in: a child of this process finds this process's command line.
    child = subprocess.run([sys.executable, "-c", "from cifar_hw2.notebook import bad_input; "
                            "print(repr(bad_input._parent_command()))"], capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    found = ast.literal_eval(child.stdout)
    if not found:
        pytest.skip("neither /proc nor ps answers here: papermill given no -p is not recognised on this system")
    assert " ".join(found) == " ".join(sys.orig_argv)


def test_a_mismatched_torchvision_is_a_clear_import_error_in_python(tmp_path):
    run = subprocess.run([sys.executable, "-c", "import cifar_hw2"], env=_broken_torchvision(tmp_path),
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1].startswith("ImportError: torchvision ")


def test_the_notebook_tests_use_their_own_runs_folder():
    # conftest.py points $CIFAR_HW2_RUNS at a temporary folder: 04 trains there and 05 reads there.
    assert os.environ.get(RUNS_ENV)
    assert repo_path("runs/04_train") == Path(os.environ[RUNS_ENV]) / "04_train"
    assert not repo_path("runs/04_train").is_relative_to(ROOT)
    assert repo_path("results/cpu-reference") == ROOT / "results" / "cpu-reference"


def _collected(env) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "pytest", "--co", "-q", "notebooks"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return [line for line in out.stdout.splitlines() if "::" in line]


@pytest.mark.slow
@needs_git
@pytest.mark.needs_real_data
def test_papermill_output_in_notebooks_is_neither_tracked_nor_collected(tmp_path):
    """The design card's command, run inside notebooks/: git status stays as it was, and pytest
    collects the same tests (the five notebooks, not out.ipynb)."""
    env = {**os.environ, RUNS_ENV: str(tmp_path / "runs"), "CIFAR_HW2_QUICK": "0"}
    status = lambda: subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,  # noqa: E731
                                    text=True, check=True).stdout
    before_status, before_tests = status(), _collected(env)
    out = ROOT / "notebooks" / "out.ipynb"
    assert not out.exists(), "notebooks/out.ipynb exists already: move it away to run this test"
    try:
        run = subprocess.run([sys.executable, "-m", "papermill", "04_train.ipynb", "out.ipynb", "-p", "loss", "flsd53",
                              "-p", "preset", "quick", "-p", "epochs", "1"], cwd=ROOT / "notebooks", env=env,
                             capture_output=True, text=True, timeout=1800)
        assert run.returncode == 0, run.stderr[-3000:]
        assert out.exists() and (tmp_path / "runs" / "04_train" / "metrics.json").exists()
        assert status() == before_status
        assert _collected(env) == before_tests
        assert {t.split("::")[0] for t in before_tests} == {f"notebooks/{name}" for name in NOTEBOOKS}
    finally:
        out.unlink(missing_ok=True)
    # What running the notebooks writes to figures/ is ignored too (the tests send theirs elsewhere).
    ignored = subprocess.run(["git", "check-ignore", "figures/04_training_curves.png", "notebooks/my_copy.ipynb"],
                             cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.split() == ["figures/04_training_curves.png", "notebooks/my_copy.ipynb"]
