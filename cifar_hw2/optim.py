"""Optimizers by name.

    "adamw"   torch AdamW (Loshchilov & Hutter 2019) on all parameters, as the homework ran it;
              fused on CUDA
    "ranger"  RAdam + Lookahead (k = 6, α = 0.5), the report's §5 "future work", from timm's
              optimizer factory ("lookahead_radam"); timm exempts biases and norms from decay
    "sgd"     SGD with Nesterov momentum
"""
from __future__ import annotations

import torch
from torch import nn

OPTIMIZERS = ("adamw", "ranger", "sgd")


def build_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float = 1e-4,
                    momentum: float = 0.9, device_type: str = "cpu") -> torch.optim.Optimizer:
    if name == "adamw":
        # fused=True runs one kernel for all parameters on CUDA; the CPU path keeps the default.
        fused = {"fused": True} if device_type == "cuda" else {}
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, **fused)
    if name == "ranger":
        from timm.optim import create_optimizer_v2
        return create_optimizer_v2(model, opt="lookahead_radam", lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=momentum > 0,
                               weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
