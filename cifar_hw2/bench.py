"""`python -m cifar_hw2 bench`: is the data path ever the bottleneck, and what does the trainer cost?

Five measurements for one model, batch size, device and precision; each prints one JSON record,
and a table follows:

  1. augmentation throughput on one core: our train pipeline at 32 px (batched with per-sample
     parameters, as the device path runs it, and per image, as loader workers run it) against the
     same ops on PIL images at 224 (the obvious alternative), as ratios
  2. train-step images/s on synthetic data already on the device
  3. end-to-end images/s: the trainer's own epoch loop with the real loader and augmentation
  4. the ratio 3 / 2 (1.0: data is never the bottleneck)
  5. the trainer's epoch loop against a bare PyTorch loop on the same model, data and loader

Timings exclude a warm-up window of each kind. The windows of measurements 2, 3 and 5 alternate
for `--repeats` rounds; rates are medians over rounds, and ratios medians of the rounds' ratios
(robust to a machine whose speed drifts during the run).
"""
from __future__ import annotations

import itertools
import json
import os
import statistics
import time
from contextlib import contextmanager

import torch

from .augment import BatchNormalizeNoise, IMAGENET_MEAN, IMAGENET_STD, uint8_train_transform
from .batch_augment import BatchAugment
from .config import make_config
from .data import load_cifar100
from .loader import AUGMENT_CHUNK_IMAGES
from .trainer import Processes, Trainer, prepare_out


@contextmanager
def threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _rate(fn, items_per_call: int, calls: int, repeats: int, sync=lambda: None) -> float:
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


def _sync(device: torch.device):
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def plain_step(trainer: Trainer, x: torch.Tensor, labels: torch.Tensor) -> None:
    """Forward, loss, backward, optimizer step: nothing else (the bare-loop baseline's step)."""
    model, loss_fn = trainer.train_model, trainer.loss_fn
    with trainer.autocast():
        if trainer.needs_features:
            logits, feats = model(x, return_features=True)
            loss = loss_fn(logits, labels, feats)
        else:
            loss = loss_fn(model(x), labels)
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    trainer.optimizer.step()


# Each *_window(trainer, steps) returns a function that runs one timed window of `steps` train
# steps. run_bench interleaves the three kinds of window, so that a machine whose speed drifts
# (shared cores, clocks) shifts all three alike, and reports medians and medians of per-round ratios.

def synthetic_window(trainer: Trainer, steps: int):
    """Train steps on a fixed uint8 batch already on the device (no loader, no augmentation)."""
    cfg, dev = trainer.cfg, trainer.device
    images = torch.randint(0, 256, (cfg.batch_size, 3, 32, 32), dtype=torch.uint8, device=dev)
    labels = torch.randint(0, 100, (cfg.batch_size,), device=dev)

    def window():
        trainer.train_model.train()
        for _ in range(steps):
            plain_step(trainer, trainer.augment(images).contiguous(memory_format=trainer.memory_format), labels)

    return window


def trainer_window(trainer: Trainer, steps: int):
    """The trainer's own epoch loop (loader, augmentation, metrics on the device) for `steps` steps."""
    epochs = itertools.count(1)

    def window():
        epoch = next(epochs)
        trainer.sampler.set_epoch(epoch)
        trainer.train_epoch(epoch, None, max_steps=steps)

    return window


def bare_window(trainer: Trainer, steps: int):
    """A plain PyTorch loop on the same loader, augmentation, model and optimizer: no metrics,
    no progress, no checks. What the trainer is compared with."""
    dev, epochs = trainer.device, itertools.count(1001)

    def window():
        trainer.sampler.set_epoch(next(epochs))
        trainer.train_model.train()
        for i, (images, labels) in enumerate(trainer.loader):
            if i == steps:
                break
            images, labels = images.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
            plain_step(trainer, trainer.augment(images).contiguous(memory_format=trainer.memory_format), labels)

    return window


def interleaved_rates(windows: dict, images_per_window: int, repeats: int, sync) -> dict[str, list[float]]:
    """Images/s of each window, `repeats` rounds of one window of each kind, after one warm-up round."""
    for window in windows.values():
        window()
    sync()
    rates = {name: [] for name in windows}
    for _ in range(repeats):
        for name, window in windows.items():
            start = time.perf_counter()
            window()
            sync()
            rates[name].append(images_per_window / (time.perf_counter() - start))
    return rates


def run_bench(model: str = "small_cnn", batch_size: int = 64, device: str = "auto", precision: str = "auto",
              loss: str = "ce", steps: int = 32, repeats: int = 3, data: str | None = None,
              augment_on: str = "auto", compile: bool = False, workers: int | None = None,
              out: str = "runs/.bench", echo=print) -> list[dict]:
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"unknown precision {precision!r}; valid: auto, fp32, bf16")
    if steps <= 0 or repeats <= 0:
        raise ValueError("steps and repeats must be positive integers")
    cfg = make_config("quick", model=model, pretrained=False, loss=loss, batch_size=batch_size, device=device,
                      amp=precision != "fp32", compile=compile, augment_on=augment_on, workers=workers,
                      train_per_class=None, test_per_class=None, data=data, out=out, overwrite=True,
                      progress="off")
    trainer = Trainer(cfg, Processes())
    if precision == "bf16" and trainer.device.type != "cuda":
        raise ValueError("bf16 autocast is used on CUDA only; on this device use --precision fp32")
    prepare_out(cfg, trainer.procs)
    trainer.setup(None)
    if steps > len(trainer.loader):
        raise ValueError(f"--steps {steps} is more than the {len(trainer.loader)} batches of one epoch at batch size "
                         f"{batch_size}; use at most {len(trainer.loader)} steps")
    # The device path augments whole chunks of batches: time whole chunks (or the whole epoch), or
    # a window would pay for batches it never trains on.
    per_chunk = getattr(trainer.loader, "batches_per_chunk", 1)
    steps = min(-(-steps // per_chunk) * per_chunk, len(trainer.loader))
    meta = {"model": model, "batch_size": batch_size, "device": str(trainer.device),
            "precision": "bf16" if (trainer.device.type == "cuda" and cfg.amp) else "fp32",
            "augment_on": trainer.augment_on, "compile": compile, "torch_threads": torch.get_num_threads(),
            "loader_workers": getattr(trainer.loader, "num_workers", 0), "cpu_count": os.cpu_count(),
            "steps": steps}
    records = []

    def emit(name, value, unit, **extra):
        rec = {"measurement": name, "value": round(value, 3), "unit": unit, **meta, **extra}
        records.append(rec)
        echo(json.dumps(rec))

    sample = load_cifar100("test", data).images[:AUGMENT_CHUNK_IMAGES]   # the test split is in random order
    aug = augmentation_per_core(sample, repeats)
    emit("augmentation_per_core", aug["ours_batched_32px"], "images/s",
         path=f"ours, batched x{len(sample)} (device path), 32 px")
    emit("augmentation_per_core", aug["ours_per_image_32px"], "images/s", path="ours, per image (loader path), 32 px")
    emit("augmentation_per_core", aug["pil_224px"], "images/s", path="PIL, per image, 224 px")
    emit("augmentation_ratio", aug["ours_batched_32px"] / aug["pil_224px"], "x", path="ours batched / PIL 224")
    emit("augmentation_ratio", aug["ours_per_image_32px"] / aug["pil_224px"], "x", path="ours per image / PIL 224")
    windows = {"synthetic": synthetic_window(trainer, steps), "end_to_end": trainer_window(trainer, steps),
               "bare": bare_window(trainer, steps)}
    rates = interleaved_rates(windows, batch_size * steps, repeats, _sync(trainer.device))
    median = {name: statistics.median(r) for name, r in rates.items()}
    ratio = lambda a, b: statistics.median(x / y for x, y in zip(rates[a], rates[b]))   # per round
    emit("train_step_synthetic", median["synthetic"], "images/s")
    emit("end_to_end", median["end_to_end"], "images/s")
    emit("end_to_end_over_synthetic", ratio("end_to_end", "synthetic"), "x")
    emit("bare_loop", median["bare"], "images/s")
    emit("trainer_over_bare_loop", ratio("end_to_end", "bare"), "x")
    echo(format_table(records))
    return records


def format_table(records: list[dict]) -> str:
    lines = [f"{'measurement':<28} {'path':<40} {'value':>10}  unit", "-" * 88]
    for r in records:
        lines.append(f"{r['measurement']:<28} {r.get('path', ''):<40} {r['value']:>10.3f}  {r['unit']}")
    m = records[0]
    lines.append(f"({m['model']}, batch {m['batch_size']}, {m['device']}, {m['precision']}, augment on {m['augment_on']}, "
                 f"{m['loader_workers']} loader workers, {m['torch_threads']} torch threads, {m['steps']} steps per window)")
    return "\n".join(lines)
