"""The repository's promises: README commands, CI and packaging agree."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    found = dict(re.findall(r"<!-- (main|test) command -->\n```bash\n(.+?)\n```", text))
    assert set(found) == {"main", "test"}, "README must hold the main and the test command"
    return found


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert readme_commands()["test"] in ci.splitlines()


def test_main_command_trains_the_homeworks_best_configuration():
    main = readme_commands()["main"]
    assert "cifar_hw2 train --preset paper-b4 --loss flsd53" in main


def test_torch_is_never_pinned_to_an_exact_version():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        if dep.startswith(("torch", "torchvision")):
            assert "==" not in dep, dep


def test_package_docstring_names_every_module():
    import cifar_hw2
    modules = {p.stem for p in (ROOT / "cifar_hw2").glob("*.py")} - {"__init__", "__main__"}
    # list items "- a, b: what; c: what": the names before each colon
    named = {name.strip() for group in re.findall(r"(?:^- |; )([\w, ]+):", cifar_hw2.__doc__, re.M)
             for name in group.split(",")}
    assert named == modules
