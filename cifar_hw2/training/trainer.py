"""`fit(config) -> history`: the training loop with its evaluation, checkpoints and exact resume.

A run, as `fit` drives it:

    Trainer.setup     the splits, the model, the loss, the optimizer and schedule, the batches
      .resume         from last.pt: weights, optimizer, history, RNG states, the place inside an epoch
                      (then DDP and torch.compile wrap what the step calls)
    Trainer.run       config.json and the first line, then `_one_epoch` for each epoch left:
      .train_epoch    `Trainer.step` over the epoch's batches (it may stop inside: see below)
      .evaluate       validation (picks best.pt) and test (reported, never used to choose), fp32;
                      then the learning-rate schedule steps (once per epoch)
      .checkpoint     last.pt, then best.pt when validation improved
      .record         history.csv and metrics.json; then the epoch's line

What the run folder holds: runfolder.py. Processes and DDP: processes.py. Precision:
precision.py; backend switches and the compile cache: backends.py; compiling the step: compiled.py.

Exact resume: every epoch's randomness (batch order, augmentation, dropout, noise, MC masks) is
derived from (seed, epoch), so re-running an epoch after a crash gives the same numbers; last.pt
is written atomically after each epoch and also keeps the RNG states, the history and (fp16) the
loss scaler's state. It is also written inside an epoch (every `checkpoint_minutes`, and when a
signal or the time limit stops the run: stopping.py) with the position (runstate.py), so a
resumed run continues at that step with the same numbers. One run per out folder: folderlock.py.

Under `torchrun`, each process trains on its shard with DistributedDataParallel; rank 0 alone
writes files and progress.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import time
from pathlib import Path

import torch
import torch.distributed as dist

from ..augment import BatchNormalizeNoise
from ..batch_augment import BatchAugment
from ..data import NUM_CLASSES
from ..losses import NEEDS_FEATURES, build_loss
from ..metrics import classification_metrics, reliability, temperature_scaled
from ..models import build_model
from ..optim import build_optimizer
from ..schedule import build_scheduler
from .backends import backend_settings, use_inductor_cache
from .checkpoint import checkpoint_epoch, save_checkpoint, write_csv, write_json
from .compiled import (compile_errors, compile_for_training, compile_unavailable, eager, failure_line,
                       load_artifacts, save_artifacts, uncompile)
from .config import ConfigError, TrainConfig
from .folderlock import hold
from .loader import DeviceBatches, SeededBatchSampler, batch_seed, make_splits, make_train_loader, predict_logits
from .paths import shown_path
from .precision import choose_precision
from .processes import (Processes, average_buffers, convert_sync_batchnorm, gather_interleaved, init_processes,
                        pick_device, weights_digest, wrap_ddp)
from .progress import epoch_line, progress_mode, shown_epoch
from .runfolder import HISTORY_COLUMNS, check_out_folder, config_record, metrics_record, prepare_out, settings_changed
from .runstate import check_world, host_rng, rank_position, restore_host_rng, restore_rank
from .stopping import RunStopped, StopControl, signal_name, where_in_run

# Re-exported: code written against the one-module trainer imports these from here. Other names it
# merely imported (load_cifar100, epoch_bar, ...) are no longer here: import them from their modules.
__all__ = ["Trainer", "fit", "NonFiniteLossError", "RunFileError", "RunStopped", "make_splits", "temperature_scaled",
           "HISTORY_COLUMNS", "pick_device", "prepare_out", "settings_changed", "Processes"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


class RunFileError(RuntimeError):
    """A file of the run folder could not be written (a full disk, ...); the last good checkpoint is kept."""


class _StopHere(Exception):
    """Raised inside the loop where a stop was decided; run() turns it into the line and the outcome."""

    def __init__(self, decision, epoch: int, step: int, total: int):
        super().__init__()
        self.decision, self.epoch, self.step, self.total = decision, epoch, step, total


DEFAULT_RESUME = "fit() again with resume=True (notebook 04: run it again; resume = True is its default)"


class Trainer:
    def __init__(self, cfg: TrainConfig, procs: Processes, resume_command: str | None = None):
        self.cfg, self.procs = cfg, procs
        self.resume_command = resume_command or DEFAULT_RESUME
        self.out = Path(cfg.out)
        self.device = pick_device(cfg.device, procs.local_rank)
        cuda = self.device.type == "cuda"
        self.precision = choose_precision(cfg.precision, self.device)
        self.autocast = self.precision.autocast     # a fresh context manager per call
        # channels_last only where it pays (CUDA); the CPU path stays plain.
        self.memory_format = torch.channels_last if (cuda and cfg.channels_last) else torch.contiguous_format
        # reduce-overhead / max-autotune replay CUDA graphs: each step must say a new one begins.
        self.graphed = cfg.compile and cuda and cfg.compile_mode in ("reduce-overhead", "max-autotune")
        self.compile_backend = "inductor"   # tests set "aot_eager" (no C++ compile on the CPU)
        if cfg.batch_size % procs.world:
            raise ConfigError(f"batch_size {cfg.batch_size} must be divisible by the {procs.world} processes")
        # Signals and the test hook only; fit() gives a run its checkpoint timer and time limit
        # (bench drives train_epoch too, and must never write a checkpoint).
        self.stop = StopControl(world=procs.world, device=self.device, rank=procs.rank, out=str(self.out))
        self.saved: tuple[int, int] | None = None   # (epochs done, steps into the next) of the last last.pt
        self.show = progress_mode(cfg.progress) if procs.main else "off"   # bar / epoch / off: what is printed

    # ---- setup
    def setup(self, state: dict | None) -> None:
        """Build the run's parts; with `state` (last.pt's), continue from where it stopped."""
        self.train_split, self.val_split, self.test_split = make_splits(self.cfg)
        self._build_model()
        self._build_batches()
        self.history: list[dict] = []
        self.best: dict | None = None
        self.calibration: dict = {}  # reliability bins of the test split, final and best epoch
        self.start_epoch = 0
        self.position = None        # where last.pt stopped inside an epoch, if it did
        if state is not None:
            self.resume(state)
        self._wrap_for_training()

    def _build_model(self) -> None:
        """The model (the same initial weights on every rank and every run), its loss and optimizer."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model, NUM_CLASSES, pretrained=cfg.pretrained,
                                 upsample_mode=cfg.upsample_mode)
        self.model.to(self.device, memory_format=self.memory_format)
        self.synced = self.procs.world > 1 and self.device.type == "cuda"
        if self.synced:
            # BatchNorm statistics over the global batch, as on one GPU (needs NCCL; not on CPU).
            self.model = convert_sync_batchnorm(self.model)
        self.loss_fn = build_loss(cfg.loss, num_classes=NUM_CLASSES, **cfg.loss_kwargs())
        self.needs_features = cfg.loss in NEEDS_FEATURES
        self.optimizer = build_optimizer(cfg.optimizer, self.model, cfg.lr, cfg.weight_decay,
                                         cfg.momentum, self.device.type)
        self.scheduler = build_scheduler(cfg.schedule, self.optimizer, cfg.lr_decay, cfg.lr_period)
        self.scaler = self.precision.make_scaler()          # fp16 only
        # Steps the scaler skipped (inf/NaN gradients in fp16), on the device: no sync per step.
        self.skipped_steps = torch.zeros((), device=self.device, dtype=torch.long)

    def _build_batches(self) -> None:
        """This process's training batches, augmented on the device or in loader workers."""
        cfg, procs = self.cfg, self.procs
        # Normalisation (and, in training, noise) always runs on the device, per batch.
        self.augment = BatchNormalizeNoise(cfg.noise_p, cfg.noise_std).to(self.device)
        # auto: the batched device path wherever it is measured (benchmarks/RESULTS.md): on CUDA
        # and on the CPU, where it is also faster than loader workers. MPS keeps the loader path.
        self.augment_on = cfg.augment_on if cfg.augment_on != "auto" else (
            "device" if self.device.type in ("cuda", "cpu") else "loader")
        per_process = cfg.batch_size // procs.world
        if self.augment_on == "device":
            # Flip, rotation and AutoAugment too, per sample, in batches: the data never leaves the device.
            batch_augment = BatchAugment(cfg.flip, cfg.rotation, cfg.autoaugment).to(self.device)
            self.sampler = SeededBatchSampler(len(self.train_split), per_process, cfg.seed, procs.rank, procs.world)
            self.loader = DeviceBatches(self.train_split, self.sampler, self.device, batch_augment)
        else:
            self.loader, self.sampler = make_train_loader(
                self.train_split, per_process, cfg.seed, flip=cfg.flip, rotation=cfg.rotation,
                autoaugment=cfg.autoaugment, rank=procs.rank, world_size=procs.world, workers=cfg.workers,
                pin_memory=self.device.type == "cuda")

    def _wrap_for_training(self) -> None:
        """What the step calls: the model, under torchrun its DDP wrapper, compiled if asked."""
        self.train_model = self.model
        if self.procs.world > 1:
            # DDP first, then compile: the compiler's DDP support then overlaps the gradient
            # all-reduce with backward. SyncBatchNorm already syncs the statistics every step, so
            # DDP need not broadcast the buffers as well.
            self.train_model = wrap_ddp(self.model, self.device, broadcast_buffers=not self.synced)
        self.eager_train_model = self.train_model
        self.compile_cache = self.compiled = None
        self.compile_warm = False       # portable cache artifacts were loaded before compiling
        self.warmup_seconds: float | None = None   # the first compiled step, measured once
        if self.cfg.compile:
            self._compile()

    def _compile(self) -> None:
        """torch.compile per cfg (compiled.py). Where it cannot run, say so in one line and train eager."""
        why_not = compile_unavailable(self.device)
        if why_not:
            return self._compile_failed(why_not)
        self.compile_cache = str(use_inductor_cache())
        self.compile_warm = load_artifacts(self.out)
        self.train_model, self.compiled = compile_for_training(self.model, self.train_model, self.cfg.compile_scope,
                                                               self.cfg.compile_mode, self.compile_backend)

    def _compile_failed(self, why: str) -> None:
        uncompile(self.model)
        self.train_model, self.graphed, self.compiled = self.eager_train_model, False, None
        self.warmup_seconds = 0.0
        if self.procs.main:
            print(f"torch.compile is not available here ({why}); training continues eager", flush=True)

    # ---- resume
    def resume(self, state: dict) -> None:
        """Continue from last.pt: weights, optimizer, schedule, history, best epoch, RNG states, and
        the place inside an epoch where it stopped, if it did (runstate.py)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.history, self.best, self.start_epoch = state["history"], state["best"], state["epoch"]
        self.calibration = state["calibration"]
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.skipped_steps.fill_(state.get("skipped_steps", 0))
        restore_host_rng(state["rng"])
        self.position = state.get("position")
        self.saved = (self.start_epoch, self.position["step"] if self.position else 0)
        check_world(self.position, self.procs.world, str(self.out / "last.pt"))

    # ---- one step: what the loop, bench and the CUDA-graph replay all run
    def step(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step on a batch on the device, already normalised ([B, 3, 32, 32]
        in the model's memory format): forward under the run's autocast, loss, backward,
        optimizer step. Returns the loss (scalar) and the logits [B, K], detached.

        The epoch loop, `bench` and the CUDA-graph replay (compile_mode reduce-overhead) all run
        this. The train loader drops the last partial batch, so every step sees one shape and a
        graph captured for it is replayed every step; evaluation runs the eager model and handles
        its short last batch there. In fp16 a step whose gradients overflow is skipped by the
        scaler (the weights do not move) and counted in `skipped_steps`."""
        if self.graphed:
            torch.compiler.cudagraph_mark_step_begin()
        with self.autocast():
            if self.needs_features:
                logits, feats = self.train_model(x, return_features=True)
                loss = self.loss_fn(logits, labels, feats)
            else:
                logits = self.train_model(x)
                loss = self.loss_fn(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)       # skipped if any gradient is inf/NaN
            # update() lowers the scale exactly when this step was skipped. `_scale` is the
            # scaler's device tensor; reading it keeps the count on the device (get_scale syncs).
            before = self.scaler._scale.clone()
            self.scaler.update()
            self.skipped_steps += (self.scaler._scale < before).long()
        return loss.detach(), logits.detach()

    # ---- train one epoch
    def train_epoch(self, epoch: int, bar, max_steps: int | None = None, position: dict | None = None) -> dict:
        """Train one epoch; `position` (last.pt's, written inside this epoch) continues it at its step.

        Every `refresh` steps (each step on the CPU, every 25 on a GPU, where it syncs anyway) it
        checks the loss is finite, updates the bar, and asks `stop` whether to checkpoint here or
        stop; a stop raises _StopHere after last.pt is written at this step."""
        cfg, dev = self.cfg, self.device
        self.train_model.train()
        loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        first_bad = torch.full((), -1, device=dev, dtype=torch.long)
        first = position["step"] if position else 0
        seen, seen_here, start = 0, 0, time.perf_counter()
        refresh = 1 if dev.type == "cpu" else 25   # a host sync only every few steps on a GPU
        self.sampler.set_epoch(epoch, first)
        batches = iter(self.loader)
        # Dropout, noise and MC masks in this process draw from a stream fixed by (seed, epoch, rank).
        # Seeded after iter(): a new loader iterator draws from this RNG, a persistent one does not.
        torch.manual_seed(batch_seed(cfg.seed, epoch, -1 - self.procs.rank))
        if position:
            seen = restore_rank(position, self.procs.rank, self.model, loss_sum, correct, dev)
            if bar is not None:
                bar.update(first)
        total = len(self.loader) if max_steps is None else min(max_steps, len(self.loader))
        # islice: never fetch a batch past the last step (on the device path that would augment a
        # whole chunk no step trains on). A resumed epoch's loader starts at step `first`.
        for step, (images, labels) in enumerate(itertools.islice(batches, max(total - first, 0)), start=first):
            images = images.to(dev, non_blocking=True)
            labels = labels.to(dev, non_blocking=True)
            x = self.augment(images).contiguous(memory_format=self.memory_format)
            loss, logits = self.timed_step(x, labels)
            # Metrics stay on the device; no .item() per step.
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
            loss_sum += loss.double() * labels.shape[0]
            correct += (logits.argmax(dim=1) == labels).sum()
            seen += labels.shape[0]
            seen_here += labels.shape[0]
            self.stop.test_hook(epoch, step + 1)
            if (step + 1) % refresh == 0 or step + 1 == total:
                self._check_finite(first_bad, epoch)
                if bar is not None:
                    bar.update(step + 1 - bar.n)
                    # refresh=False: drawn at the bar's next rate-limited redraw (progress.py).
                    bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}",
                                    img_s=f"{seen_here * self.procs.world / (time.perf_counter() - start):.0f}",
                                    refresh=False)
                decision = self.stop.poll()     # the same on every rank (a collective under torchrun)
                if decision.checkpoint or decision.stop:
                    spent = (position["seconds"] if position else 0.0) + time.perf_counter() - start
                    self._checkpoint_inside(epoch, step + 1, loss_sum, correct, seen, spent)
                if decision.stop:
                    raise _StopHere(decision, epoch, step + 1, total)
        self._check_finite(first_bad, epoch)
        if self.procs.world > 1:
            average_buffers(self.model, self.procs.world)
        totals = torch.stack([loss_sum, correct.double(), torch.tensor(float(seen), device=dev, dtype=torch.float64)])
        if self.procs.world > 1:
            dist.all_reduce(totals)
        seconds = time.perf_counter() - start
        return {"train_loss": (totals[0] / totals[2]).item(), "train_acc": (totals[1] / totals[2]).item(),
                "images_per_s": seen_here * self.procs.world / seconds}

    def timed_step(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`step`; the first compiled one is timed (it compiles) and falls back to eager on failure."""
        if self.warmup_seconds is None and self.cfg.compile:
            return self._timed_first_step(x, labels)
        return self.step(x, labels)

    def _timed_first_step(self, x, labels):
        """The first compiled step compiles (or loads from the cache): time it and say so. If
        compiling fails (no C++ compiler or Triton, an unsupported GPU), say so in one line and
        redo the step eager (a failure in backward leaves this batch's BatchNorm statistics
        counted once more: negligible)."""
        start = time.perf_counter()
        try:
            out = self.step(x, labels)
        except compile_errors() as e:
            self._compile_failed(failure_line(e))
            return self.step(x, labels)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.warmup_seconds = time.perf_counter() - start
        saved = save_artifacts(self.out) if self.procs.main else None
        start_kind = "warm, from the artifacts beside the run" if self.compile_warm else "cache folder"
        self._say(f"torch.compile ({self.cfg.compile_mode}, {self.compiled}) warm-up: {self.warmup_seconds:.1f} s "
                  f"for the first step ({start_kind}: {self.compile_cache}"
                  + (f"; artifacts saved to {saved}" if saved else "") + ")")
        return out

    def _check_finite(self, first_bad: torch.Tensor, epoch: int) -> None:
        step = int(first_bad)
        if step >= 0:
            kept = (f"the last good checkpoint {self.out / 'last.pt'} ({self._where(*self.saved)})"
                    if self.saved is not None else "no checkpoint was written yet")
            raise NonFiniteLossError(f"the loss became NaN or infinite at epoch {epoch + 1}, step {step + 1}; "
                                     f"the run stopped. Kept {kept}. Try a lower --lr.")

    # ---- evaluate
    def predict(self, split) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [N, K] (float32, CPU) in the split's order, and labels [N].

        fp32 and eager, as `evaluate` computes them (experiments/evaluate.py, predict), so a
        checkpoint has one set of calibration numbers (ECE, NLL, temperatures), not a bf16 one from
        training and an fp32 one from evaluate. Compiled regions run eager here: no graph for eval
        mode or for the short last batch."""
        with eager() if self.cfg.compile else contextlib.nullcontext():
            logits = predict_logits(self.model, split, self.device, self.cfg.eval_batch_size, self.augment,
                                    memory_format=self.memory_format, rank=self.procs.rank,
                                    world_size=self.procs.world)
        if self.procs.world > 1:
            logits = gather_interleaved(logits.to(self.device), len(split), self.procs.world).cpu()
        return logits, split.labels

    def evaluate(self) -> tuple[dict, dict]:
        """Metrics of this epoch, and the test reliability bins before/after temperature scaling."""
        val_logits, val_y = self.predict(self.val_split)
        test_logits, test_y = self.predict(self.test_split)
        row = {f"val_{k}": v for k, v in classification_metrics(val_logits, val_y).items()}
        row.update({f"test_{k}": v for k, v in classification_metrics(test_logits, test_y).items()})
        calib, scaled = temperature_scaled(val_logits, val_y, test_logits, test_y)
        row["temperature"], row["test_ece_ts"] = calib["temperature"], calib["ece_ts"]
        row["temperature_ece"], row["test_ece_ts_ece"] = calib["temperature_ece"], calib["ece_ts_ece"]
        bins = {"before": reliability(test_logits, test_y).to_dict(),
                "after_ts": reliability(scaled, test_y).to_dict()}
        return row, bins

    # ---- the loop
    def run(self) -> list[dict]:
        """Train the remaining epochs. Stopped by a signal: raises RunStopped (last.pt holds the
        position). Stopped by the time limit: returns the history so far (both print one line)."""
        cfg, procs = self.cfg, self.procs
        self.finished = False
        if procs.main:
            self.out.mkdir(parents=True, exist_ok=True)
            self._write(self.out / "config.json", write_json, self._config_record())
            if self.history:  # a resumed run: files derived from the checkpoint are rewritten first
                self.record()
                self._repair_best()
        procs.barrier()
        self._say(self.first_line())
        if self.start_epoch >= cfg.epochs:
            self._say(f"{shown_path(self.out)}: all {cfg.epochs} epochs are done already.")
        elif self.saved:
            self._say(f"{shown_path(self.out)}: resuming {self._where(*self.saved, len(self.loader))}.")
        try:
            for epoch in range(self.start_epoch, cfg.epochs):
                self._one_epoch(epoch)
        except _StopHere as stop:
            return self._stopped(stop)
        self.finished = True
        return self.history

    def _one_epoch(self, epoch: int) -> None:
        """Train, evaluate, checkpoint, record; then stop here if a signal came during evaluation."""
        position = self.position if self.position and self.position["epoch"] == epoch else None
        self.position = None
        start = time.perf_counter()
        row = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
        with shown_epoch(len(self.loader), f"epoch {epoch + 1}/{self.cfg.epochs}", self.show) as bar:
            row.update(self.train_epoch(epoch, bar, position=position))
        self.stop.test_hook(epoch, "eval")
        metrics, bins = self.evaluate()
        row.update(metrics, seconds=time.perf_counter() - start + (position["seconds"] if position else 0.0))
        self.scheduler.step()
        improved = self._add_to_history({k: row[k] for k in HISTORY_COLUMNS}, bins)
        self.checkpoint(epoch + 1, improved)
        if self.procs.main:
            self.record()
            self._say(epoch_line(self.history[-1], self.cfg.epochs) + self._skipped_note())
        self.stop.checkpointed()
        self.procs.barrier()
        if epoch + 1 < self.cfg.epochs:
            decision = self.stop.poll()     # a signal during the evaluation stops here
            if decision.stop:
                raise _StopHere(decision, epoch + 1, 0, len(self.loader))

    def _add_to_history(self, row: dict, bins: dict) -> bool:
        """The epoch's row and reliability bins; True when validation top-1 improved (the best epoch)."""
        self.history.append(row)
        improved = self.best is None or row["val_top1"] > self.best["val_top1"]
        self.calibration["final"] = bins
        if improved:
            self.best = dict(row)
            self.calibration["best"] = bins
        return improved

    # ---- checkpoint
    def checkpoint(self, epochs_done: int, improved: bool) -> None:
        """last.pt after an epoch, then best.pt when this epoch is the best by validation (rank 0).
        last.pt first: if the second write fails, last.pt's own weights are the best epoch's, and a
        resume rewrites best.pt from them (_repair_best)."""
        if self.procs.main:
            self._write(self.out / "last.pt", save_checkpoint, self._state(epochs_done))
            self.saved = (epochs_done, 0)     # what a failed best.pt write below says is kept
            if improved:
                self._write(self.out / "best.pt", save_checkpoint, self._state(epochs_done, weights_only=True))
        self.saved = (epochs_done, 0)

    def _checkpoint_inside(self, epoch: int, step: int, loss_sum, correct, seen: int, seconds: float) -> None:
        """last.pt at `step` steps into `epoch` (0-based): the model and optimizer as after that step,
        and each rank's part of the position (runstate.py). Every rank takes part; rank 0 writes."""
        ranks = rank_position(loss_sum, correct, seen, self.model, self.device, self.procs.world)
        position = {"epoch": epoch, "step": step, "world": self.procs.world, "seconds": seconds, "ranks": ranks}
        if self.procs.main:
            self._write(self.out / "last.pt", save_checkpoint, self._state(epoch, position=position))
        self.saved = (epoch, step)
        self.stop.checkpointed()

    def _state(self, epochs_done: int, weights_only: bool = False, position: dict | None = None) -> dict:
        """What last.pt (everything to resume) or best.pt (`weights_only`) holds."""
        state = {"model_name": self.cfg.model, "num_classes": NUM_CLASSES, "epoch": epochs_done,
                 "config": self.cfg.to_dict(), "model": self.model.state_dict()}
        if not weights_only:
            state.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                         history=self.history, best=self.best, calibration=self.calibration, rng=host_rng())
            if self.scaler is not None:
                state.update(scaler=self.scaler.state_dict(), skipped_steps=int(self.skipped_steps))
            if position is not None:
                state["position"] = position
        return state

    def _repair_best(self) -> None:
        """A run that ended between writing last.pt and best.pt (a full disk, a kill) left best.pt a
        step behind; the best epoch is then last.pt's own, whose weights it holds."""
        if (self.position is None and self.best is not None and self.best["epoch"] == self.start_epoch
                and checkpoint_epoch(self.out / "best.pt") != self.start_epoch):
            self._write(self.out / "best.pt", save_checkpoint, self._state(self.start_epoch, weights_only=True))

    # ---- record
    def record(self) -> None:
        """history.csv and metrics.json from the history so far. Rank 0 alone calls it (the other
        ranks hold the same history but write nothing)."""
        self._write(self.out / "history.csv", write_csv, self.history)
        self._write(self.out / "metrics.json", write_json,
                    metrics_record(self.history, self.best, self.cfg.epochs, self.calibration))

    def _config_record(self) -> dict:
        return config_record(
            self.cfg, device=str(self.device), world_size=self.procs.world, augment_on=self.augment_on,
            precision=self.precision.to_dict(), backends=getattr(self, "backends", None),
            compile_cache=self.compile_cache,
            data_sizes={"train": len(self.train_split), "val": len(self.val_split), "test": len(self.test_split)})

    def _write(self, path: Path, write, *args) -> None:
        """One file of the run folder, atomically; a failure (a full disk) is one line that says
        what is kept and how to go on. The old file is intact, and no temp file is left."""
        try:
            write(path, *args)
        except OSError as e:
            raise RunFileError(f"could not write {path}: {e.strerror or e}. {self._kept()}; free space or "
                               f"fix the folder, then resume: {self.resume_command}") from None

    # ---- what the run says
    def first_line(self) -> str:
        """What this run picked and why, printed first (config.json holds the same)."""
        cfg = self.cfg
        compiled = f"compile {cfg.compile_mode}" if cfg.compile else "eager"
        return (f"{shown_path(self.out)}: {self.device}, precision {self.precision.name} ({self.precision.reason}), "
                f"{compiled}, deterministic {'on' if cfg.deterministic else 'off'}, {self.procs.world} process(es)")

    def _say(self, line: str) -> None:
        if self.show != "off":
            print(line, flush=True)

    def _where(self, epochs_done: int, step: int, total: int | None = None) -> str:
        return where_in_run(epochs_done, step, self.cfg.epochs, total)

    def _kept(self) -> str:
        if self.saved is None:
            return "No checkpoint was written yet"
        return f"The last good checkpoint {self.out / 'last.pt'} ({self._where(*self.saved)}) is kept"

    def _skipped_note(self) -> str:
        return f"  {int(self.skipped_steps)} fp16 steps skipped so far" if self.scaler is not None else ""

    def _stopped(self, stop: _StopHere) -> list[dict]:
        place = self._where(stop.epoch, stop.step, stop.total)
        if stop.decision.signum is not None:
            line = (f"{shown_path(self.out)}: stopped by {signal_name(stop.decision.signum)} {place}; last.pt holds that "
                    f"position. Resume with: {self.resume_command}")
        else:
            line = (f"{shown_path(self.out)}: time limit of {self.cfg.time_limit:g} h reached {place}; last.pt saved there. "
                    f"Resume to continue: {self.resume_command}")
        if self.procs.main:
            print(line, flush=True)
        if stop.decision.signum is not None:
            raise RunStopped(line, stop.decision.signum)
        return self.history

    def weights_digest(self) -> str:
        return weights_digest(self.model)


def fit(config: TrainConfig, resume_command: str | None = None) -> list[dict]:
    """Train and evaluate per `config`; returns the history (one dict per epoch). `resume_command`:
    what the stop line tells a user to run (the CLI passes the command line with --resume)."""
    cfg = config.validate()
    procs = init_processes(cfg.device)
    try:
        with contextlib.ExitStack() as held:
            # Before any data is loaded: the folder can be written, and no other run holds it.
            error = None
            if procs.main:
                try:
                    check_out_folder(cfg.out)
                    held.enter_context(hold(cfg.out))
                except ConfigError as e:
                    error = e
            error = procs.share(error)
            if error is not None:
                raise error
            trainer = Trainer(cfg, procs, resume_command)
            trainer.stop = StopControl(cfg.checkpoint_minutes, cfg.time_limit, procs.world, trainer.device,
                                       procs.rank, cfg.out)
            state = prepare_out(cfg, procs)
            with backend_settings(trainer.device, cfg.deterministic, cfg.tf32) as trainer.backends, \
                    trainer.stop.installed():
                trainer.setup(state)
                history = trainer.run()
            if procs.world > 1 and trainer.finished:
                digests = [None] * procs.world
                dist.all_gather_object(digests, trainer.weights_digest())
                if procs.main:
                    record = json.loads((trainer.out / "metrics.json").read_text())
                    record["distributed"] = {"world_size": procs.world, "weights_sha256": digests,
                                             "identical": len(set(digests)) == 1}
                    trainer._write(trainer.out / "metrics.json", write_json, record)
            return history
    finally:
        if procs.started_here and dist.is_initialized():
            dist.destroy_process_group()
