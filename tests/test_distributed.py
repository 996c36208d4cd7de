"""torchrun with 2 CPU processes (gloo) on the quick preset."""
import json
import shutil
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def test_torchrun_two_processes(tiny_data, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    out = tmp_path / "ddp"
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "cifar_hw2", "train", "--preset", "quick",
           "--data", str(tiny_data), "--train-per-class", "10", "--val-per-class", "2",
           "--test-per-class", "all", "--epochs", "2", "--workers", "0", "--progress", "epoch",
           "--out", str(out)]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["complete"] and metrics["distributed"]["world_size"] == 2
    digests = metrics["distributed"]["weights_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1] and metrics["distributed"]["identical"]
    # rank 0 alone writes: one history row and one printed line per epoch
    assert len((out / "history.csv").read_text().splitlines()) == 1 + 2
    assert run.stdout.count("epoch   1/2") == 1 and run.stdout.count("epoch   2/2") == 1
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2 and config["data_sizes"]["train"] == 1000
