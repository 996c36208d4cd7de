"""Batches for training and evaluation.

Training, two paths that yield the same batches (uint8 [B, 3, 32, 32], labels [B]) with the uint8
part of the augmentation (flip, rotation, AutoAugment at 32 px) done:
  - `DeviceBatches` (augment_on="device", the default on CUDA and CPU): the split lives on the
    device and is augmented there in batches with per-sample parameters (batch_augment.py);
  - `make_train_loader` (augment_on="loader"): a DataLoader over `CifarDataset` whose worker
    processes run the per-image torchvision pipeline.
Normalisation and noise run on the device, per batch, in both (augment.BatchNormalizeNoise). Each
batch carries its own seed, derived from (seed, epoch, batch number), so the augmentation of a
batch does not depend on which worker or chunk made it, on how many workers there are, or on
whether the run was resumed mid-way.

Evaluation needs no loader: the split is already a uint8 tensor; we slice it. A run's three
splits come from `make_splits` (validation carved from train, used to pick best.pt; test reported).
"""
from __future__ import annotations

import contextlib
import itertools
import os
import signal

import torch
from torch.utils.data import DataLoader, DistributedSampler

from ..augment import uint8_train_transform
from ..batch_augment import AugmentParams, BatchAugment, to_device
from ..data import CifarDataset, CifarSplit, load_cifar100, stratified_subset, train_val_split
from .config import ConfigError
from .naming import setting


def batch_seed(seed: int, epoch: int, index: int) -> int:
    """A distinct 63-bit seed per (run seed, epoch, global batch index)."""
    # Taken mod 2**64 (torch's seed range; a negative seed is read as its two's complement anyway):
    # the same seeds as before for every product that fitted, and no overflow for large run seeds.
    g = torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_033 + index) % 2**64)
    return int(torch.randint(0, 2**62, (1,), generator=g))


class SeededBatchSampler:
    """Yields batches as lists of (index, batch_seed) pairs for `CifarDataset.__getitems__`.

    Wraps a DistributedSampler (also with one process) so that under torchrun every rank sees its
    own shard of the same seeded permutation. `set_epoch` must be called before each epoch; its
    `start` skips that many batches (a run resumed inside an epoch): every batch's indices and seed
    depend on its number only, so the batches that follow are the ones an uninterrupted run sees.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 drop_last: bool = True):
        self.sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True,
                                          seed=seed, drop_last=False)
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world_size
        self.drop_last, self.epoch, self.start = drop_last, 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        indices = list(self.sampler)
        for b in range(self.start, len(self)):
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


def _leave_stop_signals_to_the_main_process(worker_id: int) -> None:
    """Loader workers ignore SIGTERM, SIGINT and SIGUSR1/2: the main process stops cleanly on them
    (stopping.py) and may still read batches until its next refresh point. A Ctrl-C reaches the
    whole process group, and Slurm signals every process of a job, so a worker would otherwise die
    under it. Workers still end with the main process (DataLoader's shutdown, or its watchdog)."""
    from .stopping import STOP_SIGNALS
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def make_train_loader(split: CifarSplit, batch_size: int, seed: int, *, flip=True, rotation=10.0,
                      autoaugment=True, rank=0, world_size=1, workers=None,
                      pin_memory=False) -> tuple[DataLoader, SeededBatchSampler]:
    """Loader of (uint8 images [B, 3, 32, 32], labels [B]) plus its sampler (call set_epoch)."""
    dataset = CifarDataset(split, uint8_train_transform(flip, rotation, autoaugment))
    sampler = SeededBatchSampler(len(split), batch_size, seed, rank, world_size)
    if len(sampler) == 0:
        raise ValueError(f"batch size {batch_size} is larger than the {len(split)} training images "
                         f"per process; lower {setting('batch_size')} or use more data")
    workers = default_workers() if workers is None else workers
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                        persistent_workers=workers > 0, pin_memory=pin_memory,
                        prefetch_factor=4 if workers > 0 else None,
                        worker_init_fn=_leave_stop_signals_to_the_main_process if workers > 0 else None)
    return loader, sampler


def eval_batches(split: CifarSplit, batch_size: int, rank: int = 0, world_size: int = 1):
    """(uint8 images, labels) slices of this rank's shard: samples rank, rank + world, ..."""
    idx = torch.arange(rank, len(split), world_size)
    for start in range(0, len(idx), batch_size):
        sel = idx[start:start + batch_size]
        yield split.images[sel], split.labels[sel]


# Images augmented per call on the device path: the batched augmentation makes ~34 torchvision
# calls for 64 images and ~56 for 512, so bigger calls amortise them (measured on one core:
# 10.6k img/s at 64 images per call, 19.9k at 512).
AUGMENT_CHUNK_IMAGES = 512


class DeviceBatches:
    """Training batches from a split held on the device: no worker processes, no copies per batch.

    Same batches (the sampler's) as the loader path. With `augment` (a BatchAugment), flip,
    rotation and AutoAugment run here, on the device, `chunk_images` images per call: its
    torchvision calls cost almost as much for 64 images as for 512, so several batches are
    augmented at once. Each batch draws its parameters on the CPU from a generator seeded with
    its own batch seed: its result does not depend on the chunk size, nor its parameters on the
    device.
    Yields (uint8 images [B, 3, H, W], labels [B]) on the device, as the loader path does.
    """

    def __init__(self, split: CifarSplit, sampler: SeededBatchSampler, device: torch.device,
                 augment=None, chunk_images: int = AUGMENT_CHUNK_IMAGES):
        self.images = split.images.to(device)      # uint8 [N, 3, 32, 32]: 138 MB for the 45,000 training images
        self.labels = split.labels.to(device)
        self.sampler, self.augment = sampler, augment
        self.batches_per_chunk = max(1, chunk_images // sampler.batch_size)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        batches = iter(self.sampler)
        while chunk := list(itertools.islice(batches, self.batches_per_chunk)):
            idx = to_device(torch.tensor([i for batch in chunk for i, _ in batch]), self.images.device)
            images, labels = self.images[idx], self.labels[idx]
            if self.augment is not None:
                params = [self.augment.draw(len(batch), torch.Generator().manual_seed(batch[0][1]))
                          for batch in chunk]
                images = self.augment.uint8(images, AugmentParams.cat(params))
            sizes = [len(batch) for batch in chunk]
            yield from zip(images.split(sizes), labels.split(sizes))


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


def train_batches(cfg, split: CifarSplit, device: torch.device, rank: int = 0, world: int = 1):
    """This process's training batches of a run (`cfg`: a TrainConfig): (where they are augmented,
    the batches, their sampler), on the device path or through loader workers per cfg.augment_on."""
    # auto: the batched device path wherever it is measured (benchmarks/RESULTS.md): on CUDA
    # and on the CPU, where it is also faster than loader workers. MPS keeps the loader path.
    augment_on = cfg.augment_on if cfg.augment_on != "auto" else (
        "device" if device.type in ("cuda", "cpu") else "loader")
    per_process = cfg.batch_size // world
    if augment_on == "device":
        # Flip, rotation and AutoAugment too, per sample, in batches: the data never leaves the device.
        batch_augment = BatchAugment(cfg.flip, cfg.rotation, cfg.autoaugment).to(device)
        sampler = SeededBatchSampler(len(split), per_process, cfg.seed, rank, world)
        loader = DeviceBatches(split, sampler, device, batch_augment)
    else:
        loader, sampler = make_train_loader(
            split, per_process, cfg.seed, flip=cfg.flip, rotation=cfg.rotation, autoaugment=cfg.autoaugment,
            rank=rank, world_size=world, workers=cfg.workers, pin_memory=device.type == "cuda")
    if len(loader) == 0:   # config.validate catches this for CIFAR-100; a smaller archive lands here
        raise ConfigError(f"{setting('batch_size')} {cfg.batch_size} is more than the {len(split)} training images "
                          f"of {cfg.data or 'the data folder'}, so no step could be taken; use a smaller "
                          f"{setting('batch_size')}")
    return augment_on, loader, sampler


def make_splits(cfg, data: str | None = None, test: bool = True):
    """(train, val, test) of a run (`cfg`: a TrainConfig): validation carved from train
    (stratified, seeded), test whole or a stratified subset. `data` overrides cfg.data; test=False
    skips loading it (None)."""
    folder = data or cfg.data
    train, val = train_val_split(load_cifar100("train", folder), cfg.val_per_class, cfg.seed, cfg.train_per_class)
    if not test:
        return train, val, None
    test_full = load_cifar100("test", folder)
    return train, val, (stratified_subset(test_full, cfg.test_per_class, cfg.seed) if cfg.test_per_class
                        else test_full)
