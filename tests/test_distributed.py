"""torchrun with 2 CPU processes (gloo) on the quick preset: a run (its ranks' final weights
identical: torchrun_digests.py), and the same run stopped by a SIGTERM that only rank 1 receives,
then resumed."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cifar_hw2.training.stopping import TEST_SIGNAL_ENV

from test_long_runs import assert_same_run

ROOT = Path(__file__).resolve().parents[1]


def torchrun(tiny_data, out, *extra, env=None, target=("-m", "cifar_hw2")):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", *target, "train", "--preset", "quick",
           "--data", str(tiny_data), "--train-per-class", "3", "--val-per-class", "1", "--test-per-class", "1",
           "--batch-size", "30", "--epochs", "2", "--workers", "0", "--progress", "epoch", "--out", str(out), *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_torchrun_two_processes(tiny_data, tmp_path):
    out, digests = tmp_path / "ddp", tmp_path / "digests.json"
    run = torchrun(tiny_data, out, target=(str(ROOT / "tests" / "torchrun_digests.py"), str(digests)))
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["complete"]
    digests = json.loads(digests.read_text())      # each rank's final weights
    assert len(digests) == 2 and digests[0] == digests[1]
    # rank 0 alone writes: one history row and one printed line per epoch
    assert len((out / "history.csv").read_text().splitlines()) == 1 + 2
    assert run.stdout.count("epoch   1/2") == 1 and run.stdout.count("epoch   2/2") == 1
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2 and config["data_sizes"]["train"] == 300

    # SIGTERM to rank 1 alone after step 3 of epoch 2 (10 steps of 15 images a rank): the flag
    # all-reduced at the refresh points stops both ranks after that step; nobody hangs.
    stopped = tmp_path / "stopped"
    run = torchrun(tiny_data, stopped, env={TEST_SIGNAL_ENV: "SIGTERM 2 3 1"})
    assert run.returncode != 0 and "Traceback (most recent call last)" not in run.stdout
    assert run.stdout.count("stopped by SIGTERM in epoch 2 of 2, after step 3 of 10") == 1, run.stdout
    assert "Resume with: torchrun --standalone --nproc_per_node=2 -m cifar_hw2 train" in run.stdout
    run = torchrun(tiny_data, stopped, "--resume")
    assert run.returncode == 0, run.stderr[-3000:]
    assert_same_run(out, stopped)


@pytest.mark.parametrize("env, said", [({"WORLD_SIZE": "2"}, "RANK is not set"),
                                       ({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc'"),
                                       ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "x"}, "LOCAL_RANK='x'")])
def test_a_torchrun_environment_that_torchrun_did_not_set_is_one_line(monkeypatch, env, said):
    """WORLD_SIZE left in a shell, say: a ConfigError naming it, not a KeyError or int()'s message."""
    from cifar_hw2.training.config import ConfigError
    from cifar_hw2.training.paths import command_line
    from cifar_hw2.training.processes import init_processes
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    assert command_line(["train"]).endswith("cifar_hw2 train")     # the resume line is made before this
    with pytest.raises(ConfigError) as e:
        init_processes("cpu")
    assert str(e.value) == (f"{said}: WORLD_SIZE, RANK and LOCAL_RANK are whole numbers that torchrun sets for "
                            f"each process; run under torchrun, or unset WORLD_SIZE")
