"""Slurm through submitit, on the CPU with submitit's local executor: the same job scripts, signals
and requeues as on a cluster, without one."""
import pytest

from cifar_hw2.training.stopping import TEST_SIGNAL_ENV
from cifar_hw2.training.trainer import fit

from test_long_runs import MINI, assert_same_run

ROWS = ("b4-bs64-ce-homework", "b4-bs64-flsd53")     # quick stand-ins: CE and FLSD-53 on the small CNN


@pytest.mark.slow
def test_a_two_row_grid_on_the_local_executor_survives_a_requeue_mid_epoch(tiny_data, tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from cifar_hw2.experiments.grid import print_status, row_config, submit_rows
    from cifar_hw2.experiments.rows import grid_rows
    from cifar_hw2.experiments.slurm import SlurmOptions, read
    rows = [r for r in grid_rows() if r.key in ROWS]
    runs, overrides = tmp_path / "runs", {**MINI, "progress": "epoch"}
    # The first row's job gets submitit's time-limit signal (SIGUSR2) after step 4 of epoch 2.
    monkeypatch.setenv(TEST_SIGNAL_ENV, f"SIGUSR2 2 4 0 {rows[0].key}")
    jobs = submit_rows(rows, runs, str(tiny_data), SlurmOptions(cluster="local", time="60"), overrides=overrides)
    monkeypatch.delenv(TEST_SIGNAL_ENV)
    for row in rows:                                   # the uninterrupted runs, meanwhile
        fit(row_config(row, tmp_path / "reference", str(tiny_data), **overrides))
    # each job returns its run folder: it ran to the end (result() raises a failed job's error)
    assert sorted(job.result() for job in jobs) == sorted(str((runs / k).resolve()) for k in ROWS)
    for row in rows:
        assert_same_run(tmp_path / "reference" / row.key, runs / row.key)
    first, second = read(runs / rows[0].key), read(runs / rows[1].key)
    assert first["state"] == second["state"] == "done"
    assert first["requeues"] == 1 and "stopped by SIGUSR2 in epoch 2 of 2, after step 4 of 10" in first["message"]
    assert "requeues" not in second
    states = print_status(runs, echo=lambda line: None)
    assert [states[k] for k in ROWS] == ["done", "done"] and set(states.values()) == {"done", "new"}



def test_grid_dry_run_prints_the_sbatch_array_with_the_options_given(tmp_path, capsys):
    pytest.importorskip("submitit")
    from cifar_hw2 import cli
    code = cli.main(["grid", "--runs", str(tmp_path / "runs"), "--only", "model=swin_b", "--launcher", "slurm",
                     "--dry-run", "--slurm-gpus", "2", "--slurm-time", "1-12:00:00", "--slurm-partition", "gpu",
                     "--slurm-account", "proj", "--slurm-option", "qos=high", "--slurm-option", "mail-type=END"])
    printed = capsys.readouterr().out
    assert code == 0
    for line in ("#SBATCH --array=0-4%5", "#SBATCH --gpus-per-node=2", "#SBATCH --ntasks-per-node=2",
                 "#SBATCH --time=2160", "#SBATCH --partition=gpu", "#SBATCH --account=proj", "#SBATCH --qos=high",
                 "#SBATCH --mail-type=END", "#SBATCH --signal=USR2@300", "-m submitit.core._submit"):
        assert line in printed, line
    assert not (tmp_path / "runs" / "swin-bs64-mc").exists()       # a dry run submits and writes nothing
    named = next(line for line in printed.splitlines() if line.startswith("grid: would submit 5 row(s) to slurm"))
    assert named.endswith(": swin-bs64-fl-homework, swin-bs64-flsd53-homework, swin-bs64-focal-gamma2, "
                          "swin-bs64-flsd53, swin-bs64-mc"), named


def test_a_batch_its_processes_cannot_share_is_refused_before_it_is_queued(tmp_path, capsys):
    # The trainer would refuse it too, but only once the job had waited in the queue.
    pytest.importorskip("submitit")
    from cifar_hw2 import cli
    code = cli.main(["train", "--preset", "quick", "--out", str(tmp_path / "x"), "--launcher", "slurm", "--dry-run",
                     "--slurm-gpus", "3", "--batch-size", "64"])
    assert code == 2 and capsys.readouterr().err.strip() == (
        "cifar-hw2: error: --batch-size 64 must be divisible by the 3 processes of a job (--slurm-gpus 3 × "
        "--slurm-nodes 1)")
    code = cli.main(["grid", "--runs", str(tmp_path / "runs"), "--only", "key=b4-bs32-ce-homework", "--launcher",
                     "slurm", "--dry-run", "--slurm-gpus", "3"])
    assert code == 2 and "--batch-size 32 must be divisible by the 3 processes" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "runs" / "b4-bs32-ce-homework").exists()


def test_a_job_names_settings_as_where_it_was_submitted():
    # Its messages reach the command line's `grid --status` from another process.
    from cifar_hw2.experiments.slurm import TrainJob
    from cifar_hw2.training.naming import settings_said_as_flags
    assert TrainJob({}).as_flags is False
    with settings_said_as_flags():
        job = TrainJob({})
    assert job.as_flags is True and job.checkpoint().function.as_flags is True     # and after a requeue


def test_without_submitit_the_slurm_launcher_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    import sys
    from cifar_hw2 import cli
    monkeypatch.setitem(sys.modules, "submitit", None)              # import submitit -> ImportError
    code = cli.main(["train", "--preset", "quick", "--out", str(tmp_path / "x"), "--launcher", "slurm"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert 'needs submitit: pip install -e ".[slurm]"' in err


def test_slurm_time_takes_sbatchs_forms():
    from cifar_hw2.training.config import ConfigError
    from cifar_hw2.experiments.slurm import SlurmOptions
    for text, minutes in [("90", 90), ("1:30", 2), ("2:00:00", 120), ("1-12", 2160), ("1-12:30", 2190),
                          ("1-00:00:01", 1441)]:
        assert SlurmOptions(time=text).minutes() == minutes, text
    for bad in ("x", "1:2:3:4", "0", "-5"):
        with pytest.raises(ConfigError, match="--slurm-time must be"):
            SlurmOptions(time=bad).minutes()


@pytest.mark.parametrize("files, expected", [
    ({"slurm.json": {"state": ["x"], "job_id": "1"}}, "unknown"),
    ({"slurm.json": {"state": "weird", "job_id": "1"}}, "unknown"),
    ({"metrics.json": {"complete": "no", "epochs_done": 1, "epochs": 3}}, "new"),
])
def test_status_reads_odd_run_files_as_data(tmp_path, files, expected):
    """slurm.json and metrics.json are not trusted: a list for a state, a state this tool never
    writes, "no" for complete are said as such, never a traceback or 'done'."""
    import json
    from cifar_hw2.experiments.slurm import status
    for name, content in files.items():
        (tmp_path / name).write_text(json.dumps(content))
    (tmp_path / "last.pt").mkdir()           # a folder, not a checkpoint: nothing to resume from
    assert status(tmp_path)[0] == expected
