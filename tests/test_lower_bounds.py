"""pyproject.toml's lower bounds of torch, torchvision and timm are the GPU image's versions, and
.ci/run tests exactly those in a second environment (.venv-lower): the pins there and the bounds
here must not drift apart, and the tests named there must exist."""
import re
import shlex
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("torch", "torchvision", "timm")


def lower_bounds() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    found = dict(re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", d.replace(" ", "")).groups() for d in deps
                 if re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", d.replace(" ", "")))
    return {lib: found[lib] for lib in LIBRARIES}


def ci_pins() -> dict[str, str]:
    match = re.search(r'^LOWER_BOUNDS="([^"]+)"', (ROOT / ".ci" / "run").read_text(), re.M)
    assert match, ".ci/run no longer sets LOWER_BOUNDS"
    return dict(pin.split("==") for pin in match.group(1).split())


def ci_lower_tests() -> list[str]:
    text = (ROOT / ".ci" / "run").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith(".venv-lower/bin/python -m pytest"))
    return [arg for arg in shlex.split(line)[3:] if not arg.startswith("-")]


def same_release(pin: str, bound: str) -> bool:
    """2.11.0 is the release 2.11 names: compare with trailing zeros dropped."""
    strip = lambda v: [int(x) for x in v.split(".")] + [0] * (3 - len(v.split(".")))
    return strip(pin) == strip(bound)


def test_ci_pins_the_lower_bounds_of_pyproject():
    bounds, pins = lower_bounds(), ci_pins()
    assert set(pins) == set(LIBRARIES), pins
    assert all(same_release(pins[lib], bounds[lib]) for lib in LIBRARIES), (pins, bounds)


def test_the_lower_bounds_tests_exist_and_include_every_private_api_guard():
    tests = ci_lower_tests()
    assert "tests/test_private_apis.py" in tests
    for test in tests:
        path, _, name = test.partition("::")
        assert (ROOT / path).is_file(), test
        assert not name or f"def {name}(" in (ROOT / path).read_text(), test


def test_the_lower_bounds_environment_has_the_pinned_versions():
    if Path(sys.prefix).name != ".venv-lower":
        pytest.skip("runs in .ci/run's .venv-lower, where the pins are installed")
    import importlib
    for lib, pin in ci_pins().items():
        version = importlib.import_module(lib).__version__.split("+")[0]
        assert version == pin, f"{lib} {version} in .venv-lower, but .ci/run pins {pin}"
