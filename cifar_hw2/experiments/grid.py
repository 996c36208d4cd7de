"""The experiment grid: the report's Table 1, plus the rows its code could not run.

    python -m cifar_hw2 grid --runs runs                     every row, one after another
    python -m cifar_hw2 grid --runs runs --only loss=flsd53  rows whose field matches (repeatable)
    python -m cifar_hw2 grid --runs runs --gpus 0,1,2,3      rows in parallel, one process per GPU
    python -m cifar_hw2 grid --runs runs --nproc 4           each row on 4 GPUs through torchrun
    python -m cifar_hw2 grid --runs runs --dry-run           what would run
    python -m cifar_hw2 grid --runs runs --launcher slurm    one Slurm job per row, an array (slurm.py)
    python -m cifar_hw2 grid --runs runs --status            done / running / queued / failed, per row

Each row executes notebooks/04_train.ipynb with papermill (in its own process) and leaves
runs/<key>/04_train.ipynb, its figures in runs/<key>/figures/ and the run folder runs/<key>/. A finished row is skipped; an interrupted
one resumes from its last.pt; a failed row is reported and the others go on; the exit status is 1
if any row failed. With --quick (CIFAR_HW2_QUICK=1) every row runs the `quick` preset (small CNN, CPU): a
quick stand-in for its row, and a loss that cannot run on the small CNN is replaced by its stand-in
(training.config.QUICK_STAND_IN). Each row records the Table 1 row it stands for in runs/<key>/grid.json,
where the report finds it. A row whose folder another process holds (training/folderlock.py) is skipped;
a quick run that a row does not continue is replaced, any other such run kept (row_state).
Slurm rows run the trainer directly in their job (no notebook: its figures come from `report`).
"""
from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..training.checkpoint import atomic_write_text, read_json_mapping
from ..training.config import ConfigError, TrainConfig, is_quick_run, quick_mode
from ..training.folderlock import describe_holder, holder
from ..training.paths import FIGURES_ENV, REPO_ROOT, lacking, this_python
from ..training.naming import setting
from ..training.parameters import judge_out, replace_quick_run, train_config_from_parameters
from ..training.stopping import RunStopped
from .rows import GridRow, grid_rows, select

NOTEBOOK = REPO_ROOT / "notebooks" / "04_train.ipynb"
ROW_FILE = "grid.json"   # in each row's folder: the grid row and the Table 1 row it stands for
KEPT = "skip (it holds a full run, which quick mode leaves alone; give quick runs another --runs)"


def row_state(config: TrainConfig) -> tuple[str, str]:
    """(state, what the grid does) for the row that trains `config` (row_config): 'done', 'resume'
    (an interrupted run), 'new', 'replace' (a quick run this row does not continue: cleared, then
    run, as notebook 04 does) or 'kept' (any other run it does not continue: left alone, skipped)."""
    found = judge_out(config)
    if found.action == "replace":
        return "replace", "replace its quick run"
    if found.action == "keep":
        if found.saved and is_quick_run(config.to_dict()):
            return "kept", KEPT
        return "kept", (f"skip (its folder holds a run this row does not continue: {found.why}; move that run "
                        f"elsewhere or delete it to run this row)")
    if read_json_mapping(Path(config.out) / "metrics.json").get("complete") is True:
        return "done", "skip (complete)"
    return ("resume", "resume from last.pt") if (Path(config.out) / "last.pt").is_file() else ("new", "run")


@dataclass
class Outcome:
    row: GridRow
    status: str          # done | skipped | failed | interrupted (Ctrl-C: resumable)
    seconds: float = 0.0
    message: str = ""
    top1: float | None = None


def record_row(row: GridRow, folder: Path, quick: bool) -> None:
    """Write folder/grid.json. The report reads the Table 1 key from it: a quick run trains
    small_cnn, so its config.json alone matches no Table 1 row."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / ROW_FILE, json.dumps(
        {"row": row.key, "table1": row.table1, "quick": quick, "loss": row.loss_run(quick),
         "stands_for": row.stands_for(quick)}, indent=2, ensure_ascii=False) + "\n")


# The last line of an interrupted row's grid.log: papermill, interrupted too, closes the kernel's
# connection while the run saves last.pt, and the kernel then logs a ZMQError traceback.
INTERRUPTED_LOG_LINE = ("grid: this row was stopped by Ctrl-C. A ZMQError traceback above, if any, is the kernel's, "
                        "whose connection papermill closed as it stopped; the same grid command resumes the row "
                        "from its last.pt")


def record_failure(folder: Path, message: str) -> None:
    """Add a failed row's last line to folder/grid.json, for `grid --status` (a local row leaves no job
    record; the row's next run rewrites the file)."""
    entry = read_json_mapping(folder / ROW_FILE)
    atomic_write_text(folder / ROW_FILE, json.dumps({**entry, "failed": message}, indent=2, ensure_ascii=False) + "\n")


def missing_weights_note(configs: list[TrainConfig]) -> str | None:
    """A line when rows start from ImageNet weights that cannot be had here (models.why_no_pretrained):
    their notebooks would fail one after another, each after loading the data."""
    from ..models import why_no_pretrained
    why = {m: why_no_pretrained(m) for m in sorted({c.model for c in configs if c.pretrained is True})}
    missing = [m for m, reason in why.items() if reason]
    if not missing:
        return None
    return (f"note: the ImageNet weights of {', '.join(missing)} cannot be had here ({why[missing[0]]}): those rows "
            f"would fail. Run `{this_python()} -m cifar_hw2 weights` where the hub can be reached, with the cache on "
            f"a disk this machine sees (docs/data-and-weights.md)")


def missing_data_note(data: str | None) -> str | None:
    """A line when CIFAR-100 is not in the data folder yet: the rows would download it first (several
    at once, with --gpus), or each fail offline."""
    from ..data import DOWNLOAD_SIZE, FOLDER, data_root, is_present, wrong_folder
    if is_present(data):
        return None
    misplaced = wrong_folder(data_root(data))     # --data one level off, or an archive: the rows stop on it
    if misplaced:
        return f"note: {misplaced}"
    fetch = f"{this_python()} -m cifar_hw2 data" + (f" --data {shlex.quote(str(data))}" if data else "")
    return (f"note: CIFAR-100 is not in {data_root(data) / FOLDER} yet: the rows would download it ({DOWNLOAD_SIZE}) first. "
            f"`{fetch}` fetches it once, and says what to do offline")


def missing_papermill_note() -> str | None:
    """A line when this Python cannot run notebook 04 through papermill: every row would fail the same
    way ("No module named papermill"), one after another. papermill and the kernel come with the
    notebooks extra, which a plain `pip install -e .` leaves out."""
    lack = lacking("notebooks", "papermill", "ipykernel")
    return lack and f"each row runs notebook 04 through papermill, and {lack}"


def row_status(folder: Path) -> tuple[str, str]:
    """(state, details) of a row's folder: slurm.status, plus what a local grid records in grid.json.
    A row whose run failed is 'failed' (not 'new', or 'interrupted' when it left a last.pt). Outside
    quick mode a quick run that is not running is 'stand-in', whatever became of it: a full grid
    replaces it (row_state), neither counts it done nor resumes it."""
    from ..training.runfolder import saved_config
    from .slurm import status
    state, detail = status(folder)
    if state not in ("running", "queued") and not quick_mode() and is_quick_run(saved_config(folder)):
        return "stand-in", f"a quick run ({state}: {detail}); the full row replaces it"
    entry = read_json_mapping(folder / ROW_FILE)
    if state in ("new", "interrupted") and isinstance(entry.get("failed"), str):
        return "failed", entry["failed"][:500] + ("; the same grid command resumes it" if state == "interrupted" else "")
    return state, detail


def row_config(row: GridRow, runs: Path, data: str | None, **overrides) -> TrainConfig:
    """The run a row trains: what notebook 04 makes of the row's parameters (quick mode included),
    in an absolute folder (a Slurm job starts elsewhere). A Slurm row trains exactly this; a local
    row's notebook makes it again. `overrides`: the tests' trims."""
    import contextlib
    import dataclasses
    import io
    # Its quick-mode notes, once per row, are the grid's; what the row does with its folder too (row_state).
    with contextlib.redirect_stdout(io.StringIO()):
        cfg = train_config_from_parameters(**row.parameters((runs / row.key).resolve(), data), settle=False)
    return dataclasses.replace(cfg, **overrides).validate() if overrides else cfg


def print_status(runs: str | Path, only: list[str] = (), echo=print) -> dict[str, str]:
    """Each row's state, read from its run folder (and its job, for Slurm rows): {key: state}."""
    runs, rows = Path(runs), select(grid_rows(), list(only))
    if runs.exists() and not runs.is_dir():
        raise ConfigError(f"{setting('runs')} {runs} exists and is not a folder")
    states = {}
    for i, row in enumerate(rows, 1):
        state, detail = row_status(runs / row.key)
        states[row.key] = state
        echo(f"[{i}/{len(rows)}] {row.key:<26} {state:<11} {detail}")
    counts = {s: list(states.values()).count(s) for s in dict.fromkeys(states.values())}
    echo("grid: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return states


def submit_rows(rows: list[GridRow], runs: Path, data: str | None, options, dry_run: bool = False, echo=print,
                overrides: dict | None = None) -> list:
    """Submit the rows that are neither done nor already queued or running, as one Slurm array."""
    from .slurm import check_batches_split, status, submit
    quick, todo = quick_mode(), []
    configs = {row.key: row_config(row, runs, data, **(overrides or {})) for row in rows}
    check_batches_split(list(configs.values()), options)
    for i, row in enumerate(rows, 1):
        state, detail = status(runs / row.key)
        mode, what = row_state(configs[row.key])
        if state in ("running", "queued") or mode == "done":
            echo(f"[{i}/{len(rows)}] {row.key:<26} {state}, not submitted ({detail})")
            continue
        if mode == "kept":
            echo(f"[{i}/{len(rows)}] {row.key:<26} not submitted: {what}")
            continue
        todo.append(row)
        if mode == "replace":
            echo(f"[{i}/{len(rows)}] {row.key:<26} {'would replace' if dry_run else 'replacing'} its quick run")
        if not dry_run:
            if mode == "replace":
                replace_quick_run(runs / row.key)   # the job resumes what it finds (TrainJob): nothing, then
            record_row(row, runs / row.key, quick)
    configs = [configs[row.key] for row in todo]
    echo(f"grid: {'would submit' if dry_run else 'submitting'} {len(todo)} row(s) to {options.cluster}"
         + (f": {', '.join(row.key for row in todo)}" if todo else ""))
    return submit(configs, [f"cifar_hw2-{r.key}" for r in todo], options, (runs / "slurm").resolve(), dry_run, echo)


def run_row(row: GridRow, runs: Path, data: str | None, env: dict, nproc: int = 1) -> Outcome:
    """Run one row: notebook 04 through papermill in its own process (torchrun when nproc > 1)."""
    folder = runs / row.key
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    log = folder / "grid.log"
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "cifar_hw2", "train", *row.train_args(folder, data)]
    else:
        cmd = [sys.executable, "-m", "papermill", str(NOTEBOOK), str(folder / "04_train.ipynb"),
               "--cwd", str(Path.cwd()), "--log-output", "--no-progress-bar"]
        import yaml   # papermill's own dependency; the grid's notebook rows need papermill anyway
        # YAML as PyYAML writes it: a float like 3e-05 reads back as a float (plain JSON's "3e-05"
        # is a string to YAML 1.1, which has no exponent without a dot).
        cmd += ["-y", yaml.safe_dump(row.parameters(folder, data), default_flow_style=True)]
        # The notebook's figures go beside the row's results, not to the checkout's figures/: 16
        # rows would otherwise overwrite one 04_training_curves.png one after another.
        env = {**env, FIGURES_ENV: str(folder / "figures")}
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-1:] or ["(no output)"]
        return Outcome(row, "failed", seconds, f"exit {proc.returncode}: {tail[0][:1000]} (log: {log})")
    top1 = json.loads((folder / "metrics.json").read_text())["best"]["top1"]
    return Outcome(row, "done", seconds, top1=top1)


def run_grid(runs: str | Path, only: list[str] = (), data: str | None = None, gpus: list[str] = (),
             nproc: int = 1, dry_run: bool = False, echo=print, runner=run_row, slurm=None) -> list[Outcome]:
    """Run the selected rows. `runner(row, runs, data, env, nproc) -> Outcome` runs one row
    (run_row; tests pass a trimmed in-process one). `slurm` (slurm.SlurmOptions): submit them instead."""
    from ..training.runfolder import check_out_folder
    runs = Path(runs)
    rows = select(grid_rows(), list(only))
    check_out_folder(runs, "runs")
    if slurm is not None:
        jobs = submit_rows(rows, runs, data, slurm, dry_run, echo)
        return [Outcome(row, "submitted", message=str(job.job_id)) for row, job in zip(rows, jobs)]
    quick = quick_mode()
    if quick and nproc > 1:     # a torchrun row runs train with its own preset: it would not be a stand-in
        raise ConfigError(f"{setting('nproc')} {nproc} runs each row with torchrun on GPUs, and quick mode runs every "
                          f"row on the CPU as a stand-in: use one of them")
    mode = "quick mode (--quick, or CIFAR_HW2_QUICK=1): every row runs the quick preset on the CPU, a stand-in " \
           "for its Table 1 row" if quick else "full configuration"
    echo(f"grid: {len(rows)} row{'s' if len(rows) != 1 else ''} → {runs}  ({mode})")
    todo, outcomes = [], []
    for i, row in enumerate(rows, 1):
        state, what = row_state(row_config(row, runs, data))
        if dry_run or state in ("done", "kept"):
            size = "" if quick else f" bs {row.batch_size:<3}"
            # γ shown where a row sets it: the homework's "FL" rows run focal with γ = 0, i.e. CE.
            loss = row.loss_run(quick) + (f" γ={row.gamma:g}" if row.gamma is not None else "")
            echo(f"[{i}/{len(rows)}] {row.key:<26} {loss:<18}{size} → {what}  ({row.stands_for(quick)})")
            if state in ("done", "kept"):
                outcomes.append(Outcome(row, "skipped", message="complete" if state == "done" else what))
                continue
        todo.append((i, row, what, state))
    notes = []
    if todo and not quick:      # what full rows need, said once here (and in a dry run), not only in their notebooks
        from ..training.speed import slow_device_notice
        first = todo[0][1]
        notes += [slow_device_notice(row_config(first, runs, data), f"grid row {first.key}",
                                     cpu_choice="--quick: every row a quick stand-in",
                                     **({"then": ""} if dry_run else {})),
                  missing_weights_note([row_config(r, runs, data) for _, r, _, _ in todo])]
    if todo:
        notes.append(missing_data_note(data))
    no_papermill = missing_papermill_note() if todo and nproc == 1 and runner is run_row else None
    if no_papermill and not dry_run:     # before any row: 16 identical failures would teach nothing
        raise ConfigError(no_papermill)
    for line in filter(None, notes + [no_papermill and f"note: {no_papermill}"]):
        echo(line)
    if dry_run:
        return outcomes

    lock, stop = threading.Lock(), threading.Event()
    work: queue.Queue = queue.Queue()
    for item in todo:
        work.put(item)

    def run_one(i: int, row: GridRow, what: str, state: str, env: dict) -> Outcome:
        """One row, from its folder's check to its outcome (said by the caller)."""
        busy = holder(runs / row.key)
        if busy is not None:      # another grid (or train) is running this row right now
            return Outcome(row, "skipped", message=f"in use by {describe_holder(busy)}")
        with lock:
            gpu = env.get("CUDA_VISIBLE_DEVICES") if gpus else None
            echo(f"[{i}/{len(rows)}] {row.key:<26} {what}" + (f" on GPU {gpu}" if gpu is not None else "") + " ...")
        try:
            if state == "replace":      # here, not in the row's notebook: a torchrun row runs `train --resume`
                replace_quick_run(runs / row.key)
        except ConfigError as e:        # taken by another process meanwhile
            return Outcome(row, "skipped", message=str(e))
        if stop.is_set():               # Ctrl-C while this row was being prepared: it does not start
            return Outcome(row, "interrupted", message="not started")
        record_row(row, runs / row.key, quick)
        outcome = runner(row, runs, data, env, nproc)
        if outcome.status == "failed" and stop.is_set():     # ended by the grid's Ctrl-C: not a failure
            with open(runs / row.key / "grid.log", "a") as log:
                log.write(INTERRUPTED_LOG_LINE + "\n")
            return Outcome(row, "interrupted", outcome.seconds, outcome.message)
        if outcome.status == "failed":
            record_failure(runs / row.key, outcome.message)
        return outcome

    def worker(gpu: str | None):
        env = dict(os.environ)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        while not stop.is_set():
            try:
                i, row, what, state = work.get_nowait()
            except queue.Empty:
                return
            try:
                outcome = run_one(i, row, what, state, env)
            except Exception as e:   # a row's failure (its papermill, a full disk) must not stop the others
                outcome = Outcome(row, "failed", message=f"{type(e).__name__}: {e}")
            with lock:
                outcomes.append(outcome)
                echo(f"[{i}/{len(rows)}] {row.key:<26} " + {
                    "done": lambda o: f"done in {o.seconds:.0f} s, best-by-val test top-1 {100 * o.top1:.2f} %",
                    "skipped": lambda o: f"skipped: {o.message}",
                    "interrupted": lambda o: ("not started: Ctrl-C came first" if o.message == "not started"
                                              else f"stopped by Ctrl-C after {o.seconds:.0f} s"),
                    "failed": lambda o: f"FAILED after {o.seconds:.0f} s: {o.message}"}[outcome.status](outcome))

    slots = list(gpus) or [None]
    running = [len(slots)]      # set before any worker starts: only workers change it then

    def counted(gpu: str | None):
        try:
            worker(gpu)
        finally:
            with lock:
                running[0] -= 1

    def wait_for_workers():
        # Polled with sleep, not Thread.join: a join that Ctrl-C interrupts can leave the thread
        # looking finished (Python 3.11), and a second join would then not wait.
        while running[0]:
            time.sleep(0.2)

    for gpu in slots:
        threading.Thread(target=counted, args=(gpu,), daemon=True).start()
    try:
        wait_for_workers()
    except KeyboardInterrupt:
        # Ctrl-C reaches the running rows too (same process group): papermill interrupts its kernel,
        # whose run finishes its step and saves last.pt, and kills it 5 s later at most (jupyter_client's
        # shutdown_wait_time; last.pt is written atomically, so at worst the one before is kept).
        # No new row starts; wait for the running ones, so that their lines come before the last one.
        stop.set()
        echo("grid: Ctrl-C: the running rows save last.pt and stop (Ctrl-C again leaves at once)")
        wait_for_workers()
        line = "grid: interrupted; run the same command again to resume"
        echo(line)
        raise RunStopped(line, signal.SIGINT) from None
    failed = [o for o in outcomes if o.status == "failed"]
    echo(f"grid: {sum(o.status == 'done' for o in outcomes)} ran, "
         f"{sum(o.status == 'skipped' for o in outcomes)} skipped, {len(failed)} failed")
    return outcomes
