"""TensorBoard event files in the run folder: watch a run live, and compare runs side by side.

    tensorboard --logdir runs          every run folder below runs/ is one run in TensorBoard

What is written (rank 0 only), all against the global training step (epoch × steps per epoch + step):
    train/loss            the mean training loss over the last EVERY steps, read when the trainer
                          already reads the loss (it syncs then anyway), so logging adds no host sync
    train/loss_epoch, train/acc, lr, images_per_s, and val/… test/… top1, top5, nll, ece: once per
                          epoch, at the epoch's last step
    hparams               the run's settings and its best-by-validation numbers, when the run ends,
                          so that TensorBoard's HParams tab compares grid rows
A resumed run continues the same curves: the writer is opened with `purge_step` just past the step
last.pt holds, so points a killed run wrote after its last checkpoint are dropped, not doubled.

`tensorboard` is a dependency; if it cannot be imported, the run goes on without event files and
says so in one line.
"""
from __future__ import annotations

import sys
from pathlib import Path

EVERY = 25    # steps between train/loss points: the trainer's own read interval on a GPU

EPOCH_TAGS = {"train_loss": "train/loss_epoch", "train_acc": "train/acc", "lr": "lr", "images_per_s": "images_per_s",
              **{f"{split}_{m}": f"{split}/{m}" for split in ("val", "test") for m in ("top1", "top5", "nll", "ece")}}


def _warn(line: str) -> None:
    print(f"cifar-hw2: {line}", file=sys.stderr, flush=True)


class RunBoard:
    """The event files of one run. Every method does nothing where no writer is open (other ranks,
    or tensorboard missing), so the trainer calls them unconditionally."""

    def __init__(self, out: Path, steps_per_epoch: int, resume_step: int, main: bool, say=None):
        self.writer, self.steps_per_epoch = None, steps_per_epoch
        self._last = None          # (step, loss sum, images) at the previous train/loss point
        self.points = 0            # train/loss points written (bench counts what its logged window wrote)
        if not main:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            (say or _warn)(f"no TensorBoard event files for this run ({e}); `pip install tensorboard` to get them")
            return
        # purge_step: TensorBoard drops the points at or after it that an earlier writer left
        self.writer = SummaryWriter(log_dir=str(out), purge_step=resume_step + 1 if resume_step else None)

    def global_step(self, epoch: int, step: int) -> int:
        """epoch 0-based, step = steps done in it."""
        return epoch * self.steps_per_epoch + step

    def train_loss(self, epoch: int, step: int, loss_sum, seen: int) -> None:
        """Called where the trainer reads its running loss sum (a 0-d tensor) anyway; reads it (one
        host sync, where the trainer syncs already) and writes a point every EVERY steps."""
        if self.writer is None:
            return
        g = self.global_step(epoch, step)
        last = self._last if self._last and self._last[0] < g and self._last[3] == epoch else None
        if last is None or g - last[0] >= EVERY:
            value = float(loss_sum)
            if last is not None and seen > last[2]:
                self.writer.add_scalar("train/loss", (value - last[1]) / (seen - last[2]), g)
                self.points += 1
            self._last = (g, value, seen, epoch)

    def epoch(self, row: dict) -> None:
        """The epoch's history row (runfolder.HISTORY_COLUMNS), at the epoch's last step."""
        if self.writer is None:
            return
        g = self.global_step(int(row["epoch"]), 0)
        for key, tag in EPOCH_TAGS.items():
            if row.get(key) is not None:
                self.writer.add_scalar(tag, float(row[key]), g)
        self.writer.flush()

    def finished(self, config: dict, best: dict) -> None:
        """The settings and the best-by-validation numbers, for the HParams tab."""
        if self.writer is None or best is None:
            return
        settings = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config.items()
                    if k not in ("out", "data")}
        self.writer.add_hparams(settings, {f"hparam/best_{k}": float(best[k]) for k in
                                           ("test_top1", "test_ece", "test_nll", "val_top1") if k in best},
                                run_name=".")    # into this run's folder, not a new one beside it

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
