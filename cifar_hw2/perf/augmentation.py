"""Measurement 1 of `bench`: is the augmentation ever the bottleneck? Images/s on one core.

Our train pipeline at 32 px, batched with per-sample parameters (as the device path runs it) and
per image (as loader workers run it), against the same ops on PIL images at 224 px (the obvious
alternative: resize first, then augment), each with normalisation and noise. One thread, so that
the numbers say what one loader worker or one core of the device path does.
"""
from __future__ import annotations

import statistics
import time
from contextlib import contextmanager

import torch

from ..augment import BatchNormalizeNoise, IMAGENET_MEAN, IMAGENET_STD, uint8_train_transform
from ..batch_augment import BatchAugment
from ..data import load_cifar100
from ..training.loader import AUGMENT_CHUNK_IMAGES


@contextmanager
def threads(n: int):
    """torch's intra-op threads set to `n` while the block runs."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _rate(fn, items_per_call: int, calls: int, repeats: int, sync=lambda: None) -> float:
    """Items/s of `fn`, the median of `repeats` timings of `calls` calls, after one warm-up call."""
    fn(), sync()  # warm-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        rates.append(items_per_call * calls / (time.perf_counter() - start))
    return statistics.median(rates)


def augmentation_per_core(images: torch.Tensor, repeats: int = 3) -> dict:
    """Images/s on one thread: ours at 32 px (batched; per image), and the PIL-at-224 alternative.
    Each includes normalisation and noise; `images` is one device-path chunk of uint8 images."""
    from PIL import Image
    from torchvision.transforms import v2
    n = len(images)
    per_image = uint8_train_transform()
    finish = BatchNormalizeNoise()
    batched = BatchAugment()
    pil_224 = v2.Compose([v2.Resize(224), v2.RandomHorizontalFlip(), v2.RandomRotation(10),
                          v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10, fill=128), v2.ToImage(),
                          v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
                          v2.RandomApply([v2.GaussianNoise(0, 0.005, clip=False)], p=0.1)])
    pils = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images]
    with threads(1):
        ours_batched = _rate(lambda: batched(images), n, 1, repeats)
        ours = _rate(lambda: finish(torch.stack([per_image(im) for im in images])), n, 1, repeats)
        pil = _rate(lambda: [pil_224(p) for p in pils[: max(n // 8, 8)]], max(n // 8, 8), 1, repeats)
    return {"ours_batched_32px": ours_batched, "ours_per_image_32px": ours, "pil_224px": pil}


def augmentation_records(data: str | None, repeats: int = 3) -> list[tuple[str, float, str, str]]:
    """(measurement, value, unit, path) of each augmentation record `bench` prints: the three
    rates on one device-path chunk of test images, then ours over PIL's as ratios."""
    sample = load_cifar100("test", data).images[:AUGMENT_CHUNK_IMAGES]   # the test split is in random order
    aug = augmentation_per_core(sample, repeats)
    return [("augmentation_per_core", aug["ours_batched_32px"], "images/s",
             f"ours, batched x{len(sample)} (device path), 32 px"),
            ("augmentation_per_core", aug["ours_per_image_32px"], "images/s", "ours, per image (loader path), 32 px"),
            ("augmentation_per_core", aug["pil_224px"], "images/s", "PIL, per image, 224 px"),
            ("augmentation_ratio", aug["ours_batched_32px"] / aug["pil_224px"], "x", "ours batched / PIL 224"),
            ("augmentation_ratio", aug["ours_per_image_32px"] / aug["pil_224px"], "x", "ours per image / PIL 224")]
