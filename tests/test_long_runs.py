"""Long runs: checkpoints inside an epoch, signals, the time limit, the folder lock, bad out folders
and full disks. Runs are tiny (300 training images, 10 steps an epoch, 2 epochs); a stopped and
resumed run must give the uninterrupted run's history.csv (less the wall-clock columns) and
metrics.json, bit for bit."""
import csv
import errno
import json
import math
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cifar_hw2 import cli
from cifar_hw2.training.checkpoint import load_checkpoint
from cifar_hw2.training.config import FLOAT_RANGES, ConfigError, make_config
from cifar_hw2.training.folderlock import FolderInUse, hold
from cifar_hw2.training.stopping import TEST_SIGNAL_ENV, RunStopped
from cifar_hw2.training.trainer import Trainer, fit

from test_trainer import read_history

ROOT = Path(__file__).resolve().parents[1]
STEPS = 10                 # steps an epoch: 300 images, batch 30
MINI = dict(train_per_class=3, val_per_class=1, test_per_class=1, epochs=2, batch_size=30, workers=0)


def mini(tiny_data, out, **kw):
    return make_config("quick", **{**MINI, "data": str(tiny_data), "out": str(out), "progress": "off", **kw})


def mini_args(tiny_data, out, *extra):
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in MINI.items()]
    return ["train", "--preset", "quick", f"--data={tiny_data}", f"--out={out}", "--progress=off", *flags, *extra]


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    """The uninterrupted run of each data path, made once."""
    made = {}

    def get(augment_on="device"):
        if augment_on not in made:
            out = tmp_path_factory.mktemp("reference") / augment_on
            hook = os.environ.pop(TEST_SIGNAL_ENV, None)      # never stopped
            try:
                fit(mini(tiny_data, out, augment_on=augment_on))
            finally:
                if hook is not None:
                    os.environ[TEST_SIGNAL_ENV] = hook
            made[augment_on] = out
        return made[augment_on]
    return get


def assert_same_run(a, b):
    assert read_history(a) == read_history(b)
    assert (Path(a) / "metrics.json").read_text() == (Path(b) / "metrics.json").read_text()
    assert not [p.name for p in Path(b).iterdir() if p.name.endswith(".tmp") or p.name == ".lock"]


@pytest.mark.parametrize("name, augment_on, epoch, where", [
    ("SIGTERM", "device", 2, "step"),     # mid-epoch
    ("SIGUSR1", "loader", 1, "step"),     # what Slurm's --signal sends; the per-image loader path
    ("SIGINT", "device", 1, "eval"),      # Ctrl-C during the evaluation: stops at the epoch's end
])
def test_a_signal_stops_cleanly_and_the_resumed_run_is_identical(name, augment_on, epoch, where, tiny_data,
                                                                 tmp_path, reference, monkeypatch, capsys):
    step = random.Random(name).randint(1, STEPS - 1)
    monkeypatch.setenv(TEST_SIGNAL_ENV, f"{name} {epoch} {step if where == 'step' else 'eval'}")
    out = tmp_path / "run"
    with pytest.raises(RunStopped) as stopped:
        fit(mini(tiny_data, out, augment_on=augment_on), resume_command="RESUME-CMD")
    assert stopped.value.signum == getattr(signal, name)
    state = load_checkpoint(out / "last.pt")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    if where == "step":
        assert state["epoch"] == epoch - 1 and state["position"]["step"] == step
        assert f"stopped by {name} in epoch {epoch} of 2, after step {step} of {STEPS}" in line
    else:
        assert state["epoch"] == epoch and "position" not in state
        assert f"stopped by {name} after epoch {epoch} of 2" in line
    assert line.endswith("Resume with: RESUME-CMD")
    assert not (out / ".lock").exists()
    fit(mini(tiny_data, out, augment_on=augment_on, resume=True))
    assert_same_run(reference(augment_on), out)


def test_a_run_stopped_at_an_epochs_last_step_resumes_without_a_false_schedule_warning(tiny_data, tmp_path,
                                                                                      reference, monkeypatch):
    """last.pt written after the epoch's last step: the resumed process takes no optimizer step
    before the epoch's lr step, and torch would warn that a schedule value is skipped. None is.
    The epoch's images/s is its images over its seconds before the stop, not 0."""
    import warnings
    monkeypatch.setenv(TEST_SIGNAL_ENV, f"SIGTERM 1 {STEPS}")
    out = tmp_path / "run"
    with pytest.raises(RunStopped):
        fit(mini(tiny_data, out))
    assert load_checkpoint(out / "last.pt")["position"]["step"] == STEPS
    monkeypatch.delenv(TEST_SIGNAL_ENV)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        fit(mini(tiny_data, out, resume=True))
    assert not [w for w in said if "lr_scheduler" in str(w.message)], [str(w.message) for w in said]
    assert_same_run(reference("device"), out)
    first = next(csv.DictReader((out / "history.csv").open()))
    assert float(first["images_per_s"]) > 0 and float(first["seconds"]) > 0, first


@pytest.mark.parametrize("saved_fused, here_fused", [(True, False), (False, True)])
def test_a_resumed_optimizer_keeps_this_devices_kernel_choice(saved_fused, here_fused):
    """last.pt from another device (fused AdamW on CUDA, unfused on the CPU): the optimizer keeps the
    kernel choice it was built with, and its state (step counts, moments) comes from the file.
    (torch's own load_state_dict takes `fused` from the file.) Fused AdamW runs on the CPU too."""
    from cifar_hw2.training.runstate import load_optimizer
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)

    def adamw(fused):
        return torch.optim.AdamW(model.parameters(), lr=0.1, **({"fused": True} if fused else {}))
    saved = adamw(saved_fused)
    for _ in range(3):
        saved.zero_grad()
        model(torch.randn(4, 3)).square().sum().backward()
        saved.step()
    here = adamw(here_fused)
    load_optimizer(here, saved.state_dict())
    assert here.param_groups[0]["fused"] == (True if here_fused else None)
    state = here.state[model.weight]
    assert float(state["step"]) == 3 and torch.equal(state["exp_avg"], saved.state[model.weight]["exp_avg"])
    model(torch.randn(4, 3)).square().sum().backward()
    here.step()                                                    # and it steps with it
    assert float(here.state[model.weight]["step"]) == 4
    # a file with another number of parameter groups is refused, as torch refuses it
    two = torch.optim.AdamW([{"params": [model.weight]}, {"params": [model.bias]}])
    with pytest.raises(ValueError, match="different number of parameter groups"):
        load_optimizer(here, two.state_dict())


def test_a_second_ctrl_c_stops_at_once(tiny_data, tmp_path, monkeypatch):
    """Two SIGINTs inside one step: the first asks for a clean stop, the second stops there, with
    a plain KeyboardInterrupt and no new last.pt (the one after epoch 1 stays)."""
    original, calls = Trainer.step, []

    def step(self, x, labels):
        calls.append(1)
        if len(calls) == STEPS + 3:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, x, labels)
    monkeypatch.setattr(Trainer, "step", step)
    out, before = tmp_path / "run", signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt) as interrupted:
        fit(mini(tiny_data, out))
    assert not isinstance(interrupted.value, RunStopped) and len(calls) == STEPS + 3
    state = load_checkpoint(out / "last.pt")
    assert state["epoch"] == 1 and "position" not in state
    assert signal.getsignal(signal.SIGINT) is before          # the handler fit replaced is back


def test_a_timed_checkpoint_inside_an_epoch_survives_a_crash_and_resumes_identically(tiny_data, tmp_path,
                                                                                    reference, monkeypatch):
    """checkpoint_minutes tiny: last.pt after every step. A crash in step 7 of epoch 2 (not a
    signal: nothing is saved then) leaves the one written after step 6."""
    original, calls = Trainer.step, []

    def step(self, x, labels):
        calls.append(1)
        if len(calls) == STEPS + 7:
            raise RuntimeError("simulated crash")
        return original(self, x, labels)
    monkeypatch.setattr(Trainer, "step", step)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(mini(tiny_data, out, checkpoint_minutes=1e-9))
    state = load_checkpoint(out / "last.pt")
    assert state["epoch"] == 1 and state["position"]["step"] == 6
    monkeypatch.setattr(Trainer, "step", original)
    fit(mini(tiny_data, out, resume=True))          # checkpoint_minutes may differ: a runtime setting
    assert_same_run(reference(), out)


def test_the_time_limit_stops_with_status_0_and_says_resume_to_continue(tiny_data, tmp_path, reference, capsys):
    out = tmp_path / "run"
    assert cli.main(mini_args(tiny_data, out, "--time-limit=1e-9")) == 0
    printed = capsys.readouterr().out
    assert "time limit of 1e-09 h reached in epoch 1 of 2, after step 1 of 10" in printed
    assert "Resume to continue: " in printed and printed.strip().endswith("--resume")
    assert load_checkpoint(out / "last.pt")["position"]["step"] == 1
    assert cli.main(mini_args(tiny_data, out, "--resume")) == 0
    assert_same_run(reference(), out)
    assert "no run there to resume" not in capsys.readouterr().err


def test_resume_on_a_folder_without_a_run_says_it_starts_at_epoch_1(tiny_data, tmp_path, capsys):
    """--resume starts a new folder (Colab's and Slurm's first run), and says so: a misspelt --out
    would otherwise begin a fresh 200-epoch run without a word."""
    out = tmp_path / "typo"
    assert cli.main(mini_args(tiny_data, out, "--resume", "--epochs=1")) == 0
    assert f"{out}: no run there to resume, so this one starts at epoch 1" in capsys.readouterr().err


def test_a_locked_folder_is_refused_with_host_and_pid_and_a_dead_holder_never_blocks(tiny_data, tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom cifar_hw2.training.folderlock import hold\n"
                               "with hold(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)", str(out)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        for extra in ({}, {"resume": True}, {"overwrite": True}):
            with pytest.raises(FolderInUse, match=f"in use by PID {holder.pid} on host {socket.gethostname()}"):
                fit(mini(tiny_data, out, epochs=1, **extra))
    finally:
        holder.kill()                                    # SIGKILL: its lock file stays, its lock does not
        holder.wait()
    assert (out / ".lock").exists()
    fit(mini(tiny_data, out, epochs=1))
    assert json.loads((out / "metrics.json").read_text())["complete"] and not (out / ".lock").exists()


def test_hold_refuses_a_second_holder_in_the_same_process(tmp_path):
    with hold(tmp_path / "runs" / "run"):
        with pytest.raises(FolderInUse, match=f"PID {os.getpid()} on host"):
            with hold(tmp_path / "runs" / "run"):
                pass
    assert not (tmp_path / "runs").exists()             # made for the lock, left empty: removed


@pytest.mark.slow
def test_ctrl_c_in_epoch_3_prints_the_resume_command_and_a_second_terminal_is_refused(tiny_data, tmp_path):
    """As a new user would. The hook freezes the run after step 5 of epoch 3 (SIGSTOP) so that the
    second terminal surely meets it running; then Ctrl-C (SIGINT) reaches it there."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "cifar_hw2", *mini_args(tiny_data, out, "--epochs=4", "--progress=epoch")]
    env = {**os.environ, TEST_SIGNAL_ENV: "SIGSTOP 3 5"}
    first = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 300
        while _state(first.pid) != "T" and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert _state(first.pid) == "T", "the run never reached epoch 3"
        second = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2 and len(second.stderr.strip().splitlines()) == 1, second.stderr
        assert f"is in use by PID {first.pid} on host {socket.gethostname()}" in second.stderr
        os.kill(first.pid, signal.SIGINT)
        os.kill(first.pid, signal.SIGCONT)
        stdout, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == cli.EXIT_STOPPED and "Traceback" not in stderr, stderr
    line = stdout.strip().splitlines()[-1]
    assert "stopped by SIGINT in epoch 3 of 4, after step 5 of 10; last.pt holds that position" in line
    command = shlex.split(line.split("Resume with: ")[1])
    assert command[-1] == "--resume"
    env.pop(TEST_SIGNAL_ENV)
    resumed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "metrics.json").read_text())["complete"]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


# ---- item 7: bad out folders, full disks, NaN

def _one_line_error(capsys, code, status=2):
    err = capsys.readouterr().err
    assert code == status and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("case", ["file-parent", "proc", "sys", "immutable"])
def test_an_out_folder_that_cannot_be_made_or_written_is_one_line(case, tiny_data, tmp_path, capsys):
    if case == "file-parent":
        (tmp_path / "a-file").write_text("x")
        out, reason = tmp_path / "a-file" / "run", f"{tmp_path / 'a-file'} is a file, not a folder"
    elif case == "proc":
        out, reason = Path("/proc/cifar_hw2/run"), "making a folder in /proc fails (No such file or directory)"
    elif case == "sys":
        out, reason = Path("/sys/cifar_hw2"), "making a folder in /sys fails ("
    else:
        out = tmp_path / "frozen"
        out.mkdir()
        if subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i needs root (CAP_LINUX_IMMUTABLE)")
        reason = f"cannot write to out folder {out}: Operation not permitted"
    try:
        err = _one_line_error(capsys, cli.main(mini_args(tiny_data, out)))
    finally:
        if case == "immutable":
            subprocess.run(["chattr", "-i", str(out)])
    assert str(out) in err and reason in err


def _fail_writes_of(monkeypatch, name: str, nth: int):
    """os.fsync fails with ENOSPC on the nth atomic write of `name` (its temp file .NAME.*.tmp)."""
    real, seen = os.fsync, []

    def fsync(fd):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(f".{name}."):
            seen.append(fd)
            if len(seen) == nth:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("name, nth, kept", [("last.pt", 2, "after epoch 1 of 2"), ("best.pt", 1, "after epoch 1 of 2")])
def test_a_full_disk_is_one_line_and_the_resumed_run_ends_consistent(name, nth, kept, tiny_data, tmp_path,
                                                                       reference, monkeypatch, capsys):
    """last.pt failing at epoch 2: resumed from epoch 1's. best.pt failing at epoch 1 (after that
    epoch's last.pt): the resume rewrites best.pt from last.pt, whose weights are the best epoch's."""
    out = tmp_path / "run"
    _fail_writes_of(monkeypatch, name, nth)
    err = _one_line_error(capsys, cli.main(mini_args(tiny_data, out)), cli.EXIT_WRITE_FAILED)
    assert f"could not write {out / name}: No space left on device" in err
    assert f"The last good checkpoint {out / 'last.pt'} ({kept}) is kept" in err and err.strip().endswith("--resume")
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    assert cli.main(mini_args(tiny_data, out, "--resume")) == 0
    assert_same_run(reference(), out)
    best, ref = load_checkpoint(out / "best.pt"), load_checkpoint(reference() / "best.pt")
    assert best["epoch"] == json.loads((out / "metrics.json").read_text())["best"]["epoch"] == ref["epoch"]
    assert all(torch.equal(best["model"][k], ref["model"][k]) for k in ref["model"])


@pytest.mark.parametrize("name", sorted(FLOAT_RANGES))
def test_every_float_setting_refuses_nan_and_inf(name):
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ConfigError, match=rf"^{name} must be .*\(a finite number: NaN and inf are not accepted\)"):
            make_config("quick", **{name: bad})


def test_rotation_nan_on_the_command_line_is_one_line(tiny_data, tmp_path, capsys):
    err = _one_line_error(capsys, cli.main(mini_args(tiny_data, tmp_path / "x", "--rotation=nan")))
    assert "rotation must be >= 0 (a finite number: NaN and inf are not accepted), got nan" in err
    assert not (tmp_path / "x").exists()


def test_help_lists_every_exit_status_and_the_docs_name_no_other():
    """EXIT_STATUSES is the one list: `--help` shows it, and every "exit N" in the docs is one of them."""
    import re
    shown = " ".join(cli.build_parser().format_help().split())
    for code, meaning in cli.EXIT_STATUSES.items():
        assert f"{code} {meaning}" in shown
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    named = {int(n) for page in pages for n in re.findall(r"\bexits? (\d+)", page.read_text())}
    assert named and named <= set(cli.EXIT_STATUSES), named - set(cli.EXIT_STATUSES)


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM", "SIGUSR2"])
def test_loader_workers_leave_stop_signals_to_the_main_process(name, tiny_data):
    """A Ctrl-C reaches the whole process group (Slurm signals every process of a job): a worker
    must not die of it while the main process still reads batches up to its next refresh point."""
    from cifar_hw2.data import load_cifar100
    from cifar_hw2.training.loader import make_train_loader
    loader, sampler = make_train_loader(load_cifar100("train", str(tiny_data)), 12, seed=0, workers=1)
    sampler.set_epoch(0)
    batches = iter(loader)
    next(batches)
    for worker in batches._workers:
        os.kill(worker.pid, getattr(signal, name))
    time.sleep(0.5)
    assert sum(1 for _ in batches) == len(loader) - 1 and all(w.is_alive() for w in batches._workers)


# ---- nothing lost, one line (issue 27)

def test_sighup_stops_like_sigterm_with_exit_75_and_the_resumed_run_is_identical(tiny_data, tmp_path, reference,
                                                                                 monkeypatch, capsys):
    """A closed terminal or SSH session sends SIGHUP: last.pt at that step, one line, the lock released."""
    out = tmp_path / "run"
    monkeypatch.setenv(TEST_SIGNAL_ENV, "SIGHUP 2 4")
    assert cli.main(mini_args(tiny_data, out)) == cli.EXIT_STOPPED
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "stopped by SIGHUP in epoch 2 of 2, after step 4 of 10; last.pt holds that position" in line
    assert load_checkpoint(out / "last.pt")["position"]["step"] == 4 and not (out / ".lock").exists()
    monkeypatch.delenv(TEST_SIGNAL_ENV)
    assert cli.main(mini_args(tiny_data, out, "--resume")) == 0
    assert_same_run(reference(), out)


def _copy_of(run: Path, tmp_path: Path) -> Path:
    import shutil
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def test_resume_of_a_finished_run_without_last_pt_is_refused_and_nothing_is_replaced(tiny_data, tmp_path, reference,
                                                                                     capsys):
    out = _copy_of(reference(), tmp_path)
    (out / "last.pt").unlink()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    err = _one_line_error(capsys, cli.main(mini_args(tiny_data, out, "--resume")))
    assert f"cannot resume {out}: it holds a run's results (history.csv, metrics.json, best.pt) but no last.pt" in err
    assert "--overwrite to train it again from epoch 1" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_later_run_in_the_folder_removes_the_partial_writes_a_killed_run_left(tiny_data, tmp_path, reference):
    """kill -9 during a checkpoint write leaves .last.pt.<random>.tmp; the next run or resume removes the
    run files' leftovers (under the lock), and leaves other writers' temp files (an evaluate's) alone."""
    out = _copy_of(reference(), tmp_path)
    leftovers = [".last.pt.k9x2ab_c.tmp", ".best.pt.0a1b2c3d.tmp", ".metrics.json.zz9y8x7w.tmp",
                 ".history.csv.q1w2e3r4.tmp", ".config.json.a1s2d3f4.tmp"]
    for name in leftovers:
        (out / name).write_bytes(os.urandom(1000))
    other = out / ".eval-best-test.json.abcdefgh.tmp"
    other.write_text("{")
    assert cli.main(mini_args(tiny_data, out, "--resume", "--augment-on=device")) == 0   # all epochs done
    assert not [name for name in leftovers if (out / name).exists()] and other.exists()
    other.unlink()
    assert_same_run(reference(), out)


def test_a_batch_larger_than_a_small_archive_is_refused_before_any_step(tiny_data, tmp_path):
    """config.validate knows CIFAR-100's 500 images per class; a smaller archive (12 per class here,
    1,100 after validation) is caught once loaded: never a run with no step recorded as complete."""
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="batch_size 2000 is more than the 1100 training images"):
        fit(mini(tiny_data, out, train_per_class=None, batch_size=2000))
    assert not (out / "metrics.json").exists()


def test_a_full_disk_at_the_lock_is_one_line(tiny_data, tmp_path, monkeypatch, capsys):
    real_open = os.open

    def full_for_the_lock(path, flags, *args, **kwargs):
        if str(path).endswith("/.lock"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_open(path, flags, *args, **kwargs)
    out = tmp_path / "run"
    monkeypatch.setattr(os, "open", full_for_the_lock)
    err = _one_line_error(capsys, cli.main(mini_args(tiny_data, out)))
    assert f"cannot make the lock file {out / '.lock'}: No space left on device" in err
    assert not out.exists()                              # the folder it made for the lock is gone again


def test_a_full_disk_when_the_lock_says_who_holds_it_does_not_stop_the_lock(tmp_path, monkeypatch):
    """The holder's host and PID are only for another run's message; the flock is held all the same."""
    from cifar_hw2.training import folderlock

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(folderlock.os, "pwrite", full)
    with hold(tmp_path / "run"):
        with pytest.raises(FolderInUse, match="another process"):
            with hold(tmp_path / "run"):
                pass


@pytest.mark.slow
def test_a_closed_stdout_does_not_stop_the_run(tiny_data, tmp_path):
    """`train ... | head -1`: the reader goes away after the first line; the run trains to the end,
    with no BrokenPipeError traceback."""
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != TEST_SIGNAL_ENV}
    proc = subprocess.Popen([sys.executable, "-m", "cifar_hw2", *mini_args(tiny_data, out, "--progress=epoch")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first = proc.stdout.readline()
    proc.stdout.close()                                   # what head does after one line
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err
    assert f"{out}: cpu" in first or "cpu, precision" in first
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["complete"] and metrics["epochs_done"] == 2


@pytest.mark.parametrize("content", ["[1]", '"str"', '{"since": "x"}', '{"since": 1e300}', '{"pid": 7, "since": -1e20}'])
def test_a_lock_file_of_odd_content_is_described_not_a_crash(tmp_path, content):
    """.lock is written by this tool, but a folder may come from anywhere: whoever holds it is
    described with what can be read, never an AttributeError or OverflowError."""
    import fcntl
    from cifar_hw2.training.folderlock import describe_holder, holder
    (tmp_path / ".lock").write_text(content)
    fd = os.open(tmp_path / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)     # held, as by another live run
        info = holder(tmp_path)
        assert isinstance(info, dict) and describe_holder(info).startswith(("PID", "another process"))
    finally:
        os.close(fd)
