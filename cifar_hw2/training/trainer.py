"""`fit(config) -> history`: the training loop with its evaluation, checkpoints and exact resume.

A run, as `fit` drives it:

    Trainer.setup       the splits, the model, the loss, the optimizer and schedule, the batches
      .resume           from last.pt: weights, optimizer, history, RNG states, the place inside an epoch
                        (then DDP and torch.compile wrap what the step calls)
    Trainer.run         config.json and the first line, then `_one_epoch` for each epoch left:
      .train_epoch      `Trainer.step` over the epoch's batches (it may stop inside: see below)
      .evaluate         validation (picks best.pt) and test (reported, never used to choose), fp32;
                        then the learning-rate schedule steps (once per epoch)
      save_after_epoch  last.pt, then best.pt when validation improved
      .record           a best epoch's predictions.npz, history.csv and metrics.json; the epoch's line

Checkpoints (what they hold, when they are written): runstate.py. The run folder: runfolder.py. An
epoch's running totals: tally.py; its evaluation: evaluation.py. Processes and DDP: processes.py.
Precision: precision.py; backend switches and the compile cache: backends.py; compiling the step:
compiled.py. What a stopped run says: stopping.py.

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

import itertools
import time
from pathlib import Path

import torch
import torch.distributed as dist

from ..augment import BatchNormalizeNoise
from ..data import NUM_CLASSES, data_root
from ..losses import NEEDS_FEATURES, build_loss
from ..models import build_model
from ..optim import build_optimizer
from ..schedule import build_scheduler
from .backends import backend_settings
from .checkpoint import write_json
from .compiled import Compilation
from .config import ConfigError, TrainConfig
from .naming import setting
from .evaluation import epoch_metrics, split_logits
from .loader import batch_seed, make_splits, train_batches
from .paths import shown_path
from .precision import choose_precision, scaled_step
from .predictions import FILENAME as PREDICTIONS, write_predictions
from .processes import Processes, average_buffers, convert_sync_batchnorm, init_processes, pick_device, wrap_ddp
from .progress import epoch_line, progress_mode, shown_epoch
from .runfolder import HISTORY_COLUMNS, RunFiles, claimed, closing_lines, config_record, prepare_out, replace_run
from .runstate import repair_best, restore_trainer, save_after_epoch, save_inside, step_schedule
from .stopping import DEFAULT_RESUME, RunStopped, StopControl, StopHere, resume_line, stop_line
from .tally import EpochTally
from .tensorboard import RunBoard


class NonFiniteLossError(RuntimeError):
    """The loss, or the model's outputs, became NaN or infinite; the run stopped and kept its last good
    checkpoint."""


class Trainer:
    def __init__(self, cfg: TrainConfig, procs: Processes, resume_command: str | None = None):
        self.cfg, self.procs = cfg, procs
        self.out = Path(cfg.out)
        self.device = pick_device(cfg.device, procs.local_rank)
        self.precision = choose_precision(cfg.precision, self.device)
        self.autocast = self.precision.autocast     # a fresh context manager per call
        # channels_last only where it pays (CUDA); the CPU path stays plain.
        self.memory_format = (torch.channels_last if (self.device.type == "cuda" and cfg.channels_last)
                              else torch.contiguous_format)
        self.compilation = (Compilation(cfg.compile_mode, cfg.compile_scope, self.device, self.out, procs.main,
                                        resuming=cfg.resume) if cfg.compile else None)
        if cfg.batch_size % procs.world:
            raise ConfigError(f"{setting('batch_size')} {cfg.batch_size} must be divisible by the {procs.world} "
                              f"processes")
        # Signals and the test hook only; fit() gives a run its checkpoint timer and time limit
        # (bench drives train_epoch too, and must never write a checkpoint).
        self.stop = StopControl(world=procs.world, device=self.device, rank=procs.rank, out=str(self.out))
        self.files = RunFiles(self.out, cfg.epochs, resume_command or DEFAULT_RESUME)
        self.show = progress_mode(cfg.progress) if procs.main else "off"   # bar / epoch / off: what is printed
        self.board = RunBoard(self.out, 1, 0, main=False)   # no event files until run() opens them (bench never does)

    # ---- setup
    def setup(self, state: dict | None) -> None:
        """Build the run's parts; with `state` (last.pt's), continue from where it stopped."""
        self.train_split, self.val_split, self.test_split = make_splits(self.cfg)
        self._build_model()
        # Normalisation (and, in training, noise) always runs on the device, per batch.
        self.augment = BatchNormalizeNoise(self.cfg.noise_p, self.cfg.noise_std).to(self.device)
        self.augment_on, self.loader, self.sampler = train_batches(self.cfg, self.train_split, self.device,
                                                                   self.procs.rank, self.procs.world)
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

    def _wrap_for_training(self) -> None:
        """What the step calls: the model, under torchrun its DDP wrapper, compiled if asked."""
        self.train_model = self.model
        if self.procs.world > 1:
            # DDP first, then compile: the compiler's DDP support then overlaps the gradient
            # all-reduce with backward. SyncBatchNorm already syncs the statistics every step, so
            # DDP need not broadcast the buffers as well.
            self.train_model = wrap_ddp(self.model, self.device, broadcast_buffers=not self.synced)
        if self.compilation is not None:
            self.train_model = self.compilation.wrap(self.model, self.train_model)

    # ---- resume
    def resume(self, state: dict) -> None:
        """Continue from last.pt: weights, optimizer, schedule, history, best epoch, RNG states, and
        the place inside an epoch where it stopped, if it did (runstate.py)."""
        restore_trainer(self, state)

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
        if self.compilation is not None and self.compilation.graphed:
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
            self.skipped_steps += scaled_step(self.scaler, loss, self.optimizer)   # on the device: no sync
        return loss.detach(), logits.detach()

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """A uint8 batch on the device as the model takes it: normalised, noised (in training), in
        the model's memory format. What the epoch loop, bench and the sync check feed `step`."""
        return self.augment(images).contiguous(memory_format=self.memory_format)

    def timed_step(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`step`; the first compiled one compiles: it is timed, and falls back to eager on failure."""
        if self.compilation is None or self.compilation.seconds is not None:
            return self.step(x, labels)
        out = self.compilation.first_step(lambda: self.step(x, labels), self._say)
        if out is None:     # compiling failed (compiled.py said so): this step again, eager as all after it
            self.train_model = self.compilation.eager_model
            out = self.step(x, labels)
        return out

    # ---- train one epoch
    def train_epoch(self, epoch: int, bar, max_steps: int | None = None, position: dict | None = None) -> dict:
        """Train one epoch; `position` (last.pt's, written inside this epoch) continues it at its step.

        Every `refresh` steps (each step on the CPU, every 25 on a GPU, where it syncs anyway) it
        checks the loss is finite, updates the bar, and asks `stop` whether to checkpoint here or
        stop; a stop raises StopHere after last.pt is written at this step."""
        dev = self.device
        self.train_model.train()
        tally = EpochTally(dev, self.procs.world, position)
        first = position["step"] if position else 0
        batches = self._epoch_batches(epoch, first)
        if position:
            tally.restore(position, self.procs.rank, self.model)
            if bar is not None:
                bar.update(first)
        total = len(self.loader) if max_steps is None else min(max_steps, len(self.loader))
        refresh = 1 if dev.type == "cpu" else 25   # a host sync only every few steps on a GPU
        # islice: never fetch a batch past the last step (on the device path that would augment a
        # whole chunk no step trains on). A resumed epoch's loader starts at step `first`.
        for step, (images, labels) in enumerate(itertools.islice(batches, max(total - first, 0)), start=first):
            images, labels = images.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
            loss, logits = self.timed_step(self.inputs(images), labels)
            tally.add(step, loss, logits, labels)
            self.stop.test_hook(epoch, step + 1)
            if (step + 1) % refresh == 0 or step + 1 == total:
                self._refresh(epoch, step + 1, total, tally, bar)
        self._check_finite(tally, epoch)
        if self.procs.world > 1:
            average_buffers(self.model, self.procs.world)
        return tally.result()

    def _epoch_batches(self, epoch: int, first: int):
        """The epoch's batches from step `first` on, and this process's random stream for the epoch."""
        self.sampler.set_epoch(epoch, first)
        batches = iter(self.loader)
        # Dropout, noise and MC masks in this process draw from a stream fixed by (seed, epoch, rank).
        # Seeded after iter(): a new loader iterator draws from this RNG, a persistent one does not.
        torch.manual_seed(batch_seed(self.cfg.seed, epoch, -1 - self.procs.rank))
        return batches

    def _refresh(self, epoch: int, done: int, total: int, tally: EpochTally, bar) -> None:
        """A refresh point, `done` steps into `epoch`: check the loss, log and show it, and
        checkpoint or stop here when `stop` says so."""
        self._check_finite(tally, epoch)
        self.board.train_loss(epoch, done, tally.loss_sum, tally.seen)
        if bar is not None:
            bar.update(done - bar.n)
            # refresh=False: drawn at the bar's next rate-limited redraw (progress.py).
            bar.set_postfix(**tally.postfix(), refresh=False)
        decision = self.stop.poll()     # the same on every rank (a collective under torchrun)
        if decision.checkpoint or decision.stop:
            save_inside(self, epoch, done, tally.seconds(), tally.position(self.model))
        if decision.stop:
            raise StopHere(decision, epoch, done, total)

    def _check_finite(self, tally: EpochTally, epoch: int) -> None:
        step = tally.first_bad_step()
        if step is not None:
            raise NonFiniteLossError(f"the loss became NaN or infinite at epoch {epoch + 1}, step {step + 1}; "
                                     f"the run stopped. {self.files.kept()}. Try a lower --lr.")

    # ---- evaluate
    def predict(self, split) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [N, K] (float32, CPU) in the split's order, and labels [N]; fp32 and eager (evaluation.py)."""
        return split_logits(self.model, split, self.device, self.cfg.eval_batch_size, self.augment,
                            self.memory_format, self.procs, compiled=self.cfg.compile)

    def evaluate(self) -> tuple[dict, dict]:
        """Metrics of this epoch, and the test reliability bins before/after temperature scaling."""
        val_logits, val_y = self.predict(self.val_split)
        test_logits, test_y = self.predict(self.test_split)
        if not (torch.isfinite(val_logits).all() and torch.isfinite(test_logits).all()):
            # finite training losses, yet outputs that overflow in evaluation (a BatchNorm statistic, say)
            raise NonFiniteLossError(f"the model's outputs became NaN or infinite in this epoch's evaluation; the "
                                     f"run stopped. {self.files.kept()}. Try a lower --lr.")
        self.logits = (val_logits, test_logits)   # for predictions.npz, when this epoch is the best
        return epoch_metrics(val_logits, val_y, test_logits, test_y)

    # ---- the loop
    def run(self) -> list[dict]:
        """Train the remaining epochs. Stopped by a signal: raises RunStopped (last.pt holds the
        position). Stopped by the time limit: returns the history so far (both print one line)."""
        cfg, procs = self.cfg, self.procs
        if procs.main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.files.write("config.json", write_json, self._config_record())
            if self.history:  # a resumed run: files derived from the checkpoint are rewritten first
                self.files.record(self.history, self.best, self.calibration)
                repair_best(self)
        procs.barrier()
        self._say(self.first_line())
        resuming = resume_line(self.out, self.files.saved, cfg.epochs, len(self.loader))
        if resuming is not None:
            self._say(resuming)
        resumed_at = self.start_epoch * len(self.loader) + (self.position["step"] if self.position else 0)
        self.board = RunBoard(self.out, len(self.loader), resumed_at, procs.main)
        try:
            for epoch in range(self.start_epoch, cfg.epochs):
                self._one_epoch(epoch)
        except StopHere as stop:
            return self._stopped(stop)
        finally:
            self.board.close()
        if self.history and self.start_epoch < cfg.epochs:
            self._say(closing_lines(self.out, self.best, cfg.epochs))
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
        step_schedule(self, position)
        improved = self._add_to_history({k: row[k] for k in HISTORY_COLUMNS}, bins)
        save_after_epoch(self, epoch + 1, improved)
        if self.procs.main:
            self.record(epoch, improved)
        self.stop.checkpointed()
        self.procs.barrier()
        if epoch + 1 < self.cfg.epochs:
            decision = self.stop.poll()     # a signal during the evaluation stops here
            if decision.stop:
                raise StopHere(decision, epoch + 1, 0, len(self.loader))

    def _add_to_history(self, row: dict, bins: dict) -> bool:
        """The epoch's row and reliability bins; True when validation top-1 improved (the best epoch)."""
        self.history.append(row)
        improved = self.best is None or row["val_top1"] > self.best["val_top1"]
        self.calibration["final"] = bins
        if improved:
            self.best = dict(row)
            self.calibration["best"] = bins
        return improved

    # ---- record
    def record(self, epoch: int, improved: bool) -> None:
        """After `epoch` (0-based), rank 0 alone (the other ranks hold the same history but write
        nothing): the best epoch's logits (they reproduce metrics.json's "best"), history.csv and
        metrics.json, TensorBoard's points, and the epoch's line."""
        if improved:
            val_logits, test_logits = self.logits
            self.files.write(PREDICTIONS, write_predictions, test_logits, self.test_split, epoch + 1,
                             val_logits, self.val_split)
        self.files.record(self.history, self.best, self.calibration)
        self.board.epoch(self.history[-1])
        if epoch + 1 == self.cfg.epochs:
            self.board.finished(self.cfg.to_dict(), self.best)
        skipped = f"  {int(self.skipped_steps)} fp16 steps skipped so far" if self.scaler is not None else ""
        self._say(epoch_line(self.history[-1], self.cfg.epochs) + skipped)

    def _config_record(self) -> dict:
        return config_record(
            self.cfg, device=str(self.device), world_size=self.procs.world, augment_on=self.augment_on,
            gpu=torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None,
            precision=self.precision.to_dict(), backends=getattr(self, "backends", None),
            compile_cache=self.compilation.cache if self.compilation is not None else None,
            data_sizes={"train": len(self.train_split), "val": len(self.val_split), "test": len(self.test_split)},
            data_folder=str(data_root(self.cfg.data)))

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

    def _stopped(self, stop: StopHere) -> list[dict]:
        """The stop line (stopping.py), from rank 0; a signal raises RunStopped, the time limit returns."""
        line = stop_line(self.out, stop, self.cfg.epochs, self.cfg.time_limit, self.files.resume_command)
        if self.procs.main:
            print(line, flush=True)
        if stop.decision.signum is not None:
            raise RunStopped(line, stop.decision.signum)
        return self.history


def fit(config: TrainConfig, resume_command: str | None = None) -> list[dict]:
    """Train and evaluate per `config`; returns the history (one dict per epoch). `resume_command`:
    what the stop line tells a user to run (the CLI passes the command line with --resume)."""
    cfg = config.validate()
    # The backends first: --deterministic's CUBLAS_WORKSPACE_CONFIG must be set before CUDA's first
    # matmul, and the Trainer starts CUDA (the precision's capability check, the model's move).
    with backend_settings(pick_device(cfg.device), cfg.deterministic, cfg.tf32) as backends:
        procs = init_processes(cfg.device)
        try:
            with claimed(cfg.out, procs):    # before any data is loaded
                trainer = Trainer(cfg, procs, resume_command)
                trainer.backends = backends
                trainer.stop = StopControl(cfg.checkpoint_minutes, cfg.time_limit, procs.world, trainer.device,
                                           procs.rank, cfg.out)
                state = prepare_out(cfg, procs)
                with trainer.stop.installed():
                    trainer.setup(state)
                    replace_run(cfg, procs)     # the old run stays until the new one could load
                    return trainer.run()
        finally:
            if procs.started_here and dist.is_initialized():
                dist.destroy_process_group()
