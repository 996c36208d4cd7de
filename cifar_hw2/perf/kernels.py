"""Where a steady-state training step spends its time, by kernel: torch.profiler's table.

    python -m cifar_hw2.perf.kernels --model efficientnet_b4 --batch-size 64 --out DIR [--data DIR]

After a warm-up, `--steps` steps of the trainer's own data path and step (as perf/syncdebug.py
runs them) are profiled with the CPU and, on CUDA, the CUDA activity. Written to DIR:

    kernels.txt    the top ops/kernels by self device time (CUDA) or self CPU time, torch's table
    kernels.json   the same top rows, and the step's wall time against the time the device spent
                   in kernels: busy = kernel time / wall time. Well below 1 on a GPU means the
                   step is bound by launching kernels from Python, not by the GPU's arithmetic.

On the CPU the table is of CPU ops (it checks the code path; it says nothing about a GPU).
`--sync-json FILE` first runs perf/syncdebug.py's zero-sync check on the same trainer (one process
for both: the GPU script's time is short), writes its result to FILE and exits 1 if it failed.
"""
from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from ..training.backends import backend_settings
from .syncdebug import report_syncs, run_steps, steady_step_parser, steady_trainer, step_stream, window_steps

TOP = 30      # rows kept in the table and the JSON


def profile_steps(trainer, warmup_steps: int = 16, steps: int = 8) -> tuple[str, dict]:
    """(torch's table, a summary dict) of `steps` profiled steps after `warmup_steps`."""
    cuda = trainer.device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(trainer.device)) if cuda else (lambda: None)
    batches = step_stream(trainer)
    run_steps(trainer, batches, window_steps(trainer, warmup_steps))
    sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    # torch 2.11 (the GPU image's) warns "Profiler clears events at the end of each cycle" on every
    # profile, even one of a single cycle as here (later releases warn from the second cycle on).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Profiler clears events", category=UserWarning)
        with profile(activities=activities) as prof:
            start = time.perf_counter()
            run_steps(trainer, batches, steps)
            sync()
            wall = time.perf_counter() - start
    averages = prof.key_averages()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    table = averages.table(sort_by=key, row_limit=TOP)
    # On CUDA the rows are the kernels (and copies) themselves: an op's device time is also
    # counted in the kernels it launched, so only device-side events are summed.
    events = [e for e in averages if e.device_type == DeviceType.CUDA] if cuda else list(averages)
    rows = sorted(events, key=lambda e: getattr(e, key), reverse=True)
    top = [{"name": e.key, "calls": e.count, "self_us": round(getattr(e, key), 1)} for e in rows[:TOP]]
    summary = {"device": str(trainer.device), "steps": steps, "step_ms": round(1e3 * wall / steps, 3),
               "sort": key, "top": top}
    if cuda:
        kernel_us = sum(e.self_device_time_total for e in events)
        summary.update(kernel_ms_per_step=round(kernel_us / 1e3 / steps, 3), busy=round(kernel_us / 1e6 / wall, 3),
                       kernels_per_step=round(sum(e.count for e in events) / steps, 1))
    return table, summary


def main(argv: list[str] | None = None, echo=print) -> int:
    p = steady_step_parser("cifar_hw2.perf.kernels", __doc__, "profile", steps=8)
    p.add_argument("--out", required=True, help="folder for kernels.txt and kernels.json")
    p.add_argument("--sync-json", default=None, help="also run the zero-sync check first; its result to this file")
    args = p.parse_args(argv)
    trainer = steady_trainer(args.model, args.batch_size, args.device, args.precision, args.compile_mode, args.data)
    synced_ok = True
    if args.sync_json:
        synced_ok = report_syncs(trainer, args.sync_json, args.warmup_steps, echo) is not False
    with backend_settings(trainer.device, deterministic=False, tf32=False):
        table, summary = profile_steps(trainer, args.warmup_steps, args.steps)
    summary.update(model=args.model, batch_size=args.batch_size, precision=trainer.precision.name,
                   compile=args.compile_mode or False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernels.txt").write_text(table + "\n")
    (out / "kernels.json").write_text(json.dumps(summary, indent=1) + "\n")
    busy = f", device busy {summary['busy']:.0%} ({summary['kernels_per_step']:.0f} kernels a step)" \
        if "busy" in summary else ""
    echo(f"{args.model} batch {args.batch_size} {summary['precision']} {args.compile_mode or 'eager'} on "
         f"{summary['device']}: {summary['step_ms']:.1f} ms a step{busy}; top: "
         + ", ".join(f"{r['name']} {r['self_us'] / 1e3 / args.steps:.2f} ms" for r in summary["top"][:3]))
    return 0 if synced_ok else 1


if __name__ == "__main__":
    sys.exit(main())
