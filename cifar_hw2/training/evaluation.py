"""An epoch's evaluation: the logits of a split, and the metrics of the history row and metrics.json.

The logits are fp32 and eager, as `evaluate` computes them (experiments/evaluate.py, predict), so a
checkpoint has one set of calibration numbers (ECE, NLL, temperatures), not a bf16 one from
training and an fp32 one from evaluate. Validation picks the best epoch; test is reported only,
its temperature fitted on validation.
"""
from __future__ import annotations

import contextlib

import torch

from ..metrics import classification_metrics, reliability, temperature_scaled
from .compiled import eager
from .loader import predict_logits
from .processes import Processes, gather_interleaved


def split_logits(model, split, device: torch.device, batch_size: int, normalize, memory_format,
                 procs: Processes, compiled: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [N, K] (float32, CPU) of `split` in its order, and its labels [N]. Each rank predicts
    its shard; under torchrun the shards are gathered. `compiled`: the model's compiled regions run
    eager here, so that no graph is compiled for eval mode or for the short last batch."""
    with eager() if compiled else contextlib.nullcontext():
        logits = predict_logits(model, split, device, batch_size, normalize, memory_format=memory_format,
                                rank=procs.rank, world_size=procs.world)
    if procs.world > 1:
        logits = gather_interleaved(logits.to(device), len(split), procs.world).cpu()
    return logits, split.labels


def epoch_metrics(val_logits: torch.Tensor, val_y: torch.Tensor, test_logits: torch.Tensor,
                  test_y: torch.Tensor) -> tuple[dict, dict]:
    """The epoch's val_* and test_* metrics and temperatures (history.csv's columns), and the test
    split's reliability bins before and after temperature scaling (metrics.json's)."""
    row = {f"val_{k}": v for k, v in classification_metrics(val_logits, val_y).items()}
    row.update({f"test_{k}": v for k, v in classification_metrics(test_logits, test_y).items()})
    calib, scaled = temperature_scaled(val_logits, val_y, test_logits, test_y)
    row["temperature"], row["test_ece_ts"] = calib["temperature"], calib["ece_ts"]
    row["temperature_ece"], row["test_ece_ts_ece"] = calib["temperature_ece"], calib["ece_ts_ece"]
    bins = {"before": reliability(test_logits, test_y).to_dict(),
            "after_ts": reliability(scaled, test_y).to_dict()}
    return row, bins
