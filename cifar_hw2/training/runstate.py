"""A Trainer's state on disk: what last.pt and best.pt hold, when they are written, and how a run
continues from them. `trainer_state` and `restore_trainer` sit side by side, so that what is saved
and what is restored stay one list.

Exact resume needs every source of randomness back where it was. After an epoch that is the host
RNGs (torch's CPU generator and Python's); each epoch then reseeds from (seed, epoch). Inside an
epoch (a timed checkpoint, a signal, the time limit) it is more, per rank: the RNG states
(CUDA's too), the running loss and accuracy sums, the images seen, and under torchrun the
buffers, since BatchNorm statistics differ between ranks until the epoch's end averages them.

    position = {"epoch": 2, "step": 67, "world": 1, "seconds": 41.3, "ranks": [rank 0's, ...]}

Rank 0 alone writes; every rank tracks which last.pt was written last (`trainer.files.saved`), for
the error that every rank raises on a NaN loss.
"""
from __future__ import annotations

import random
import warnings

import torch
import torch.distributed as dist
from torch import nn

from ..data import NUM_CLASSES, data_root
from .checkpoint import CheckpointError, checkpoint_epoch, save_checkpoint, start_over
from .runfolder import rng_lists, rng_tuples


def trainer_state(trainer, epochs_done: int, weights_only: bool = False, position: dict | None = None) -> dict:
    """What last.pt (everything to resume) or best.pt (`weights_only`) holds of a Trainer after
    `epochs_done` epochs; with `position`, last.pt inside the next epoch."""
    cfg = trainer.cfg
    state = {"model_name": cfg.model, "num_classes": NUM_CLASSES, "epoch": epochs_done, "config": cfg.to_dict(),
             "data_folder": str(data_root(cfg.data)), "model": trainer.model.state_dict()}
    if not weights_only:
        state.update(optimizer=trainer.optimizer.state_dict(), scheduler=trainer.scheduler.state_dict(),
                     history=trainer.history, best=trainer.best, calibration=trainer.calibration, rng=host_rng())
        if trainer.scaler is not None:
            state.update(scaler=trainer.scaler.state_dict(), skipped_steps=int(trainer.skipped_steps))
        if position is not None:
            state["position"] = position
    return state


def restore_trainer(trainer, state: dict) -> None:
    """A set-up Trainer continues from last.pt's `state`: weights, optimizer, schedule, history, best
    epoch, RNG states, and the place inside an epoch where it stopped, if it did. A file that passed
    checkpoint.check_resumable and still does not fit (odd values inside) is one CheckpointError."""
    try:
        _restore(trainer, state)
    except (CheckpointError, torch.cuda.OutOfMemoryError):     # said as they are
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
        raise CheckpointError(f"{trainer.out / 'last.pt'} cannot be resumed: it does not fit this run "
                              f"({type(e).__name__}: {' '.join(str(e).split())[:200]}); {start_over()}") from None


def _restore(trainer, state: dict) -> None:
    trainer.model.load_state_dict(state["model"])
    load_optimizer(trainer.optimizer, state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.history, trainer.best, trainer.start_epoch = state["history"], state["best"], state["epoch"]
    trainer.calibration = state["calibration"]
    if trainer.scaler is not None and state.get("scaler"):
        trainer.scaler.load_state_dict(state["scaler"])
    trainer.skipped_steps.fill_(state.get("skipped_steps", 0))
    restore_host_rng(state["rng"])
    trainer.position = state.get("position")
    trainer.files.saved = (trainer.start_epoch, trainer.position["step"] if trainer.position else 0)
    check_world(trainer.position, trainer.procs.world, str(trainer.out / "last.pt"))


# An optimizer's kernel choices, which belong to the device it runs on, not to the file: a run begun
# on the CPU may go on on a GPU (the device is not a setting that a resume must keep).
DEVICE_OPTIONS = ("fused", "foreach", "capturable")


def load_optimizer(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """An optimizer's state_dict `saved` into `optimizer`, which keeps its own DEVICE_OPTIONS. torch's
    load_state_dict takes the file's param groups whole: fused AdamW built on CUDA would run unfused
    after a last.pt written on the CPU, and the reverse. torch then places the `step` counters as the
    kept options want them (on the device, for fused)."""
    if len(saved["param_groups"]) != len(optimizer.param_groups):   # not this run's: torch says so
        optimizer.load_state_dict(saved)
    groups = [{**group, **{k: mine[k] for k in DEVICE_OPTIONS if k in mine}}
              for group, mine in zip(saved["param_groups"], optimizer.param_groups)]
    optimizer.load_state_dict({**saved, "param_groups": groups})


def step_schedule(trainer, position: dict | None) -> None:
    """The epoch's learning-rate step. A run resumed from a last.pt written at the epoch's last step
    has taken no optimizer step in this process, and torch would warn that the schedule skips a
    value; it does not (the optimizer's steps were taken before the stop), so that warning is muted."""
    with warnings.catch_warnings():
        if position is not None and position["step"] >= len(trainer.loader):
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
        trainer.scheduler.step()


def save_after_epoch(trainer, epochs_done: int, improved: bool) -> None:
    """last.pt after an epoch, then best.pt when this epoch is the best by validation. last.pt
    first: if the second write fails, last.pt's own weights are the best epoch's, and a resume
    rewrites best.pt from them (`repair_best`)."""
    if trainer.procs.main:
        trainer.files.write("last.pt", save_checkpoint, trainer_state(trainer, epochs_done))
        trainer.files.saved = (epochs_done, 0)     # what a failed best.pt write below says is kept
        if improved:
            trainer.files.write("best.pt", save_checkpoint, trainer_state(trainer, epochs_done, weights_only=True))
    trainer.files.saved = (epochs_done, 0)


def save_inside(trainer, epoch: int, step: int, seconds: float, ranks: list[dict]) -> None:
    """last.pt at `step` steps into `epoch` (0-based): the model and optimizer as after that step,
    the epoch's `seconds` so far and each rank's part of the position (`rank_position`, which every
    rank took part in)."""
    position = {"epoch": epoch, "step": step, "world": trainer.procs.world, "seconds": seconds, "ranks": ranks}
    if trainer.procs.main:
        trainer.files.write("last.pt", save_checkpoint, trainer_state(trainer, epoch, position=position))
    trainer.files.saved = (epoch, step)
    trainer.stop.checkpointed()


def repair_best(trainer) -> None:
    """A run that ended between writing last.pt and best.pt (a full disk, a kill) left best.pt a
    step behind; the best epoch is then last.pt's own, whose weights it holds. Rank 0, on resume."""
    epoch, best = trainer.start_epoch, trainer.best
    if (trainer.position is None and best is not None and best["epoch"] == epoch
            and checkpoint_epoch(trainer.out / "best.pt") != epoch):
        trainer.files.write("best.pt", save_checkpoint, trainer_state(trainer, epoch, weights_only=True))


def host_rng() -> dict:
    """torch's CPU generator and Python's: what an epoch's end saves."""
    return {"torch": torch.get_rng_state(), "python": rng_lists(random.getstate())}


def restore_host_rng(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    random.setstate(rng_tuples(rng["python"]))


def rank_position(loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, model: nn.Module,
                  device: torch.device, world: int) -> list[dict]:
    """Every rank's part of a position, gathered (a collective: every rank calls it); rank 0
    writes the list. `loss_sum`, `correct`: the epoch's running sums, scalars on the device."""
    rng = host_rng()
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    mine = {"loss_sum": loss_sum.cpu(), "correct": correct.cpu(), "seen": seen, "rng": rng}
    if world == 1:
        return [mine]
    mine["buffers"] = {n: b.detach().cpu().clone() for n, b in model.named_buffers()}
    ranks = [None] * world
    dist.all_gather_object(ranks, mine)
    return ranks


def restore_rank(position: dict, rank: int, model: nn.Module, loss_sum: torch.Tensor, correct: torch.Tensor,
                 device: torch.device) -> int:
    """Put this rank back where `position` stopped: RNG states, running sums (in place), buffers.
    Returns the images it had seen in that epoch."""
    mine = position["ranks"][rank]
    loss_sum.copy_(mine["loss_sum"])
    correct.copy_(mine["correct"])
    restore_host_rng(mine["rng"])
    if "cuda" in mine["rng"] and device.type == "cuda":    # a GPU's position resumed on the CPU has no use for it
        torch.cuda.set_rng_state(mine["rng"]["cuda"], device)
    if "buffers" in mine:
        with torch.no_grad():
            for name, buf in model.named_buffers():
                buf.copy_(mine["buffers"][name])
    return mine["seen"]


def check_world(position: dict | None, world: int, path: str) -> None:
    """A position holds one part per rank: it resumes only with as many processes."""
    if position and position["world"] != world:
        raise CheckpointError(f"{path} was written inside epoch {position['epoch'] + 1} by {position['world']} "
                              f"process(es): resume it with as many (now {world}), since each one's place in "
                              f"the epoch is saved")
