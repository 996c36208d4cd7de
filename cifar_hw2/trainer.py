"""`fit(config) -> history`: train, evaluate every epoch, checkpoint, resume exactly.

One epoch = train on the train split, evaluate on the validation split (carved from train, used to
pick best.pt) and on the test split (reported, as the homework did, but never used to choose),
then one scheduler step. The run folder `config.out` holds

    config.json    the resolved config, versions, git commit, data sizes
    history.csv    one row per epoch: lr, train loss/acc, val_* and test_* top1/top5/nll/ece,
                   the temperature fitted on val and test ECE after scaling, seconds, images/s
    metrics.json   test metrics of the final epoch and of the best-by-validation epoch (fractions)
    last.pt        everything needed to resume; best.pt  the weights of the best-by-val epoch

Exact resume: every epoch's randomness (batch order, augmentation, dropout, noise, MC masks) is
derived from (seed, epoch), so re-running an epoch after a crash gives the same numbers; last.pt
is written atomically after each epoch and also keeps the RNG states and the history.

Under `torchrun`, each process trains on its shard with DistributedDataParallel; rank 0 alone
writes files and progress.
"""
from __future__ import annotations

import contextlib
import json
import hashlib
import math
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from . import __version__
from .augment import BatchNormalizeNoise
from .checkpoint import (CheckpointError, load_checkpoint, save_checkpoint, write_csv, write_json)
from .config import RUNTIME_FIELDS, ConfigError, TrainConfig
from .data import NUM_CLASSES, load_cifar100, stratified_subset, train_val_split
from .batch_augment import BatchAugment
from .loader import DeviceBatches, SeededBatchSampler, batch_seed, make_train_loader, predict_logits
from .losses import NEEDS_FEATURES, build_loss
from .metrics import classification_metrics, expected_calibration_error, fit_temperature, reliability
from .models import build_model
from .optim import build_optimizer
from .progress import epoch_bar
from .schedule import build_scheduler

RUN_FILES = ("config.json", "history.csv", "metrics.json", "last.pt", "best.pt")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


# --------------------------------------------------------------------------------------------
# Device and processes

def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """cuda → mps → cpu for "auto"; an explicit name must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' was asked for but is not available; use --device cpu or auto")
    return torch.device(name, local_rank) if name == "cuda" else torch.device(name)


@dataclass
class Processes:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    started_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            dist.barrier()


def init_processes(device_name: str) -> Processes:
    """Join the torchrun process group if WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Processes()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    started = False
    if not dist.is_initialized():
        use_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if use_cuda else "gloo")
        started = True
    return Processes(rank, world, local, started)


# --------------------------------------------------------------------------------------------
# Run folder

def _git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict:
    import timm
    import torchvision
    return {"cifar_hw2": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "timm": timm.__version__}


def _identity(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in RUNTIME_FIELDS}


def settings_changed(saved: dict, cfg: TrainConfig) -> dict:
    """{field: (saved, now)} for the settings that change what a run computes. A field the saved
    config predates counts as its default."""
    old, new = _identity({**TrainConfig().to_dict(), **saved}), _identity(cfg.to_dict())
    return {k: (old.get(k), new.get(k)) for k in new if old.get(k) != new.get(k)}


def _describe(cfg: dict) -> str:
    return f"model={cfg.get('model')}, loss={cfg.get('loss')}, lr={cfg.get('lr')}, batch_size={cfg.get('batch_size')}"


def prepare_out(cfg: TrainConfig, procs: Processes) -> dict | None:
    """Check the out folder against this run; return the checkpoint state to resume from, if any."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out {out} exists and is not a folder")
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if existing and not (cfg.resume or cfg.overwrite):
        old = {}
        if (out / "config.json").exists():
            try:
                old = json.loads((out / "config.json").read_text()).get("config", {})
            except ValueError:
                pass
        raise ConfigError(f"out folder {out} already holds a run ({_describe(old) if old else ', '.join(existing)}); "
                          f"pass --resume to continue it or --overwrite to replace it, or choose another --out")
    if cfg.overwrite:
        procs.barrier()
        if procs.main:
            for name in existing:
                (out / name).unlink()
        procs.barrier()
        return None
    if cfg.resume and (out / "last.pt").exists():
        state = load_checkpoint(out / "last.pt", cfg.model, NUM_CLASSES)
        changed = settings_changed(state["config"], cfg)
        if changed:
            what = ", ".join(f"{k}: {a!r} in the checkpoint, {b!r} now" for k, (a, b) in changed.items())
            raise CheckpointError(f"cannot resume {out / 'last.pt'}: it was made with other settings ({what}). "
                                  f"Resume with the same settings, or pass --overwrite to start over")
        return state
    return None


# --------------------------------------------------------------------------------------------
# The trainer

class Trainer:
    def __init__(self, cfg: TrainConfig, procs: Processes):
        self.cfg, self.procs = cfg, procs
        self.out = Path(cfg.out)
        self.device = pick_device(cfg.device, procs.local_rank)
        cuda = self.device.type == "cuda"
        # bf16 autocast and channels_last only where they pay (CUDA); the CPU path stays plain fp32.
        self.autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if (cuda and cfg.amp) \
            else contextlib.nullcontext
        self.memory_format = torch.channels_last if (cuda and cfg.channels_last) else torch.contiguous_format
        if cfg.batch_size % procs.world:
            raise ConfigError(f"batch_size {cfg.batch_size} must be divisible by the {procs.world} processes")

    # ---- setup
    def setup(self, state: dict | None) -> None:
        cfg, procs = self.cfg, self.procs
        train_full = load_cifar100("train", cfg.data)
        test_full = load_cifar100("test", cfg.data)
        self.train_split, self.val_split = train_val_split(train_full, cfg.val_per_class, cfg.seed,
                                                           cfg.train_per_class)
        self.test_split = (stratified_subset(test_full, cfg.test_per_class, cfg.seed)
                           if cfg.test_per_class else test_full)
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank and every run
        self.model = build_model(cfg.model, NUM_CLASSES, pretrained=cfg.pretrained,
                                 upsample_mode=cfg.upsample_mode)
        self.model.to(self.device, memory_format=self.memory_format)
        self.loss_fn = build_loss(cfg.loss, num_classes=NUM_CLASSES, **cfg.loss_kwargs())
        self.needs_features = cfg.loss in NEEDS_FEATURES
        self.optimizer = build_optimizer(cfg.optimizer, self.model, cfg.lr, cfg.weight_decay,
                                         cfg.momentum, self.device.type)
        self.scheduler = build_scheduler(cfg.schedule, self.optimizer, cfg.lr_decay, cfg.lr_period)
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
        self.history: list[dict] = []
        self.best: dict | None = None
        self.calibration: dict = {}  # reliability bins of the test split, final and best epoch
        self.start_epoch = 0
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.history, self.best, self.start_epoch = state["history"], state["best"], state["epoch"]
            self.calibration = state["calibration"]
            torch.set_rng_state(state["rng"]["torch"])
            random.setstate(_tuples(state["rng"]["python"]))
        self.train_model = self.model
        if cfg.compile:
            self.train_model = torch.compile(self.train_model)
        if procs.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.device.index] if self.device.type == "cuda" else None
            if self.device.type == "cuda":
                # BatchNorm statistics over the global batch, as on one GPU (needs NCCL; not on CPU).
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
                self.train_model = torch.compile(self.model) if cfg.compile else self.model
            self.train_model = DDP(self.train_model, device_ids=ids)

    # ---- one epoch of training
    def train_epoch(self, epoch: int, bar, max_steps: int | None = None) -> dict:
        cfg, dev = self.cfg, self.device
        self.train_model.train()
        loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        first_bad = torch.full((), -1, device=dev, dtype=torch.long)
        seen, start = 0, time.perf_counter()
        refresh = 1 if dev.type == "cpu" else 25   # a host sync only every few steps on a GPU
        batches = iter(self.loader)
        # Dropout, noise and MC masks in this process draw from a stream fixed by (seed, epoch, rank).
        # Seeded after iter(): a new loader iterator draws from this RNG, a persistent one does not.
        torch.manual_seed(batch_seed(cfg.seed, epoch, -1 - self.procs.rank))
        total = len(self.loader) if max_steps is None else min(max_steps, len(self.loader))
        for step, (images, labels) in enumerate(batches):
            if step == total:
                break
            images = images.to(dev, non_blocking=True)
            labels = labels.to(dev, non_blocking=True)
            x = self.augment(images).contiguous(memory_format=self.memory_format)
            with self.autocast():
                if self.needs_features:
                    logits, feats = self.train_model(x, return_features=True)
                    loss = self.loss_fn(logits, labels, feats)
                else:
                    logits = self.train_model(x)
                    loss = self.loss_fn(logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            # Metrics stay on the device; no .item() per step.
            loss = loss.detach()
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
            loss_sum += loss.double() * labels.shape[0]
            correct += (logits.detach().argmax(dim=1) == labels).sum()
            seen += labels.shape[0]
            if (step + 1) % refresh == 0 or step + 1 == total:
                self._check_finite(first_bad, epoch)
                if bar is not None:
                    bar.update(step + 1 - bar.n)
                    # refresh=False: drawn at the bar's next rate-limited redraw (see fit).
                    bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}",
                                    img_s=f"{seen * self.procs.world / (time.perf_counter() - start):.0f}",
                                    refresh=False)
        self._check_finite(first_bad, epoch)
        if self.procs.world > 1:
            self._average_buffers()
        totals = torch.stack([loss_sum, correct.double(), torch.tensor(float(seen), device=dev, dtype=torch.float64)])
        if self.procs.world > 1:
            dist.all_reduce(totals)
        seconds = time.perf_counter() - start
        return {"train_loss": (totals[0] / totals[2]).item(), "train_acc": (totals[1] / totals[2]).item(),
                "images_per_s": totals[2].item() / seconds}

    @torch.no_grad()
    def _average_buffers(self) -> None:
        """DDP keeps parameters equal, but each rank's BatchNorm running statistics come from its
        own batches. Averaging them makes every rank evaluate and save the same model."""
        for buf in self.model.buffers():
            if buf.is_floating_point():
                dist.all_reduce(buf)
                buf /= self.procs.world

    def _check_finite(self, first_bad: torch.Tensor, epoch: int) -> None:
        step = int(first_bad)
        if step >= 0:
            kept = (f"the last good checkpoint {self.out / 'last.pt'} (after epoch {self.start_epoch_done})"
                    if (self.out / "last.pt").exists() else "no checkpoint was written yet")
            raise NonFiniteLossError(f"the loss became NaN or infinite at epoch {epoch + 1}, step {step + 1}; "
                                     f"the run stopped. Kept {kept}. Try a lower --lr.")

    # ---- evaluation
    def predict(self, split) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [N, K] (float32, CPU) in the split's order, and labels [N]."""
        logits = predict_logits(self.model, split, self.device, self.cfg.eval_batch_size, self.augment,
                                self.autocast, self.memory_format, self.procs.rank, self.procs.world)
        if self.procs.world > 1:
            logits = _gather_interleaved(logits.to(self.device), len(split), self.procs.world).cpu()
        return logits, split.labels

    def evaluate(self) -> tuple[dict, dict]:
        """Metrics of this epoch, and the test reliability bins before/after temperature scaling."""
        val_logits, val_y = self.predict(self.val_split)
        test_logits, test_y = self.predict(self.test_split)
        row = {f"val_{k}": v for k, v in classification_metrics(val_logits, val_y).items()}
        row.update({f"test_{k}": v for k, v in classification_metrics(test_logits, test_y).items()})
        t = fit_temperature(val_logits, val_y)   # fitted on validation, never on test
        row["temperature"] = t
        row["test_ece_ts"] = expected_calibration_error(test_logits / t, test_y)
        bins = {"before": reliability(test_logits, test_y).to_dict(),
                "after_ts": reliability(test_logits / t, test_y).to_dict()}
        return row, bins

    # ---- the loop
    def run(self) -> list[dict]:
        cfg, procs = self.cfg, self.procs
        self.start_epoch_done = self.start_epoch
        if procs.main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(self.out / "config.json", self._config_record())
            if self.history:  # a resumed run: files derived from the checkpoint are rewritten first
                self._write_results()
        procs.barrier()
        show = _progress_mode(cfg.progress) if procs.main else "off"
        if self.start_epoch >= cfg.epochs and show != "off":
            print(f"{self.out}: all {cfg.epochs} epochs are done already.")
        elif self.start_epoch > 0 and show != "off":
            print(f"{self.out}: resuming after epoch {self.start_epoch} of {cfg.epochs}.", flush=True)
        for epoch in range(self.start_epoch, cfg.epochs):
            self.sampler.set_epoch(epoch)
            start = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            # At most one redraw a second, and plain text once closed (see progress.py).
            bar = epoch_bar(len(self.loader), f"epoch {epoch + 1}/{cfg.epochs}", show)
            try:
                row = {"epoch": epoch + 1, "lr": lr, **self.train_epoch(epoch, bar)}
            finally:
                if bar is not None:
                    bar.close()
            metrics, bins = self.evaluate()
            row.update(metrics)
            row["seconds"] = time.perf_counter() - start
            row = {k: row[k] for k in HISTORY_COLUMNS}
            self.scheduler.step()
            self.history.append(row)
            improved = self.best is None or row["val_top1"] > self.best["val_top1"]
            self.calibration["final"] = bins
            if improved:
                self.best = dict(row)
                self.calibration["best"] = bins
            if procs.main:
                if improved:
                    save_checkpoint(self.out / "best.pt", self._state(epoch + 1, weights_only=True))
                save_checkpoint(self.out / "last.pt", self._state(epoch + 1))
                self._write_results()
                if show != "off":
                    print(_epoch_line(row, cfg.epochs), flush=True)
            self.start_epoch_done = epoch + 1
            procs.barrier()
        return self.history

    def _state(self, epochs_done: int, weights_only: bool = False) -> dict:
        state = {"model_name": self.cfg.model, "num_classes": NUM_CLASSES, "epoch": epochs_done,
                 "config": self.cfg.to_dict(), "model": self.model.state_dict()}
        if not weights_only:
            state.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                         history=self.history, best=self.best, calibration=self.calibration,
                         rng={"torch": torch.get_rng_state(), "python": _lists(random.getstate())})
        return state

    def _write_results(self) -> None:
        write_csv(self.out / "history.csv", self.history)
        write_json(self.out / "metrics.json",
                   metrics_record(self.history, self.best, self.cfg.epochs, self.calibration))

    def _config_record(self) -> dict:
        return {"config": self.cfg.to_dict(), "versions": _versions(), "git_commit": _git_commit(),
                "device": str(self.device), "world_size": self.procs.world, "augment_on": self.augment_on,
                "data_sizes": {"train": len(self.train_split), "val": len(self.val_split),
                               "test": len(self.test_split)},
                "command": " ".join(sys.argv)}

    def weights_digest(self) -> str:
        h = hashlib.sha256()
        for name, t in self.model.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
        return h.hexdigest()


HISTORY_COLUMNS = ["epoch", "lr", "train_loss", "train_acc",
                   "val_top1", "val_top5", "val_nll", "val_ece",
                   "test_top1", "test_top5", "test_nll", "test_ece",
                   "temperature", "test_ece_ts", "seconds", "images_per_s"]


def metrics_record(history: list[dict], best: dict | None, epochs: int, calibration: dict) -> dict:
    """metrics.json: test metrics (fractions) at the final epoch and at the best-by-val epoch,
    with the reliability-diagram bins of both (before and after temperature scaling)."""
    def pick(row):
        return {"epoch": row["epoch"], "top1": row["test_top1"], "top5": row["test_top5"],
                "nll": row["test_nll"], "ece": row["test_ece"], "temperature": row["temperature"],
                "ece_ts": row["test_ece_ts"], "val_top1": row["val_top1"]}
    final = pick(history[-1])
    return {**{k: final[k] for k in ("top1", "top5", "nll", "ece")},
            "final": final, "best": pick(best), "epochs_done": history[-1]["epoch"], "epochs": epochs,
            "complete": history[-1]["epoch"] >= epochs, "reliability": calibration}


def _epoch_line(row: dict, epochs: int) -> str:
    return (f"epoch {row['epoch']:>3}/{epochs}  lr {row['lr']:.2e}  train loss {row['train_loss']:.4f} "
            f"acc {row['train_acc']:.3f}  val top1 {row['val_top1']:.3f}  test top1 {row['test_top1']:.3f} "
            f"ece {row['test_ece']:.3f}  {row['images_per_s']:.0f} img/s")


def _progress_mode(mode: str) -> str:
    if mode != "auto":
        return mode
    in_notebook = "ipykernel" in sys.modules
    return "bar" if in_notebook or sys.stderr.isatty() else "epoch"


def _gather_interleaved(local: torch.Tensor, n: int, world: int) -> torch.Tensor:
    """Rank r holds samples r, r + world, ...; gather all and restore the original order."""
    size = math.ceil(n / world)
    padded = torch.zeros(size, *local.shape[1:], dtype=local.dtype, device=local.device)
    padded[:len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    out = torch.empty(n, *local.shape[1:], dtype=local.dtype, device=local.device)
    for r in range(world):
        count = len(range(r, n, world))
        out[r::world] = parts[r][:count]
    return out


def _lists(x):
    """Python's RNG state as nested lists: checkpoints hold no tuples-of-tuples surprises."""
    return [_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


def fit(config: TrainConfig) -> list[dict]:
    """Train and evaluate per `config`; returns the history (one dict per epoch)."""
    cfg = config.validate()
    procs = init_processes(cfg.device)
    try:
        trainer = Trainer(cfg, procs)
        state = prepare_out(cfg, procs)
        trainer.setup(state)
        history = trainer.run()
        if procs.world > 1:
            digests = [None] * procs.world
            dist.all_gather_object(digests, trainer.weights_digest())
            if procs.main:
                record = json.loads((trainer.out / "metrics.json").read_text())
                record["distributed"] = {"world_size": procs.world, "weights_sha256": digests,
                                         "identical": len(set(digests)) == 1}
                write_json(trainer.out / "metrics.json", record)
        return history
    finally:
        if procs.started_here and dist.is_initialized():
            dist.destroy_process_group()
