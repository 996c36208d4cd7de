"""Command line: `python -m cifar_hw2 COMMAND ...` (also installed as `cifar-hw2`).

    train      train one model × loss; one flag per config field (see --help)
    evaluate   metrics of a saved checkpoint on test or val
    grid       the report's Table 1 (and the rows it could not run) through notebook 04
    report     report.md, report.csv and figures for the run folders under --runs
    bench      data-path and trainer throughput (JSON records and a table)
    data       download CIFAR-100 once into the data folder and check it
    weights    download B4's and Swin-B's ImageNet weights once into the hub cache
    notebooks  point badges and setup cells at a repository (--repo-url), check, re-execute

Exit statuses: EXIT_STATUSES in parser.py, the one list of them (`python -m cifar_hw2 --help` shows it).

- flags: the config's fields as flags, and a config check's message in their terms
- parser: argparse with one-line errors and the nearest name to a misspelt one; the exit statuses

May import: every floor.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import textwrap

from ..training.config import PRESETS, QUICK_ENV, ConfigError, make_config
from ..training.paths import lacking
from .flags import add_config_flags
from .parser import (EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_STATUSES, EXIT_STOPPED,
                     EXIT_WRITE_FAILED, Defaults, Parser)

# The config fields `bench` takes from the command line, as train's flags, and its own defaults.
BENCH_FIELDS = ("model", "loss", "device", "precision", "augment_on", "workers", "data", "compile", "compile_mode",
                "compile_scope", "tf32")
BENCH_DEFAULTS = {"model": "small_cnn", "loss": "ce"}


# Flags of `train` and `grid` that choose where a run executes: not config fields.
SLURM_DEFAULTS = {"slurm_gpus": 1, "slurm_nodes": 1, "slurm_time": "24:00:00", "slurm_partition": None,
                  "slurm_account": None, "slurm_option": []}
LAUNCH_FLAGS = ("launcher", "dry_run", *SLURM_DEFAULTS)


def _add_launcher_flags(p: argparse.ArgumentParser, dry_run: str | None) -> None:
    g = p.add_argument_group("Slurm (--launcher slurm, through submitit: pip install -e \".[slurm]\")")
    p.add_argument("--launcher", default="local", choices=("local", "slurm"),
                   help="local: run here; slurm: submit one Slurm job per run through submitit (the grid's rows "
                        "as an array); a job checkpoints at its time limit or on preemption and is requeued")
    g.add_argument("--slurm-gpus", type=int, default=SLURM_DEFAULTS["slurm_gpus"], metavar="N",
                   help="GPUs per node, one task (rank) each; ranks start from submitit's environment, no torchrun")
    g.add_argument("--slurm-nodes", type=int, default=SLURM_DEFAULTS["slurm_nodes"], metavar="N", help="nodes per job")
    g.add_argument("--slurm-time", default=SLURM_DEFAULTS["slurm_time"], metavar="TIME",
                   help="the job's time limit: minutes or [D-]HH:MM:SS; SIGUSR2 comes 300 s before it, the "
                        "run saves last.pt and the job is requeued")
    g.add_argument("--slurm-partition", default=None, metavar="NAME", help="sbatch --partition")
    g.add_argument("--slurm-account", default=None, metavar="NAME", help="sbatch --account")
    g.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, repeatable: e.g. qos=high, constraint=a100, mem=64G, "
                        "cpus-per-task=16 (default 8)")
    if dry_run:
        g.add_argument("--dry-run", action="store_true", help=dry_run)   # train: Slurm only


def slurm_options(args):
    """SlurmOptions from the flags, or None for --launcher local (where a Slurm flag is refused)."""
    if args.launcher != "slurm":
        given = [f"--{k.replace('_', '-')}" for k, default in SLURM_DEFAULTS.items() if getattr(args, k) != default]
        if given:
            raise ValueError(f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --launcher slurm")
        return None
    from ..experiments.slurm import SlurmOptions
    return SlurmOptions(gpus=args.slurm_gpus, nodes=args.slurm_nodes, time=args.slurm_time,
                        partition=args.slurm_partition, account=args.slurm_account, options=args.slurm_option)


def build_parser() -> argparse.ArgumentParser:
    statuses = (textwrap.fill(meaning, 79, initial_indent=f"  {code:<5}", subsequent_indent=" " * 7)
                for code, meaning in EXIT_STATUSES.items())
    parser = Parser(prog="cifar-hw2", description="CIFAR-100 with EfficientNet-B4 / Swin-B and CE, MC, focal and "
                    "FLSD-53 losses\n(a course companion to a homework report).",
                    formatter_class=argparse.RawDescriptionHelpFormatter, epilog="exit statuses:\n" + "\n".join(statuses))
    sub = parser.add_subparsers(dest="command", parser_class=Parser)   # none given: main() lists them
    parser.commands = sub.choices       # name → its parser, for main()'s "did you mean" of a flag

    presets = "; ".join(f"{k}: " + ", ".join(f"{a}={b}" for a, b in v.items()) for k, v in PRESETS.items())
    train = sub.add_parser("train", help="train one model with one loss",
                           formatter_class=Defaults,
                           description="Train and evaluate one run. A preset sets some fields; any flag "
                                       "overrides it. Defaults shown are the config's, before the preset.",
                           epilog=f"Presets: {presets}.")
    train.add_argument("--preset", default="paper-b4", help=f"named settings: {', '.join(PRESETS)}")
    add_config_flags(train)
    _add_launcher_flags(train, "with --launcher slurm: print the sbatch script, submit nothing")

    ev = sub.add_parser("evaluate", help="metrics of a saved checkpoint",
                        formatter_class=Defaults)
    ev.add_argument("--checkpoint", required=True, help="a best.pt or last.pt written by train")
    ev.add_argument("--split", default="test", choices=("test", "val"),
                    help="the split to score; val gives the fitted temperatures but no ECE after scaling "
                         "(they were fitted on it)")
    ev.add_argument("--data", default=None, help="folder holding cifar-100-python/ (default: the run's)")
    ev.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                    help="auto: CUDA if there is a GPU, else MPS, else the CPU")
    ev.add_argument("--batch-size", type=int, default=None, help="images per forward pass (default: the run's eval_batch_size)")

    grid = sub.add_parser("grid", help="run the experiment grid (Table 1 and more) with papermill",
                          formatter_class=Defaults,
                          description="Runs notebooks/04_train.ipynb once per row. Finished rows are skipped, "
                                      "interrupted rows resume; --quick runs every row on the quick preset.")
    grid.add_argument("--runs", default="runs", help="folder for the run folders and executed notebooks")
    grid.add_argument("--only", action="append", default=[], metavar="KEY=VALUE",
                      help="keep rows whose field matches (model, loss, batch_size, source, key, ...); repeatable: "
                           "values of one key are alternatives, different keys must all match")
    grid.add_argument("--data", default=None, help="folder holding cifar-100-python/")
    grid.add_argument("--quick", action="store_true",
                      help="every row a quick stand-in: the quick preset (small CNN, CPU) with the row's loss; the "
                           "same as CIFAR_HW2_QUICK=1")
    grid.add_argument("--preset", help=argparse.SUPPRESS)     # train's flag: said to be --quick here
    grid.add_argument("--gpus", default="", help="comma-separated GPU ids: rows run in parallel, one per GPU")
    grid.add_argument("--nproc", type=int, default=1, help="run each row on this many GPUs with torchrun")
    grid.add_argument("--dry-run", action="store_true",
                      help="list what would run (with --launcher slurm: also the sbatch script)")
    grid.add_argument("--status", action="store_true",
                      help="say for each row whether it is done, running, queued, failed, stopped, interrupted, new "
                           "or (outside quick mode) a quick stand-in, from its run folder and the Slurm job "
                           "recorded there; unknown where that record holds a state this tool never writes")
    _add_launcher_flags(grid, None)

    rep = sub.add_parser("report", help="write report.md/report.csv and figures for a runs folder",
                         formatter_class=Defaults)
    rep.add_argument("--runs", default="runs", help="folder searched for run folders (with metrics.json)")
    rep.add_argument("--title", default=None, help="the report's title (default: the earlier report.md's)")
    rep.add_argument("--out", default=None, metavar="DIR",
                     help="write the report here instead of into --runs (e.g. to make a shipped report again "
                          "without touching it)")

    bench = sub.add_parser("bench", help="measure augmentation, train-step, end-to-end and trainer-overhead throughput",
                           formatter_class=Defaults,
                           description="The flags shared with train mean the same there. With --compile: one batch "
                                       "size per process, and the first step's compile warm-up is printed.")
    add_config_flags(bench, BENCH_FIELDS, BENCH_DEFAULTS)
    bench.add_argument("--batch-size", type=int, nargs="+", default=[64],
                       help="one or more batch sizes, measured one after another into one table")
    bench.add_argument("--warm-start", action="store_true",
                       help="with --compile: also time a fresh process's first step from the caches just written")
    bench.add_argument("--preset", default=None, choices=tuple(PRESETS),
                       help="the preset whose row the hours column estimates (default: paper-b4 for B4, "
                            "paper-swin for Swin-B, cpu-reference for small_cnn)")
    bench.add_argument("--steps", type=int, default=32,
                       help="train steps per timed window (rounded up to whole augmentation chunks on the device path)")
    bench.add_argument("--repeats", type=int, default=3, help="timed windows (the median is reported)")
    bench.add_argument("--json", default=None,
                       help="also write the records to this file (JSON lines, appended as each is measured)")
    dat = sub.add_parser("data", help="download CIFAR-100 once into the data folder (if missing) and check it",
                         formatter_class=Defaults,
                         description="The CLI, the notebooks and the tests all read this one folder.")
    dat.add_argument("--data", default=None, help="folder for cifar-100-python/ (default: $CIFAR_HW2_DATA, "
                                                  "else cifar_hw2/data under $XDG_CACHE_HOME or ~/.cache)")
    wts = sub.add_parser("weights", help="download the ImageNet weights of B4 and Swin-B once into the hub cache",
                         description="Afterwards training from them needs no network: the Hugging Face hub "
                                     "cache ($HF_HUB_CACHE, else $HF_HOME/hub) is read first. On a cluster, "
                                     "run it where there is network, with the cache on a disk the nodes share.")
    wts.add_argument("--model", action="append", default=None, choices=["efficientnet_b4", "swin_b"],
                     help="only this model (repeatable; default: both)")
    nbs = sub.add_parser("notebooks", help="point the notebooks at a repository; check them; re-execute them",
                         description="Maintain notebooks/*.ipynb (see cifar_hw2/notebook/nbtools.py).")
    nbs.add_argument("--repo-url", metavar="URL", default=None,
                     help="the repository the Colab badges and setup cells use, e.g. https://github.com/you/cifar-hw2; "
                          "rewrites REPO_URL in cifar_hw2/notebook/helpers.py and every notebook")
    nbs.add_argument("--check", action="store_true", help="exit 1 if a badge, setup cell or kernelspec disagrees")
    nbs.add_argument("--execute", action="store_true",
                     help="run 01-05 in order in quick mode from a clean runs/04_train and save their outputs")
    return parser


def run_data(args) -> int:
    from ..data import data_root, load_cifar100
    sizes = {split: len(load_cifar100(split, args.data)) for split in ("train", "test")}  # downloads if missing
    print(f"CIFAR-100 in {data_root(args.data)}: {sizes['train']} train, {sizes['test']} test images, checked")
    return 0


def run_weights(args) -> int:
    from huggingface_hub.constants import HF_HUB_CACHE
    from ..models import fetch_pretrained, pretrained_models
    for name in args.model or pretrained_models():
        print(f"{name}: {fetch_pretrained(name)} is in {HF_HUB_CACHE}")
    return 0


def run_notebooks(args) -> int:
    if not (args.repo_url or args.check or args.execute):
        raise ValueError("notebooks: give --repo-url URL, --check or --execute")
    # nbformat reads and writes them; nbclient and the kernel execute them (the notebooks extra)
    lack = lacking("notebooks", "nbformat", *(("nbclient", "ipykernel") if args.execute else ()))
    if lack:
        raise ConfigError(f"notebooks: {lack}")
    from ..notebook import nbtools
    if args.repo_url:
        changed = nbtools.set_repo_url(args.repo_url)
        print("rewrote " + (", ".join(str(p) for p in changed) if changed else "nothing (already pointing there)"))
    if args.execute:
        nbtools.execute_all()
    if args.check:
        found = nbtools.problems()
        print("\n".join(found) if found else "notebooks agree with cifar_hw2/notebook/helpers.py")
        return EXIT_FAILED if found else 0
    return 0


def run_train(args) -> int:
    from ..training.speed import slow_device_notice
    from ..training.stopping import resume_command
    from ..training.trainer import fit
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "preset", "argv", *LAUNCH_FLAGS)}
    config = make_config(args.preset, **overrides)
    slurm = slurm_options(args)
    if args.dry_run and slurm is None:
        raise ValueError("--dry-run prints the sbatch script of --launcher slurm; add --launcher slurm")
    if slurm is not None:
        return submit_train(config, slurm, args.dry_run)
    notice = slow_device_notice(config, args.preset)
    if notice:
        print(notice, file=sys.stderr, flush=True)
    from ..training.runfolder import run_files_in
    if config.resume and not run_files_in(config.out) and os.environ.get("RANK", "0") == "0":
        # --resume on a new folder starts it (as Colab's and Slurm's first runs do); said, for a misspelt --out
        print(f"{config.out}: no run there to resume, so this one starts at epoch 1", file=sys.stderr, flush=True)
    fit(config, resume_command=resume_command(args.argv))
    return 0


def submit_train(config, slurm, dry_run: bool) -> int:
    """train --launcher slurm: the folder is checked now, not after the job has waited in the queue."""
    from pathlib import Path
    from ..training.processes import Processes
    from ..training.runfolder import check_out_folder, clear_run, prepare_out
    from ..experiments.slurm import check_batches_split, status, submit, submitit
    submitit()                               # installed? (one line saying how, if not)
    check_batches_split([config], slurm)
    config = dataclasses.replace(config, out=str(Path(config.out).resolve()))
    check_out_folder(config.out)
    state, detail = status(config.out)
    if state in ("running", "queued"):
        raise ValueError(f"{config.out} is already {state} ({detail})")
    if not dry_run:
        prepare_out(config, Processes())     # refuses another run's folder
        if config.overwrite:                 # cleared now: the job resumes whatever the folder holds
            clear_run(config.out)
    # The job resumes whatever this folder holds from now on: it is this run's.
    job = dataclasses.replace(config, resume=True, overwrite=False)
    submit([job], [f"cifar_hw2-{Path(config.out).name}"], slurm, Path(config.out) / "slurm", dry_run)
    return 0


def run_evaluate(args) -> int:
    from ..experiments.evaluate import VAL_NOTE, EvaluationNotSaved, evaluate_checkpoint
    if args.batch_size is not None and args.batch_size <= 0:
        raise ValueError(f"batch size must be a positive integer, got {args.batch_size}")
    try:
        result, unsaved = evaluate_checkpoint(args.checkpoint, args.split, args.data, args.device, args.batch_size), None
    except EvaluationNotSaved as e:
        result, unsaved = e.result, e
    print(json.dumps(result, indent=2))
    if args.split == "val":
        print(f"cifar-hw2: note: {VAL_NOTE}", file=sys.stderr)
    if unsaved:
        print(f"cifar-hw2: error: {unsaved}", file=sys.stderr)
        return EXIT_WRITE_FAILED
    return 0


def run_grid(args) -> int:
    from ..experiments.grid import print_status, run_grid as grid
    from ..training.stopping import RunStopped
    if args.nproc <= 0:
        raise ValueError(f"--nproc must be a positive integer, got {args.nproc}")
    if args.preset is not None:
        raise ValueError(f"grid runs each row with its Table 1 preset (--preset {args.preset} is train's flag); "
                         f"--quick runs every row on the quick preset")
    if args.quick:
        os.environ[QUICK_ENV] = "1"     # read by this process and by every row it starts
    if args.status:
        states = print_status(args.runs, args.only)
        return EXIT_FAILED if "failed" in states.values() else 0
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
    try:
        outcomes = grid(args.runs, args.only, args.data, gpus, args.nproc, args.dry_run, slurm=slurm_options(args))
    except RunStopped:              # Ctrl-C: the rows saved last.pt; the grid said how to go on
        raise
    except KeyboardInterrupt:       # a second Ctrl-C: the grid left at once
        print("grid: left at once; the same command resumes each row from its last last.pt", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_FAILED if any(o.status == "failed" for o in outcomes) else 0


def run_report(args) -> int:
    from ..experiments.report import write_report
    paths = write_report(args.runs, args.title, args.out)
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def run_bench(args) -> int:
    from ..perf.bench import run_bench as bench
    records = bench(args.model, args.batch_size, args.device, args.precision, args.loss, args.steps, args.repeats,
                    args.data, args.augment_on, args.compile, args.workers, compile_mode=args.compile_mode,
                    tf32=args.tf32, preset=args.preset, compile_scope=args.compile_scope, json_path=args.json,
                    warm_start=args.warm_start)
    return 0 if records else EXIT_FAILED


COMMANDS = {"train": run_train, "evaluate": run_evaluate, "grid": run_grid, "report": run_report,
            "bench": run_bench, "data": run_data, "weights": run_weights, "notebooks": run_notebooks}


def main(argv=None) -> int:
    from ..training.progress import survive_closed_output
    with survive_closed_output():       # `... | head -1` stops the output, never the command
        return _main(argv)


def _main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    Parser.given = argv
    args, extras = parser.parse_known_args(argv)
    if extras:
        parser.commands.get(args.command, parser).unrecognized(extras)
    if args.command is None:
        parser.error(f"give a command: {', '.join(COMMANDS)} (cifar-hw2 COMMAND --help says more)")
    args.argv = argv
    from ..training.checkpoint import CheckpointError
    from ..training.naming import settings_said_as_flags
    from ..data import DataError
    from ..training.runfolder import RunFileError
    from ..training.stopping import RunStopped
    from ..training.trainer import NonFiniteLossError
    try:
        with settings_said_as_flags():     # a message names a setting as its flag: --batch-size, not batch_size
            return COMMANDS[args.command](args)
    except RunStopped:
        return EXIT_STOPPED            # the trainer printed where it stopped and the resume command
    except RunFileError as e:
        print(f"cifar-hw2: error: {e}", file=sys.stderr)
        return EXIT_WRITE_FAILED
    except NonFiniteLossError as e:
        print(f"cifar-hw2: {e}", file=sys.stderr)
        return EXIT_FAILED
    except (ValueError, DataError, CheckpointError) as e:  # ConfigError and ModelError are ValueErrors
        print(f"cifar-hw2: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        from ..training.stopping import resume_command
        again = {"train": f"; it continues from its last last.pt with: {resume_command(args.argv)}",
                 "grid": "; the same command again resumes its rows from their last last.pt"}
        print(f"cifar-hw2: interrupted at once{again.get(args.command, '')}", file=sys.stderr)
        return EXIT_INTERRUPTED
