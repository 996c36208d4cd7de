"""Evaluate a saved checkpoint: top-1/top-5/NLL/ECE, and ECE after temperature scaling.

Both temperatures -- the NLL fit (`temperature`, `ece_ts`) and Mukhoti et al.'s ECE grid
(`temperature_ece`, `ece_ts_ece`) -- are fitted on the validation split that the run carved from
train (same seed and size as in its config), never on the split being reported.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .augment import BatchNormalizeNoise
from .checkpoint import load_checkpoint, write_json
from .config import TrainConfig
from .data import load_cifar100, stratified_subset, train_val_split
from .metrics import classification_metrics, expected_calibration_error, fit_temperature, fit_temperature_ece
from .models import build_model
from .trainer import pick_device
from .loader import predict_logits

SPLITS = ("test", "val")


def predict(model, split, device, batch_size: int = 256) -> torch.Tensor:
    """Logits [N, K] (float32, CPU) of `model` on a uint8 split, in order."""
    return predict_logits(model, split, device, batch_size, BatchNormalizeNoise().to(device))


def evaluate_checkpoint(checkpoint: str | Path, split: str = "test", data: str | None = None,
                        device: str = "auto", batch_size: int = 256) -> dict:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    state = load_checkpoint(checkpoint)
    cfg = TrainConfig(**state["config"])
    dev = pick_device(device)
    model = build_model(cfg.model, state["num_classes"], pretrained=False, upsample_mode=cfg.upsample_mode)
    model.load_state_dict(state["model"])
    model.to(dev)
    train_full = load_cifar100("train", data or cfg.data)
    _, val = train_val_split(train_full, cfg.val_per_class, cfg.seed, cfg.train_per_class)
    if split == "val":
        target = val
    else:
        test_full = load_cifar100("test", data or cfg.data)
        target = stratified_subset(test_full, cfg.test_per_class, cfg.seed) if cfg.test_per_class else test_full
    val_logits = predict(model, val, dev, batch_size)
    logits = val_logits if split == "val" else predict(model, target, dev, batch_size)
    t, t_ece = fit_temperature(val_logits, val.labels), fit_temperature_ece(val_logits, val.labels)
    result = {"checkpoint": str(checkpoint), "epoch": state["epoch"], "split": split, "images": len(target),
              **classification_metrics(logits, target.labels),
              "temperature": t, "ece_ts": expected_calibration_error(logits / t, target.labels),
              "temperature_ece": t_ece, "ece_ts_ece": expected_calibration_error(logits / t_ece, target.labels)}
    write_json(Path(checkpoint).with_name(f"eval-{Path(checkpoint).stem}-{split}.json"), result)
    return result
