"""Evaluate a saved checkpoint: top-1/top-5/NLL/ECE, and ECE after temperature scaling.

Both temperatures -- the NLL fit (`temperature`, `ece_ts`) and Mukhoti et al.'s ECE grid
(`temperature_ece`, `ece_ts_ece`) -- are fitted on the validation split that the run carved from
train (same seed and size as in its config). On `--split val` the temperatures are reported but not
the ECE after scaling: scored on the images that fitted T, it would look better than it is
(`IN_SAMPLE`). The FLSD-53 re-run of results/cpu-reference-reruns/, after the ECE-grid T: 1.87 % on
val, where T was picked, and 3.15 % on test, though before scaling val's ECE was the higher (7.92 %
against 7.12 %).

Logits are computed as the trainer's own evaluation computes them (fp32, eager, the run's memory
format, eval batch size and backend settings: cuDNN's autotuner, --tf32, --deterministic), so the
numbers here equal the run's metrics.json for the same checkpoint on the CPU (tests/test_trainer.py
checks it, also for a run trained in bf16). On CUDA the autotuner may pick other kernels in another
process, so the last digits may differ there, unless the run was --deterministic.

The result is also saved beside the checkpoint (eval-<checkpoint>-<split>.json), and for the test
split the logits too (predictions-<checkpoint>.npz, read by notebook 05). Where that cannot
be written (a full disk, a read-only folder), `EvaluationNotSaved` carries the computed result, so
that it is still shown.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..augment import BatchNormalizeNoise
from ..data import NUM_CLASSES, is_present
from ..metrics import classification_metrics, temperature_scaled
from ..models import build_model
from ..training.backends import backend_settings
from ..training.checkpoint import CheckpointError, load_checkpoint, write_json
from ..training.config import TrainConfig, upgrade_saved
from ..training.loader import make_splits, predict_logits
from ..training.predictions import write_predictions
from ..training.processes import pick_device

SPLITS = ("test", "val")
IN_SAMPLE = ("ece_ts", "ece_ts_ece")    # left out on val: T was fitted there
VAL_NOTE = ("on val, ece_ts and ece_ts_ece are left out: both temperatures were fitted on these images, "
            "so the ECE after scaling would be scored in sample; --split test reports them")


class EvaluationNotSaved(RuntimeError):
    """The metrics were computed (`result`) but their JSON file could not be written."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


def predict(model, split, device, batch_size: int = 256, memory_format=torch.contiguous_format) -> torch.Tensor:
    """Logits [N, K] (float32, CPU) of `model` on a uint8 split, in order (fp32, no autocast)."""
    return predict_logits(model, split, device, batch_size, BatchNormalizeNoise().to(device),
                          memory_format=memory_format)


def evaluate_checkpoint(checkpoint: str | Path, split: str = "test", data: str | None = None,
                        device: str = "auto", batch_size: int | None = None) -> dict:
    """Metrics of a checkpoint on `split`; batch_size None: the run's eval_batch_size. `data` None:
    the folder the run was trained from (recorded in the checkpoint), else the default."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    state = load_checkpoint(checkpoint, num_classes=NUM_CLASSES)
    try:        # the checkpoint is not trusted: its settings are checked as a run's are, its weights loaded strictly
        # pretrained=False: the weights are the checkpoint's; the file it started from may be gone
        cfg = TrainConfig(**{**upgrade_saved(state["config"]), "pretrained": False}).validate()
        if cfg.model != state["model_name"]:
            raise ValueError(f"its config names {cfg.model}, its weights are {state['model_name']}'s")
        model = build_model(cfg.model, NUM_CLASSES, pretrained=False, upsample_mode=cfg.upsample_mode)
        model.load_state_dict(state["model"])
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as e:
        raise CheckpointError(f"{checkpoint} cannot be evaluated: its settings or weights do not make a model of "
                              f"this version ({type(e).__name__}: {' '.join(str(e).split())[:300]})") from None
    recorded = state.get("data_folder")    # where the run read CIFAR-100: used when --data is not given
    data = data or (recorded if isinstance(recorded, str) and is_present(recorded) else None)
    dev = pick_device(device)
    # As Trainer: channels_last where the run used it (CUDA), so kernels and logits are the same.
    memory_format = torch.channels_last if (dev.type == "cuda" and cfg.channels_last) else torch.contiguous_format
    batch_size = batch_size or cfg.eval_batch_size
    _, val, test = make_splits(cfg, data, test=split == "test")
    target = val if split == "val" else test
    with backend_settings(dev, cfg.deterministic, cfg.tf32):     # entered before CUDA starts, as fit() does
        model.to(dev, memory_format=memory_format)
        val_logits = predict(model, val, dev, batch_size, memory_format)
        logits = val_logits if split == "val" else predict(model, target, dev, batch_size, memory_format)
    calib, _ = temperature_scaled(val_logits, val.labels, logits, target.labels)
    if split == "val":
        calib = {k: v for k, v in calib.items() if k not in IN_SAMPLE}
    result = {"checkpoint": str(checkpoint), "epoch": state["epoch"], "split": split, "images": len(target),
              **classification_metrics(logits, target.labels), **calib}
    path = Path(checkpoint).with_name(f"eval-{Path(checkpoint).stem}-{split}.json")
    try:
        write_json(path, result)
        if split == "test":   # the logits behind the numbers, for 05's error analysis (predictions.py)
            write_predictions(Path(checkpoint).with_name(f"predictions-{Path(checkpoint).stem}.npz"), logits, target,
                              state["epoch"], val_logits, val)
    except OSError as e:
        raise EvaluationNotSaved(f"the metrics above could not be saved to {path}: {e.strerror or e}", result) from None
    return result
