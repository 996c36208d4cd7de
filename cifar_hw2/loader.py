"""Batches for training and evaluation.

Training: a DataLoader over `CifarDataset` whose per-image work is only the cheap uint8 part of
the augmentation (flip, rotation, AutoAugment at 32 px); normalisation and noise run on the
device, per batch (augment.BatchNormalizeNoise). Each batch carries its own seed, derived from
(seed, epoch, batch number), so the augmentation of a batch does not depend on which worker made it,
on how many workers there are, or on whether the run was resumed mid-way.

Evaluation needs no loader: the split is already a uint8 tensor; we slice it.
"""
from __future__ import annotations

import contextlib
import os

import torch
from torch.utils.data import DataLoader, DistributedSampler

from .augment import uint8_train_transform
from .data import CifarDataset, CifarSplit


def batch_seed(seed: int, epoch: int, index: int) -> int:
    """A distinct 63-bit seed per (run seed, epoch, global batch index)."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_033 + index)
    return int(torch.randint(0, 2**62, (1,), generator=g))


class SeededBatchSampler:
    """Yields batches as lists of (index, batch_seed) pairs for `CifarDataset.__getitems__`.

    Wraps a DistributedSampler (also with one process) so that under torchrun every rank sees its
    own shard of the same seeded permutation. `set_epoch` must be called before each epoch.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 drop_last: bool = True):
        self.sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True,
                                          seed=seed, drop_last=False)
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world_size
        self.drop_last, self.epoch = drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        indices = list(self.sampler)
        for b in range(len(self)):
            chunk = indices[b * self.batch_size:(b + 1) * self.batch_size]
            s = batch_seed(self.seed, self.epoch, b * self.world + self.rank)
            yield [(i, s) for i in chunk]


def default_workers() -> int:
    """Loader processes: the usable cores, or 0 (work in the main process) on a 1-core machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return cores if cores > 1 else 0


def make_train_loader(split: CifarSplit, batch_size: int, seed: int, *, flip=True, rotation=10.0,
                      autoaugment=True, rank=0, world_size=1, workers=None,
                      pin_memory=False) -> tuple[DataLoader, SeededBatchSampler]:
    """Loader of (uint8 images [B, 3, 32, 32], labels [B]) plus its sampler (call set_epoch)."""
    dataset = CifarDataset(split, uint8_train_transform(flip, rotation, autoaugment))
    sampler = SeededBatchSampler(len(split), batch_size, seed, rank, world_size)
    if len(sampler) == 0:
        raise ValueError(f"batch size {batch_size} is larger than the {len(split)} training images "
                         f"per process; lower batch_size or use more data")
    workers = default_workers() if workers is None else workers
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                        persistent_workers=workers > 0, pin_memory=pin_memory,
                        prefetch_factor=4 if workers > 0 else None)
    return loader, sampler


def eval_batches(split: CifarSplit, batch_size: int, rank: int = 0, world_size: int = 1):
    """(uint8 images, labels) slices of this rank's shard: samples rank, rank + world, ..."""
    idx = torch.arange(rank, len(split), world_size)
    for start in range(0, len(idx), batch_size):
        sel = idx[start:start + batch_size]
        yield split.images[sel], split.labels[sel]


class DeviceBatches:
    """Training batches sliced from a split held on the device (no worker processes, no copies
    per batch): the GPU path of issue "feed the GPU". Same batch order as the loader path."""

    def __init__(self, split: CifarSplit, sampler: SeededBatchSampler, device: torch.device):
        self.images = split.images.to(device)      # uint8 [N, 3, 32, 32]: 150 MB for all of train
        self.labels = split.labels.to(device)
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for batch in self.sampler:
            idx = torch.tensor([i for i, _ in batch]).to(self.images.device, non_blocking=True)
            yield self.images[idx], self.labels[idx]


@torch.no_grad()
def predict_logits(model, split: CifarSplit, device: torch.device, batch_size: int, normalize,
                   autocast=contextlib.nullcontext, memory_format=torch.contiguous_format,
                   rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """Logits [n, K] (float32, CPU) of `model` in eval mode on this rank's shard of a uint8 split.

    `normalize` maps uint8 batches to model inputs (BatchNormalizeNoise with train=False).
    """
    model.eval()
    outs = []
    for images, _ in eval_batches(split, batch_size, rank, world_size):
        x = normalize(images.to(device, non_blocking=True), train=False)
        with autocast():
            outs.append(model(x.contiguous(memory_format=memory_format)).float())
    return torch.cat(outs).cpu()
