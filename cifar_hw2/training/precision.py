"""Which floating-point precision a run trains in, and why: `choose_precision(requested, device)`.

    auto  bf16 autocast on CUDA GPUs of compute capability >= 8.0 (Ampere, Hopper, ...), where
          bf16 runs on the tensor cores; fp16 autocast with a GradScaler on older CUDA GPUs
          (Colab's T4 is 7.5, V100 7.0), where bf16 is emulated and slow; fp32 on the CPU and MPS
    bf16  autocast to bfloat16 (fp32's exponent range: no loss scaling needed)
    fp16  autocast to float16 with dynamic loss scaling (torch.amp.GradScaler): the loss is
          multiplied by a scale before backward; a step whose gradients hold inf/NaN is skipped
          and the scale halved (Micikevicius et al. 2018, "Mixed Precision Training")
    fp32  no autocast: the CPU path's arithmetic, bit for bit as before this option existed

Autocast keeps reductions, softmax and losses in fp32 (torch.amp autocast op lists); the model's
weights and the optimizer stay fp32 in every mode. fp16 and bf16 also run on the CPU (autocast
"cpu"), many times slower than fp32 there (fp16 most): they are there to test the paths (the
scaler, its skipped steps, its checkpoint), not to train. MPS trains in fp32 only.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
NATIVE_BF16 = (8, 0)   # compute capability from which bf16 runs natively (NVIDIA Ampere)


@dataclass(frozen=True)
class Precision:
    name: str          # bf16 | fp16 | fp32: what the run uses
    reason: str        # why, in words, for config.json and the run's first line
    device_type: str   # cuda | cpu | mps

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    @property
    def uses_scaler(self) -> bool:
        return self.name == "fp16"

    def autocast(self):
        """A fresh context manager for one forward pass (nullcontext in fp32)."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def make_scaler(self) -> "torch.amp.GradScaler | None":
        """fp16's dynamic loss scaler (PyTorch's defaults: 2**16 at start, x0.5 on inf, x2 after
        2000 clean steps); None otherwise."""
        return torch.amp.GradScaler(self.device_type) if self.uses_scaler else None

    def to_dict(self) -> dict:
        return {"used": self.name, "reason": self.reason}


def scaled_step(scaler: "torch.amp.GradScaler", loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """fp16's backward and optimizer step through `scaler`; returns 1 if the scaler skipped the
    step (inf/NaN gradients: the weights did not move), else 0, as a long scalar on the device.

    update() lowers the scale exactly when the step was skipped, so the scale is compared before
    and after. The scale is read as the scaler's device tensor `_scale`, a private attribute:
    the public get_scale() returns a Python float, which makes the host wait for the GPU every
    step, and no public accessor returns the tensor (torch 2.11 to 2.14 alike).
    tests/test_private_apis.py fails, naming it and the torch version, if `_scale` changes."""
    scaler.scale(loss).backward()
    scaler.step(optimizer)                 # skipped if any gradient is inf/NaN
    before = scaler._scale.clone()
    scaler.update()
    return (scaler._scale < before).long()


def choose_precision(requested: str, device: torch.device) -> Precision:
    """Resolve `requested` (auto | bf16 | fp16 | fp32) for `device`; raises ValueError with the
    valid choices for an unknown name, and for a half precision on MPS."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; valid choices: {', '.join(PRECISIONS)}")
    kind = device.type
    if kind == "mps" and requested in ("bf16", "fp16"):
        raise ValueError(f"precision {requested} is not supported on mps here (not tested); use fp32 or auto")
    if kind == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        cc = f"compute capability {major}.{minor}"
        native = (major, minor) >= NATIVE_BF16
        if requested == "auto":
            if native:
                return Precision("bf16", f"auto: {cc} >= 8.0 runs bf16 natively", kind)
            return Precision("fp16", f"auto: {cc} < 8.0 emulates bf16 (slow), so fp16 with a GradScaler", kind)
        note = "" if native or requested != "bf16" else f"; {cc} < 8.0 emulates bf16, expect it to be slow"
        return Precision(requested, f"asked for{note}", kind)
    if requested == "auto":
        return Precision("fp32", f"auto: fp32 on {kind}; autocast pays on CUDA only", kind)
    note = "" if requested == "fp32" else f"; half precision on {kind} is slow, meant for testing the path"
    return Precision(requested, f"asked for{note}", kind)
