"""Slurm through submitit, on the CPU with submitit's local executor: the same job scripts, signals
and requeues as on a cluster, without one."""
import pytest

from cifar_hw2.stopping import TEST_SIGNAL_ENV
from cifar_hw2.trainer import fit

from test_long_runs import MINI, assert_same_run

ROWS = ("b4-bs64-ce-homework", "b4-bs64-flsd53")     # quick stand-ins: CE and FLSD-53 on the small CNN


def test_a_two_row_grid_on_the_local_executor_survives_a_requeue_mid_epoch(tiny_data, tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from cifar_hw2.grid import grid_rows, print_status, row_config, submit_rows
    from cifar_hw2.slurm import SlurmOptions, read
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

