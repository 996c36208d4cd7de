"""A GPU-sized preset on the CPU says so in one line, with an estimate, and still runs."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cifar_hw2.training.config import make_config
from cifar_hw2.training.speed import cpu_epoch_hours, slow_device_notice

ROOT = Path(__file__).resolve().parents[1]


def test_the_estimate_scales_with_threads_images_and_model():
    b4 = make_config("paper-b4")
    hours = cpu_epoch_hours(b4, threads=2)
    assert 10 < hours < 100                    # the notice's "hours": B4 at 224 px on 2 cores is days per row
    assert cpu_epoch_hours(b4, threads=4) == pytest.approx(hours / 2)        # twice the threads, half the time
    subset = make_config("paper-b4", train_per_class=45, test_per_class=10)  # a tenth of train and test
    assert cpu_epoch_hours(subset, threads=2) < hours / 4                   # (validation stays whole)
    assert cpu_epoch_hours(make_config("paper-swin"), threads=2) > hours     # Swin-B at 384 px is slower
    assert cpu_epoch_hours(make_config("quick")) is None                     # small_cnn: fast enough not to ask


def test_notice_only_for_big_models_on_the_cpu():
    line = slow_device_notice(make_config("paper-b4", device="cpu"), "paper-b4")
    assert "needs a CUDA GPU" in line and "hours" in line and "--preset quick" in line and "\n" not in line
    assert slow_device_notice(make_config("quick"), "quick") is None
    # The quick preset with a GPU model swapped in: the advice is not the preset already chosen.
    line = slow_device_notice(make_config("quick", model="efficientnet_b4", device="cpu"), "quick")
    assert "keep the quick preset's own model, small_cnn, instead of efficientnet_b4" in line
    assert "--preset quick" not in line


def test_notebook_04_names_its_own_way_to_the_quick_preset(tmp_path, capsys, monkeypatch):
    from cifar_hw2.training.parameters import train_config_from_parameters
    monkeypatch.delenv("CIFAR_HW2_QUICK", raising=False)
    train_config_from_parameters("paper-b4", out=str(tmp_path / "run"), device="cpu")
    said = capsys.readouterr().out
    assert said.startswith("note: paper-b4 (efficientnet_b4) needs a CUDA GPU")
    assert 'use preset = "quick" or CIFAR_HW2_QUICK=1 (small_cnn' in said and "--preset" not in said


def test_cli_says_it_first_and_goes_on(tmp_path):
    # It goes on: here it next stops on the missing data (an unreachable proxy makes that fast).
    env = {**os.environ, "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    run = subprocess.run([sys.executable, "-m", "cifar_hw2", "train", "--preset", "paper-b4", "--device", "cpu",
                          "--no-pretrained", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "x")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    first, second = run.stderr.strip().splitlines()
    assert first.startswith("note: paper-b4 (efficientnet_b4) needs a CUDA GPU") and "--preset quick" in first
    assert "could not be downloaded" in second and run.returncode == 2
