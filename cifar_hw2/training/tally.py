"""One epoch's running training totals on this rank: the loss sum, the correct count, the first step
whose loss was not finite, and the images seen; what the progress bar shows of them, what a position
inside the epoch saves (runstate.py), and the epoch's train_loss, train_acc and images/s.

The sums stay on the device and are added to without a host sync; they are read only where the
trainer asks, at its refresh points (every step on the CPU, every 25 on a GPU), so a GPU step never
waits for Python. A resumed epoch starts from the sums its position saved.
"""
from __future__ import annotations

import time

import torch
import torch.distributed as dist
from torch import nn

from .runstate import rank_position, restore_rank


class EpochTally:
    def __init__(self, device: torch.device, world: int, position: dict | None = None):
        self.device, self.world = device, world
        self.loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.first_bad = torch.full((), -1, device=device, dtype=torch.long)   # -1: every loss finite so far
        self.seen = 0           # images of this epoch on this rank, those before a resume included
        self.seen_here = 0      # images since this process took the epoch up: what the bar's speed counts
        self.start = time.perf_counter()
        # A resumed epoch's seconds include those spent before the stop (history.csv's `seconds`).
        self.earlier = position["seconds"] if position else 0.0

    def restore(self, position: dict, rank: int, model: nn.Module) -> None:
        """Continue where `position` (last.pt's, inside this epoch) left this rank: its sums, RNG
        states and buffers."""
        self.seen = restore_rank(position, rank, model, self.loss_sum, self.correct, self.device)

    def add(self, step: int, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """One step's loss (the batch mean) and logits; all on the device, no .item()."""
        self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(loss), step, self.first_bad)
        self.loss_sum += loss.double() * labels.shape[0]
        self.correct += (logits.argmax(dim=1) == labels).sum()
        self.seen += labels.shape[0]
        self.seen_here += labels.shape[0]

    def first_bad_step(self) -> int | None:
        """The first step (0-based) whose loss was NaN or infinite, or None. Reads the device."""
        step = int(self.first_bad)
        return step if step >= 0 else None

    def postfix(self) -> dict:
        """What the bar shows: the running mean loss and the images/s of all ranks. Reads the device."""
        return {"loss": f"{self.loss_sum.item() / self.seen:.4f}",
                "img_s": f"{self.seen_here * self.world / (time.perf_counter() - self.start):.0f}"}

    def seconds(self) -> float:
        """Seconds spent in this epoch so far, those before a resume included."""
        return self.earlier + time.perf_counter() - self.start

    def position(self, model: nn.Module) -> list[dict]:
        """Every rank's part of a position at this step (a collective under torchrun)."""
        return rank_position(self.loss_sum, self.correct, self.seen, model, self.device, self.world)

    def result(self) -> dict:
        """The epoch's train_loss and train_acc over every rank's images (a collective under
        torchrun), and its images/s: the epoch's images over its training seconds, those before a
        resume included (a run resumed at an epoch's last step trains no image after it)."""
        totals = torch.stack([self.loss_sum, self.correct.double(),
                              torch.tensor(float(self.seen), device=self.device, dtype=torch.float64)])
        if self.world > 1:
            dist.all_reduce(totals)
        return {"train_loss": (totals[0] / totals[2]).item(), "train_acc": (totals[1] / totals[2]).item(),
                "images_per_s": self.seen * self.world / self.seconds()}
