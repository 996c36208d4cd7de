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
from .config import TrainConfig, upgrade_saved
from .loader import predict_logits
from .metrics import classification_metrics
from .models import build_model
from .processes import pick_device
from .trainer import make_splits, temperature_scaled

SPLITS = ("test", "val")


def predict(model, split, device, batch_size: int = 256) -> torch.Tensor:
    """Logits [N, K] (float32, CPU) of `model` on a uint8 split, in order."""
    return predict_logits(model, split, device, batch_size, BatchNormalizeNoise().to(device))


def evaluate_checkpoint(checkpoint: str | Path, split: str = "test", data: str | None = None,
                        device: str = "auto", batch_size: int = 256) -> dict:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    state = load_checkpoint(checkpoint)
    cfg = TrainConfig(**upgrade_saved(state["config"]))
    dev = pick_device(device)
    model = build_model(cfg.model, state["num_classes"], pretrained=False, upsample_mode=cfg.upsample_mode)
    model.load_state_dict(state["model"])
    model.to(dev)
    _, val, test = make_splits(cfg, data, test=split == "test")
    target = val if split == "val" else test
    val_logits = predict(model, val, dev, batch_size)
    logits = val_logits if split == "val" else predict(model, target, dev, batch_size)
    calib, _ = temperature_scaled(val_logits, val.labels, logits, target.labels)
    result = {"checkpoint": str(checkpoint), "epoch": state["epoch"], "split": split, "images": len(target),
              **classification_metrics(logits, target.labels), **calib}
    write_json(Path(checkpoint).with_name(f"eval-{Path(checkpoint).stem}-{split}.json"), result)
    return result
