"""When a run stops early: signals, a time budget and time-triggered checkpoints, agreed by every rank.

    stop = StopControl(checkpoint_minutes=10, time_limit_hours=None, world=1, device=cpu)
    with stop.installed():                   # signal handlers, restored afterwards
        ... decision = stop.poll()           # at the trainer's refresh points, on every rank

SIGTERM, SIGUSR1 (the usual choice for Slurm's --signal=USR1@...), SIGUSR2 (submitit's time-limit signal), SIGINT and
SIGHUP (a closed terminal or SSH session) ask the run to stop: the current step finishes, last.pt is
written at that position and fit raises RunStopped; the CLI exits with EXIT_STOPPED. A second SIGINT stops at once
(KeyboardInterrupt; last.pt is the one written before). A signal that arrives during an
evaluation is acted on when that evaluation ends, at the epoch's own checkpoint.

The handlers only set a flag; the trainer reads it at its refresh points (every step on the CPU,
every 25 on a GPU, where it syncs anyway), and under torchrun the flag is all-reduced there, so
every rank stops after the same step even when only one of them got the signal. The clock is
the host's (time.monotonic): no GPU sync.

Test hook: $CIFAR_HW2_TEST_SIGNAL = "SIGNAL EPOCH STEP [RANK [OUT]]" makes the process send
itself SIGNAL after STEP steps of EPOCH (1-based; STEP "eval": when that epoch's evaluation
begins), on RANK only (default 0; "any" for all) and only for a run whose out folder contains OUT.
A resumed run starts after that point, so the signal is sent once.

What a stopped or failed run says is built here, once: where in the run it is (`where_in_run`), the
stop line (`stop_line`), what a failure keeps (`what_is_kept`), and where a resumed run starts (`resume_line`).
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .paths import command_line, shown_path

STOP_SIGNALS = tuple(s for s in (signal.SIGTERM, getattr(signal, "SIGUSR1", None),
                                 getattr(signal, "SIGUSR2", None), signal.SIGINT,
                                 getattr(signal, "SIGHUP", None)) if s is not None)
TEST_SIGNAL_ENV = "CIFAR_HW2_TEST_SIGNAL"
# How to go on, where the caller gave no command (fit() from Python; the CLI passes its own command line).
DEFAULT_RESUME = "fit() again with resume=True (notebook 04: run it again; resume = True is its default)"


class RunStopped(KeyboardInterrupt):
    """The run stopped on a signal after writing last.pt at the step it stopped; resumable.
    A KeyboardInterrupt, so that a notebook cell (and any caller) stops as on an interrupt."""

    def __init__(self, message: str, signum: int | None):
        super().__init__(message)
        self.message, self.signum = message, signum


class StopHere(Exception):
    """Raised inside the trainer's loop where a stop was decided: `epoch` epochs done and `step` steps
    (of `total`) into the next, as `where_in_run` says it. Trainer.run turns it into the stop line."""

    def __init__(self, decision: Decision, epoch: int, step: int, total: int):
        super().__init__()
        self.decision, self.epoch, self.step, self.total = decision, epoch, step, total


@dataclass
class Decision:
    checkpoint: bool = False      # write last.pt at this position
    signum: int | None = None     # stop: on this signal
    time_up: bool = False         # stop: the time limit is reached

    @property
    def stop(self) -> bool:
        return self.signum is not None or self.time_up


class StopControl:
    def __init__(self, checkpoint_minutes: float = 0.0, time_limit_hours: float | None = None, world: int = 1,
                 device: torch.device | None = None, rank: int = 0, out: str = ""):
        self.every_s = checkpoint_minutes * 60 if checkpoint_minutes else None
        self.limit_s = time_limit_hours * 3600 if time_limit_hours else None
        self.world, self.device, self.rank = world, device or torch.device("cpu"), rank
        self.started = self.last_checkpoint = time.monotonic()
        self.signum: int | None = None
        self.previous: dict[int, object] = {}      # the handlers ours replaced (submitit's, for one)
        self._test = _test_signal(rank, out)

    # ---- handlers
    @contextlib.contextmanager
    def installed(self):
        """Our handlers while the run lasts. Signals can be handled only in the main thread; a run in
        another thread (the grid's in-process test runner) keeps the time checks only."""
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self.previous[s] = signal.signal(s, self._handle)
        try:
            yield self
        finally:
            for s, handler in self.previous.items():
                signal.signal(s, handler)

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.signum is not None:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt("second Ctrl-C: stopped at once")
        if self.signum is None:
            self.signum = signum
            if signum == signal.SIGINT:
                print("\nCtrl-C: finishing this step, then saving last.pt (press Ctrl-C again to stop at once)",
                      flush=True)

    # ---- at refresh points
    def poll(self) -> Decision:
        """What every rank does now. With several processes the flags are all-reduced (max), so all
        act alike; this is a collective, so every rank must call it at the same points."""
        now = time.monotonic()
        flags = [self.signum or 0, int(self.limit_s is not None and now - self.started >= self.limit_s),
                 int(self.every_s is not None and now - self.last_checkpoint >= self.every_s)]
        if self.world > 1:
            import torch.distributed as dist
            t = torch.tensor(flags, device=self.device, dtype=torch.long)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flags = t.tolist()
        return Decision(checkpoint=bool(flags[2]), signum=flags[0] or None, time_up=bool(flags[1]))

    def checkpointed(self) -> None:
        self.last_checkpoint = time.monotonic()

    def test_hook(self, epoch: int, where) -> None:
        """The test hook (see the module docstring): `epoch` 0-based, `where` steps done or "eval"."""
        if self._test and self._test[1:] == (epoch + 1, where):
            os.kill(os.getpid(), self._test[0])

    def hours(self) -> float:
        return (time.monotonic() - self.started) / 3600


def signal_name(signum: int | None) -> str:
    return signal.Signals(signum).name if signum else "a signal"


def where_in_run(epochs_done: int, step: int, epochs: int, total: int | None = None) -> str:
    """A place in a run, as the stop and resume lines say it: "after epoch 2 of 6", or "in epoch 3
    of 6, after step 67 of 156" (`step` steps into the epoch after `epochs_done`)."""
    if step == 0:
        return f"after epoch {epochs_done} of {epochs}"
    return f"in epoch {epochs_done + 1} of {epochs}, after step {step}" + (f" of {total}" if total else "")


def stop_line(out, stop: StopHere, epochs: int, time_limit: float | None, resume_command: str) -> str:
    """The line a run stopped by a signal or by its time limit prints: why, where, and the command
    that continues it."""
    place = where_in_run(stop.epoch, stop.step, epochs, stop.total)
    if stop.decision.signum is not None:
        return (f"{shown_path(out)}: stopped by {signal_name(stop.decision.signum)} {place}; last.pt holds that "
                f"position. Resume with: {resume_command}")
    return (f"{shown_path(out)}: time limit of {time_limit:g} h reached {place}; last.pt saved there. "
            f"Resume to continue: {resume_command}")


def resume_line(out, saved: tuple[int, int] | None, epochs: int, total: int) -> str | None:
    """What a run says when it starts from last.pt (`saved`: its epochs done and steps into the
    next, of `total`): where it resumes, or that it has nothing left to do. None: a fresh run."""
    if saved is not None and saved[0] >= epochs:
        return f"{shown_path(out)}: all {epochs} epochs are done already."
    if saved:
        return f"{shown_path(out)}: resuming {where_in_run(*saved, epochs, total)}."
    return None


def what_is_kept(out, saved: tuple[int, int] | None, epochs: int) -> str:
    """What a run that failed (a full disk, a NaN loss) keeps, as its error says it: the last good
    last.pt and where in the run it stands, or that none was written yet. `saved`: (epochs done,
    steps into the next) of the last last.pt written, or None."""
    if saved is None:
        return "No checkpoint was written yet"
    return f"The last good checkpoint {Path(out) / 'last.pt'} ({where_in_run(*saved, epochs)}) is kept"


def _test_signal(rank: int, out: str):
    spec = os.environ.get(TEST_SIGNAL_ENV, "").split()
    if not spec:
        return None
    name, epoch, where = spec[:3]
    on_rank = spec[3] if len(spec) > 3 else "0"
    if (on_rank != "any" and int(on_rank) != rank) or (len(spec) > 4 and spec[4] not in out):
        return None
    return getattr(signal, name), int(epoch), where if where == "eval" else int(where)


def resume_command(argv: list[str]) -> str:
    """The command line that continues this run: the same, with --resume instead of --overwrite.
    Under torchrun, the torchrun command (paths.command_line)."""
    drop = {"--resume", "--no-resume", "--overwrite", "--no-overwrite"}
    return command_line([a for a in argv if a not in drop] + ["--resume"])
