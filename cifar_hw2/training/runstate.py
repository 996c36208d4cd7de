"""What last.pt holds beyond the weights: the RNG states, and a position inside an epoch.

Exact resume needs every source of randomness back where it was. After an epoch that is the host
RNGs (torch's CPU generator and Python's); each epoch then reseeds from (seed, epoch). Inside an
epoch (a timed checkpoint, a signal, the time limit) it is more, per rank: the RNG states
(CUDA's too), the running loss and accuracy sums, the images seen, and under torchrun the
buffers, since BatchNorm statistics differ between ranks until the epoch's end averages them.

    position = {"epoch": 2, "step": 67, "world": 1, "seconds": 41.3, "ranks": [rank 0's, ...]}
"""
from __future__ import annotations

import random

import torch
import torch.distributed as dist
from torch import nn

from .checkpoint import CheckpointError
from .runfolder import rng_lists, rng_tuples


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
    if "cuda" in mine["rng"]:
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
