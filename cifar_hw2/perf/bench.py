"""`python -m cifar_hw2 bench`: is the data path ever the bottleneck, what does the trainer cost,
and what should a user expect from a full run?

For one model, device and precision, and one or more batch sizes; each measurement prints one JSON
record, and one table follows:

  1. augmentation throughput on one core (augmentation.py): our train pipeline at 32 px against
     the same ops on PIL images at 224, as ratios (once, not per batch size)
  2. train-step images/s on synthetic data already on the device (`Trainer.step` on one batch)
  3. end-to-end images/s: the trainer's own epoch loop with the real loader and augmentation
  4. the ratio 3 / 2 (1.0: data is never the bottleneck)
  5. the trainer's epoch loop against a bare loop of `Trainer.step` over the same loader (what
     the loop adds: metrics on the device, finiteness checks, progress), and what TensorBoard
     logging costs on top: the same loop writing its event files as a run does, against it
  6. what to expect: the warm-up round's seconds (torch.compile's compile time when compiling),
     peak GPU memory (CUDA only), GFLOP per training image (torch.utils.flop_counter on one
     forward pass, x3 for forward + backward: the usual estimate; it counts matmuls, convolutions
     and attention, not elementwise ops), the TFLOP/s that achieves at the end-to-end rate, and
     the hours one row of a preset (its epochs x its training images, e.g. 200 x 45,000 for
     paper-b4) would spend in training steps at that rate (evaluation not included)

With --compile, one batch size per process (a second compile in the same process would not start
from a clean state), and the first compiled step's seconds are printed as the compile warm-up,
with whether the caches were cold or warm; `--warm-start` then also times a fresh process's
first step from the caches just written (the warm start of a resumed run or the next grid row).
Records are appended to `--json` one by one as they are measured, so a run cut short keeps them.

Timings exclude a warm-up window of each kind. The windows of measurements 2, 3 and 5 alternate
for `--repeats` rounds; rates are medians over rounds, and ratios medians of the rounds' ratios
(robust to a machine whose speed drifts during the run).
"""
from __future__ import annotations

import contextlib
import gc
import itertools
import json
import os
import statistics
import time
from pathlib import Path

import torch

from ..models import count_flops
from ..training.backends import backend_settings
from ..training.compiled import eager
from ..training.config import PRESETS, TrainConfig, make_config
from ..training.processes import Processes
from ..training.runfolder import prepare_out, replace_run
from ..training.tensorboard import RunBoard
from ..training.trainer import Trainer
from .augmentation import augmentation_records

# The preset whose row `hours_per_row` estimates, per model: the report's runs, for small_cnn the
# CPU reference and for resnet9 the GPU reference.
ROW_PRESETS = {"efficientnet_b4": "paper-b4", "swin_b": "paper-swin", "small_cnn": "cpu-reference",
               "resnet9": "gpu-reference"}


def device_sync(device: torch.device):
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


# Each *_window(trainer, steps) returns a function that runs one timed window of `steps` train
# steps. run_bench interleaves the kinds of window, so that a machine whose speed drifts
# (shared cores, clocks) shifts them all alike, and reports medians and medians of per-round ratios.

def synthetic_window(trainer: Trainer, steps: int):
    """Train steps on a fixed uint8 batch already on the device (no loader, no augmentation)."""
    cfg, dev = trainer.cfg, trainer.device
    images = torch.randint(0, 256, (cfg.batch_size, 3, 32, 32), dtype=torch.uint8, device=dev)
    labels = torch.randint(0, 100, (cfg.batch_size,), device=dev)

    def window():
        trainer.train_model.train()
        for _ in range(steps):
            trainer.timed_step(trainer.inputs(images), labels)

    return window


def trainer_window(trainer: Trainer, steps: int):
    """The trainer's own epoch loop (loader, augmentation, metrics on the device) for `steps` steps."""
    epochs = itertools.count(1)

    def window():
        epoch = next(epochs)
        trainer.sampler.set_epoch(epoch)
        trainer.train_epoch(epoch, None, max_steps=steps)

    return window


def logged_window(trainer: Trainer, steps: int, events: Path):
    """The trainer's epoch loop, as trainer_window, writing TensorBoard event files into `events`
    as a run does (a train/loss point every tensorboard.EVERY steps, flushed at the window's end as
    at an epoch's). Against trainer_window, what logging costs. (trainer_window's board is closed:
    a Trainer opens its event files only in run(), which bench never calls.)"""
    inner, board = trainer_window(trainer, steps), RunBoard(events, len(trainer.loader), 0, main=True)

    def window():
        quiet, trainer.board = trainer.board, board
        try:
            inner()
            if board.writer is not None:
                board.writer.flush()
        finally:
            trainer.board = quiet

    window.board = board      # its points: how many train/loss points the windows wrote
    return window


def bare_window(trainer: Trainer, steps: int):
    """A bare loop of `Trainer.step` over the same loader and augmentation: no metrics, no
    progress, no checks. What the trainer's epoch loop is compared with."""
    dev, epochs = trainer.device, itertools.count(1001)

    def window():
        trainer.sampler.set_epoch(next(epochs))
        trainer.train_model.train()
        for images, labels in itertools.islice(trainer.loader, steps):   # no batch past the last step
            images, labels = images.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
            trainer.timed_step(trainer.inputs(images), labels)

    return window


def interleaved_rates(windows: dict, images_per_window: int, repeats: int,
                      sync) -> tuple[dict[str, list[float]], float]:
    """Images/s of each window, `repeats` rounds of one window of each kind, after one warm-up
    round; and the warm-up round's seconds."""
    start = time.perf_counter()
    for window in windows.values():
        window()
    sync()
    warmup = time.perf_counter() - start
    rates = {name: [] for name in windows}
    for _ in range(repeats):
        for name, window in windows.items():
            start = time.perf_counter()
            window()
            sync()
            rates[name].append(images_per_window / (time.perf_counter() - start))
    return rates, warmup


def gflop_per_image(trainer: Trainer) -> float:
    """Training GFLOP per image: one forward pass of one image counted by models.count_flops, x3
    (the backward pass costs about twice the forward)."""
    x = trainer.augment(torch.zeros(1, 3, 32, 32, dtype=torch.uint8, device=trainer.device), train=False)
    # Compiled regions run eager here: a flop count needs no eval-mode graph.
    with eager() if trainer.cfg.compile else contextlib.nullcontext():
        return 3 * count_flops(trainer.model, x.contiguous(memory_format=trainer.memory_format)) / 1e9


def row_images(preset: str) -> tuple[int, int]:
    """(epochs, training images per epoch) of one run of `preset`."""
    cfg = TrainConfig(**PRESETS[preset])
    per_class = cfg.train_per_class if cfg.train_per_class is not None else 500 - cfg.val_per_class
    return cfg.epochs, per_class * 100


def run_bench(model: str = "small_cnn", batch_size: int | list[int] = 64, device: str = "auto",
              precision: str = "auto", loss: str = "ce", steps: int = 32, repeats: int = 3, data: str | None = None,
              augment_on: str = "auto", compile: bool = False, workers: int | None = None,
              out: str = "runs/.bench", echo=print, compile_mode: str = "default", tf32: bool = False,
              preset: str | None = None, compile_scope: str = "regional", json_path: str | None = None,
              warm_start: bool = False) -> list[dict]:
    sizes = [batch_size] if isinstance(batch_size, int) else list(batch_size)
    if not sizes or any(not isinstance(b, int) or b <= 0 for b in sizes):
        raise ValueError(f"batch sizes must be positive integers, got {batch_size!r}")
    if compile and len(sizes) > 1:
        raise ValueError(f"with --compile, bench one batch size per process (got {sizes}): run it once per size")
    if warm_start and not compile:
        raise ValueError("--warm-start times a compiled model's warm start: add --compile")
    if steps <= 0 or repeats <= 0:
        raise ValueError("steps and repeats must be positive integers")
    if json_path:
        if os.path.isdir(json_path):
            raise ValueError(f"--json {json_path} is a folder; give the name of a file to write the records to")
        folder = os.path.dirname(os.path.abspath(json_path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise ValueError(f"--json {json_path}: cannot make its folder ({e.strerror or e})") from None
        if not os.access(json_path if os.path.exists(json_path) else folder, os.W_OK):
            raise ValueError(f"--json {json_path} cannot be written (no permission); choose another file")
    fresh = [True]

    def keep(rec: dict) -> None:
        """--json: each record on disk as it comes (a timeout later loses nothing measured). The file
        is emptied at the first record, so a bench refused before any leaves an old file as it was."""
        if json_path:
            with open(json_path, "w" if fresh[0] else "a") as f:
                f.write(json.dumps(rec) + "\n")
            fresh[0] = False

    preset = preset or ROW_PRESETS.get(model, "paper-b4")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    records = []
    for i, size in enumerate(sizes):
        cfg = make_config("quick", model=model, pretrained=False, loss=loss, batch_size=size, device=device,
                          precision=precision, compile=compile, compile_mode=compile_mode, tf32=tf32,
                          compile_scope=compile_scope,
                          augment_on=augment_on, workers=workers, train_per_class=None, test_per_class=None,
                          data=data, out=out, overwrite=True, progress="off")
        trainer = Trainer(cfg, Processes())
        with backend_settings(trainer.device, deterministic=False, tf32=tf32):
            found, emit = _bench_one(trainer, steps, repeats, preset, echo, augmentation=i == 0, keep=keep)
        del trainer
        if warm_start:
            # Last, once this process holds no model: the fresh process builds a whole trainer of its
            # own, and two of Swin-B at batch 64 need not fit in one GPU's memory.
            release_device_memory()
            emit("compile_warm_start", warm_start_seconds(cfg), "s", cache="warm", scope=cfg.compile_scope,
                 path="a fresh process's first compiled step, from the caches this run wrote")
        records += found
    echo(format_table(records))
    return records


def release_device_memory() -> None:
    """Free what this process's trainers left on the GPU: torch.compile's compiled code (which holds the
    modules, and, through CUDA graph trees, their memory pools), then the allocator's cache."""
    gc.collect()
    torch.compiler.reset()
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _bench_one(trainer: Trainer, steps: int, repeats: int, preset: str, echo, augmentation: bool,
               keep=lambda rec: None):
    """(the records of one batch size, the `emit` that adds one more to them with the same fields).
    `keep(record)` saves each record as it is made (run_bench's --json)."""
    cfg = trainer.cfg
    prepare_out(cfg, trainer.procs)
    trainer.setup(None)
    replace_run(cfg, trainer.procs)     # bench's own scratch folder (overwrite=True)
    if steps > len(trainer.loader):
        raise ValueError(f"--steps {steps} is more than the {len(trainer.loader)} batches of one epoch at batch size "
                         f"{cfg.batch_size}; use at most {len(trainer.loader)} steps")
    # The device path augments whole chunks of batches: time whole chunks (or the whole epoch), or
    # a window would pay for batches it never trains on.
    per_chunk = getattr(trainer.loader, "batches_per_chunk", 1)
    steps = min(-(-steps // per_chunk) * per_chunk, len(trainer.loader))
    cuda = trainer.device.type == "cuda"
    meta = {"model": cfg.model, "batch_size": cfg.batch_size, "device": str(trainer.device),
            "precision": trainer.precision.name, "augment_on": trainer.augment_on,
            "compile": cfg.compile_mode if cfg.compile else False, "torch_threads": torch.get_num_threads(),
            "loader_workers": getattr(trainer.loader, "num_workers", 0), "cpu_count": os.cpu_count(),
            "steps": steps}
    records = []

    def emit(name, value, unit, **extra):
        # 3 decimals, or 4 significant digits below 1 (a CPU's TFLOP/s would round to 0)
        rec = {"measurement": name, "value": round(value, 3) if abs(value) >= 1 else float(f"{value:.4g}"),
               "unit": unit, **meta, **extra}
        records.append(rec)
        keep(rec)                   # on disk first: a timeout later loses nothing measured
        echo(json.dumps(rec))

    if augmentation:
        for name, value, unit, path in augmentation_records(cfg.data, repeats):
            emit(name, value, unit, path=path)
    if cuda:
        torch.cuda.reset_peak_memory_stats(trainer.device)
    if cfg.compile:
        # Compile now, on one synthetic step, and record it at once: a run cut short by a time
        # limit still says how long compiling took.
        synthetic_window(trainer, 1)()
        device_sync(trainer.device)()
        cache = _cache_state()
        emit("compile_warmup", trainer.compilation.seconds, "s", cache=cache, scope=cfg.compile_scope,
             path=f"first compiled step, {trainer.compilation.what or 'compile failed: eager'}")
    logged = logged_window(trainer, steps, Path(cfg.out) / "events")
    windows = {"synthetic": synthetic_window(trainer, steps), "end_to_end": trainer_window(trainer, steps),
               "bare": bare_window(trainer, steps), "logged": logged}
    rates, warmup = interleaved_rates(windows, cfg.batch_size * steps, repeats, device_sync(trainer.device))
    median = {name: statistics.median(r) for name, r in rates.items()}
    ratio = lambda a, b: statistics.median(x / y for x, y in zip(rates[a], rates[b]))   # per round
    emit("train_step_synthetic", median["synthetic"], "images/s")
    emit("end_to_end", median["end_to_end"], "images/s")
    emit("end_to_end_over_synthetic", ratio("end_to_end", "synthetic"), "x")
    emit("bare_loop", median["bare"], "images/s")
    emit("trainer_over_bare_loop", ratio("end_to_end", "bare"), "x")
    emit("logging_cost", 1 - ratio("logged", "end_to_end"), "fraction", points=logged.board.points,
         path="1 - (epoch loop writing TensorBoard event files) / (the same loop without)")
    emit("warmup", warmup, "s", path="first round of the four windows" + (" (compiles)" if cfg.compile else ""))
    if cuda:
        emit("peak_gpu_memory", torch.cuda.max_memory_allocated(trainer.device) / 2**30, "GiB")
    gflop = gflop_per_image(trainer)
    emit("gflop_per_image", gflop, "GFLOP", path="forward x3")
    emit("achieved_tflops", gflop * median["end_to_end"] / 1e3, "TFLOP/s", path="at the end-to-end rate")
    epochs, images = row_images(preset)
    emit("hours_per_row", epochs * images / median["end_to_end"] / 3600, "h",
         path=f"{preset}: {epochs} epochs x {images} images", preset=preset)
    return records, emit


def _cache_state() -> str:
    """warm (every compiled graph came from inductor's caches), cold (none did) or partly warm,
    from inductor's FX graph and AOTAutograd cache counters in this process."""
    from torch._dynamo.utils import counters
    hits = sum(v for k, v in counters["inductor"].items() if k.endswith("cache_hit"))
    misses = sum(v for k, v in counters["inductor"].items() if k.endswith("cache_miss"))
    return "warm" if hits and not misses else ("cold" if not hits else "partly warm")


def warm_start_seconds(cfg: TrainConfig) -> float:
    """Seconds of the first compiled step in a fresh process with `cfg` (its caches warm), started
    as a resumed run starts: from inductor's cache folder and the artifacts this bench just saved."""
    import subprocess
    import sys
    code = ("import json, sys; from cifar_hw2.perf.bench import _first_step_seconds; "
            "print('WARM', _first_step_seconds(json.loads(sys.argv[1])))")
    resumed = {**cfg.to_dict(), "overwrite": False, "resume": True}
    run = subprocess.run([sys.executable, "-c", code, json.dumps(resumed)], capture_output=True, text=True)
    lines = [line for line in run.stdout.splitlines() if line.startswith("WARM ")]
    if run.returncode or not lines:
        raise RuntimeError(f"the warm-start process failed: {run.stderr.strip()[-500:]}")
    return float(lines[-1].split()[1])


def _first_step_seconds(config: dict) -> float:
    cfg = TrainConfig(**config)
    trainer = Trainer(cfg, Processes())
    with backend_settings(trainer.device, deterministic=False, tf32=cfg.tf32):
        trainer.setup(None)
        window = synthetic_window(trainer, 1)
        window()
    return trainer.compilation.seconds


COLUMNS = [("train_step_synthetic", "synthetic img/s", "{:.0f}"), ("end_to_end", "end to end", "{:.0f}"),
           ("end_to_end_over_synthetic", "e2e/syn", "{:.3f}"), ("trainer_over_bare_loop", "trainer/bare", "{:.3f}"),
           ("logging_cost", "logging cost", "{:+.1%}"),
           ("warmup", "warm-up s", "{:.1f}"), ("compile_warmup", "compile s", "{:.1f}"),
           ("compile_warm_start", "warm start s", "{:.1f}"), ("peak_gpu_memory", "peak GiB", "{:.1f}"),
           ("gflop_per_image", "GFLOP/img", "{:.3g}"), ("achieved_tflops", "TFLOP/s", "{:.3g}"),
           ("hours_per_row", "h/row", "{:.2f}")]


def format_table(records: list[dict]) -> str:
    """The augmentation rows, then one row per batch size."""
    lines = [f"{'augmentation, one core':<40} {'images/s or x':>14}", "-" * 56]
    for r in records:
        if r["measurement"].startswith("augmentation"):
            lines.append(f"{r['path']:<40} {r['value']:>14.3f}")
    header = f"{'batch':>6} " + " ".join(f"{title:>15}" for _, title, _ in COLUMNS)
    lines += ["", header, "-" * len(header)]
    for size in dict.fromkeys(r["batch_size"] for r in records):
        value = {r["measurement"]: r["value"] for r in records if r["batch_size"] == size}
        cells = [(fmt.format(value[name]) if name in value else "-") for name, _, fmt in COLUMNS]
        lines.append(f"{size:>6} " + " ".join(f"{c:>15}" for c in cells))
    m = records[-1]
    row = next(r for r in records if r["measurement"] == "hours_per_row")
    lines.append(f"({m['model']}, {m['device']}, {m['precision']}, compile {m['compile'] or 'off'}, augment on "
                 f"{m['augment_on']}, {m['loader_workers']} loader workers, {m['torch_threads']} torch threads, "
                 f"{m['steps']} steps per window; h/row: {row['path']}, training steps only)")
    return "\n".join(lines)
