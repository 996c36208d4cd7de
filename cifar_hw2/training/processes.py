"""Devices, the torchrun process group, and DistributedDataParallel.

Under `torchrun` (WORLD_SIZE > 1) every process trains on its shard of each batch; DDP averages
the gradients, so the parameters stay equal on every rank. On CUDA the BatchNorm layers become
SyncBatchNorm (statistics over the global batch, as on one GPU); `average_buffers` makes the
running statistics equal too, so every rank evaluates and saves the same model.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .config import ConfigError


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """cuda → mps → cpu for "auto"; an explicit name must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' was asked for but is not available; use --device cpu or auto")
    return torch.device(name, local_rank) if name == "cuda" else torch.device(name)


@dataclass
class Processes:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    started_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            dist.barrier()

    def share(self, obj):
        """Rank 0's `obj` on every rank (e.g. the error of a check only rank 0 makes, so that all
        ranks stop on it together instead of waiting for rank 0 at the next collective)."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def init_processes(device_name: str) -> Processes:
    """Join the torchrun process group if WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA).

    torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT; with several nodes its c10d
    rendezvous does the same on each node, and nothing here changes."""
    def number(name: str, default: str | None = None) -> int:
        value = os.environ.get(name, default)
        if value is None or not value.strip().isdigit():
            said = f"{name} is not set" if value is None else f"{name}={value!r}"
            raise ConfigError(f"{said}: WORLD_SIZE, RANK and LOCAL_RANK are whole numbers that "
                              f"torchrun sets for each process; run under torchrun, or unset WORLD_SIZE")
        return int(value)

    world = number("WORLD_SIZE", "1")
    if world <= 1:
        return Processes()
    rank, local = number("RANK"), number("LOCAL_RANK", "0")
    started = False
    if not dist.is_initialized():
        use_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if use_cuda else "gloo")
        started = True
    return Processes(rank, world, local, started)


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """BatchNorm → SyncBatchNorm, keeping timm's fused norm + activation layers whole.

    timm's EfficientNet uses BatchNormAct2d: BatchNorm with its SiLU applied inside forward.
    `nn.SyncBatchNorm.convert_sync_batchnorm` turns it into a plain SyncBatchNorm whose forward
    never calls the SiLU (still a child, so nothing looks wrong) and B4 loses every activation.
    timm's converter (timm.layers.convert_sync_batchnorm) makes a SyncBatchNormAct instead. Both
    reuse the same Parameter and buffer objects, so an optimizer built before still holds them."""
    from timm.layers import convert_sync_batchnorm as timm_convert
    return timm_convert(model)


def wrap_ddp(model: nn.Module, device: torch.device, broadcast_buffers: bool = True) -> nn.Module:
    """DDP around `model`. broadcast_buffers=False where SyncBatchNorm already keeps the running
    statistics equal (one all-reduce per step fewer); plain BatchNorm keeps DDP's broadcast."""
    from torch.nn.parallel import DistributedDataParallel as DDP
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
               broadcast_buffers=broadcast_buffers)


@torch.no_grad()
def average_buffers(model: nn.Module, world: int) -> None:
    """DDP keeps parameters equal, but each rank's BatchNorm running statistics come from its
    own batches. Averaging them makes every rank evaluate and save the same model."""
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf /= world


def gather_interleaved(local: torch.Tensor, n: int, world: int) -> torch.Tensor:
    """Rank r holds samples r, r + world, ...; gather all and restore the original order."""
    size = math.ceil(n / world)
    padded = torch.zeros(size, *local.shape[1:], dtype=local.dtype, device=local.device)
    padded[:len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    out = torch.empty(n, *local.shape[1:], dtype=local.dtype, device=local.device)
    for r in range(world):
        count = len(range(r, n, world))
        out[r::world] = parts[r][:count]
    return out
