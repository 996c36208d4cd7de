"""A GPU-sized preset on the CPU says so in one line, with an estimate, and still runs."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cifar_hw2.training.config import make_config
from cifar_hw2.training.speed import cpu_epoch_hours, slow_device_notice

ROOT = Path(__file__).resolve().parents[1]


def test_estimate_uses_the_measured_speeds():
    # B4: 45,000 train images at 0.4 img/s + 15,000 evaluated at ~1.2 img/s, on 2 threads
    assert cpu_epoch_hours(make_config("paper-b4"), threads=2) == pytest.approx((45_000 + 5_000) / 0.4 / 3600)
    assert cpu_epoch_hours(make_config("paper-swin"), threads=4) == pytest.approx((45_000 + 5_000) / 0.2 / 3600)
    assert cpu_epoch_hours(make_config("quick")) is None


def test_notice_only_for_big_models_on_the_cpu():
    line = slow_device_notice(make_config("paper-b4", device="cpu"), "paper-b4")
    assert "needs a CUDA GPU" in line and "hours" in line and "--preset quick" in line and "\n" not in line
    assert slow_device_notice(make_config("quick"), "quick") is None


def test_cli_says_it_first_and_goes_on(tmp_path):
    # It goes on: here it next stops on the missing data (an unreachable proxy makes that fast).
    env = {**os.environ, "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    run = subprocess.run([sys.executable, "-m", "cifar_hw2", "train", "--preset", "paper-b4", "--device", "cpu",
                          "--no-pretrained", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "x")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    first, second = run.stderr.strip().splitlines()
    assert first.startswith("note: paper-b4 (efficientnet_b4) needs a CUDA GPU") and "--preset quick" in first
    assert "could not be downloaded" in second and run.returncode == 2
