"""Slurm through submitit (`pip install -e ".[slurm]"`): one job per run; the grid's rows as an array.

    python -m cifar_hw2 train --launcher slurm --slurm-gpus 4 --slurm-time 24:00:00 --preset paper-b4 --out runs/b4
    python -m cifar_hw2 grid --launcher slurm --slurm-partition gpu --runs runs          # one job per row
    python -m cifar_hw2 grid --launcher slurm --dry-run                                  # the sbatch script

A job runs one task per GPU; each task is a rank of the run, started from submitit's job
environment (helpers.TorchDistributedEnvironment sets MASTER_ADDR/PORT, RANK, WORLD_SIZE,
LOCAL_RANK; no torchrun). Slurm sends SIGUSR2 `signal_delay_s` before the time limit (submitit's
`--signal`); the trainer finishes its step and writes last.pt there (training/stopping.py), and the job is
requeued through submitit's checkpointing interface (TrainJob.checkpoint): it resumes from
last.pt. SIGUSR1 (a `--signal` of one's own) is treated the same. SIGTERM (preemption, scancel)
also stops cleanly; Slurm requeues a preempted job itself where the cluster is set to.

Each run folder records its job in slurm.json (job id, logs, and the state the job writes:
queued, running, requeued, stopped, done, failed); `grid --status` reads it (status()).
"""
from __future__ import annotations

import dataclasses
import shlex
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..training.checkpoint import read_json_mapping, write_json
from ..training import naming
from ..training.config import ConfigError, TrainConfig
from ..training.runfolder import JOB_FILE

INSTALL = 'pip install -e ".[slurm]" (or pip install submitit)'
# The states slurm.json records (update) or the scheduler gives (SCHEDULER_STATES), as status says them.
JOB_STATES = ("queued", "running", "failed", "stopped", "done")
# Slurm states (sacct/squeue) in the four words `grid --status` uses.
SCHEDULER_STATES = {"running": ("RUNNING", "COMPLETING", "STOPPED", "SUSPENDED"),
                    "queued": ("PENDING", "REQUEUED", "CONFIGURING", "RESIZING", "REQUEUE_HOLD", "REQUEUE_FED"),
                    "failed": ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
                               "BOOT_FAIL", "DEADLINE")}


def submitit():
    """The submitit module, or one line saying how to install it."""
    try:
        import submitit as module
    except ImportError:
        raise ConfigError(f"--launcher slurm needs submitit: {INSTALL}") from None
    return module


@dataclass
class SlurmOptions:
    gpus: int = 1                     # GPUs per node, one task (rank) each
    nodes: int = 1
    time: str = "24:00:00"            # minutes, or [D-]HH:MM:SS
    partition: str | None = None
    account: str | None = None
    options: list[str] = field(default_factory=list)   # any other sbatch option, KEY=VALUE
    # Seconds between Slurm's warning (SIGUSR2) and the time limit: enough for a step, a running
    # evaluation (a stop waits for it) and one last.pt.
    signal_delay_s: int = 300
    cluster: str = "slurm"            # "local": submitit's local executor (the tests)

    def minutes(self) -> int:
        """sbatch --time's forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S; rounded up to whole minutes."""
        text = self.time.strip()
        days, dash, rest = text.rpartition("-") if "-" in text else ("0", "", text)
        parts = rest.split(":")
        if not (days.isdigit() and all(p.isdigit() for p in parts) and len(parts) <= 3):
            raise ConfigError(f"--slurm-time must be minutes or sbatch's M:S, H:M:S, D-H, D-H:M, D-H:M:S, "
                              f"got {self.time!r}")
        numbers = [int(p) for p in parts]
        if dash:            # D-H, D-H:M, D-H:M:S
            h, m, sec = (numbers + [0, 0])[:3]
        else:               # M, M:S, H:M:S
            h, m, sec = ([0] + numbers + [0])[:3] if len(numbers) < 3 else numbers
        minutes = int(days) * 1440 + h * 60 + m + (sec > 0)
        if minutes <= 0:
            raise ConfigError(f"--slurm-time must be positive, got {self.time!r}")
        return minutes

    def parameters(self, name: str) -> dict:
        """submitit's SlurmExecutor parameters (sbatch's names, with _ for -)."""
        for n, v in (("--slurm-gpus", self.gpus), ("--slurm-nodes", self.nodes)):
            if v <= 0:
                raise ConfigError(f"{n} must be a positive integer, got {v}")
        params = {"job_name": name, "time": self.minutes(), "nodes": self.nodes, "ntasks_per_node": self.gpus,
                  "gpus_per_node": self.gpus, "cpus_per_task": 8, "signal_delay_s": self.signal_delay_s,
                  "partition": self.partition, "account": self.account}
        # Every other option goes to submitit's public `additional_parameters`: one `#SBATCH
        # --key=value` line each, written after (and so replacing) submitit's own line for the
        # same key. Keys are spelt with _ (submitit's spelling; the line has -), so that
        # cpus-per-task=4 replaces the 8 above instead of adding a second line.
        extra = {}
        for option in self.options:
            key, eq, value = option.partition("=")
            key = key.strip().lstrip("-").replace("-", "_")
            if not key:
                raise ConfigError(f"--slurm-option takes KEY=VALUE (an sbatch option), got {option!r}")
            extra[key] = value if eq else True
        if extra:
            params["additional_parameters"] = extra
        return {k: v for k, v in params.items() if v is not None}


def executor(options: SlurmOptions, folder: Path, name: str):
    """A submitit executor writing its logs and pickles to `folder` (%j: the job id)."""
    module = submitit()
    params = options.parameters(name)
    if options.cluster == "local":
        ex = module.LocalExecutor(folder=str(folder))
        ex.update_parameters(timeout_min=params["time"], tasks_per_node=options.gpus,
                             signal_delay_s=options.signal_delay_s)
        return ex
    if options.cluster != "slurm":
        raise ConfigError(f"unknown cluster {options.cluster!r}; valid: slurm, local")
    if shutil.which("sbatch") is None:
        raise ConfigError("--launcher slurm: sbatch is not on PATH (is this a Slurm login node?); "
                          "--dry-run prints the script without it")
    ex = module.SlurmExecutor(folder=str(folder))
    ex.update_parameters(**params)
    return ex


def sbatch_script(options: SlurmOptions, folder: Path, name: str, jobs: int = 1) -> str:
    """The sbatch script submitit would submit for `jobs` runs (an array when more than one).

    submitit writes it with `submitit.slurm.slurm._make_sbatch_string`, a private function; its
    public path (SlurmExecutor) refuses to start where there is no `srun`, and a dry run is for
    machines without Slurm. tests/test_private_apis.py fails, naming it and the submitit version,
    if it changes."""
    submitit()
    from submitit.slurm.slurm import _make_sbatch_string
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    params = options.parameters(name)
    if jobs > 1:
        params["map_count"] = jobs
    return _make_sbatch_string(command=command, folder=str(folder), **params)


class TrainJob:
    """What one Slurm job runs: the training of one run folder, resumed from last.pt when requeued."""

    def __init__(self, config: dict, as_flags: bool | None = None):
        self.config = config
        # Whether its messages name settings as flags: as where it was submitted (the command line's
        # `grid --status` shows them), since the job runs outside that process.
        self.as_flags = naming.as_flags() if as_flags is None else as_flags

    def __call__(self) -> str:
        import signal as signals
        module = submitit()
        from ..training.stopping import RunStopped
        from ..training.trainer import fit
        env = module.JobEnvironment()
        if env.num_tasks > 1:
            # One GPU per task: LOCAL_RANK picks it, so CUDA_VISIBLE_DEVICES stays as Slurm set it.
            module.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        cfg = dataclasses.replace(TrainConfig(**self.config), resume=True, overwrite=False)
        main = env.global_rank == 0
        if main:
            update(cfg.out, state="running", job_id=env.job_id, host=socket.gethostname())
        try:
            with naming.settings_said_as_flags(self.as_flags):
                fit(cfg, resume_command="a requeued job resumes by itself; otherwise submit the same "
                                        "`--launcher slurm` command again")
        except RunStopped as stopped:
            requeue = stopped.signum in (signals.SIGUSR1, signals.SIGUSR2)
            if main:
                update(cfg.out, state="requeued" if requeue else "stopped", message=stopped.message,
                       requeues=read(cfg.out).get("requeues", 0) + requeue)
            if requeue:
                # submitit's own handler for its signal (USR_SIG, "USR2" unless its environment
                # says otherwise): calls checkpoint() below, requeues, exits.
                handler = signals.getsignal(getattr(signals, "SIG" + module.JobEnvironment.USR_SIG))
                if callable(handler):
                    handler(stopped.signum, None)
            raise RuntimeError(stopped.message) from None
        except BaseException as e:
            if main:
                update(cfg.out, state="failed", message=f"{type(e).__name__}: {e}"[:500])
            raise
        if main:
            update(cfg.out, state="done")
        return cfg.out

    def checkpoint(self, *args, **kwargs):
        """submitit's checkpointing interface: the job to requeue. last.pt is already written."""
        return submitit().helpers.DelayedSubmission(TrainJob(self.config, self.as_flags))


def read(out: str | Path) -> dict:
    return read_json_mapping(Path(out) / JOB_FILE)


def update(out: str | Path, **fields) -> None:
    write_json(Path(out) / JOB_FILE, {**read(out), **fields, "updated": time.time()})


def check_batches_split(configs: list[TrainConfig], options: SlurmOptions) -> None:
    """Refuse, before anything is queued, a job whose global batch its processes (--slurm-gpus ×
    --slurm-nodes, one rank each) cannot share equally: the trainer would refuse it only once the job
    had waited in the queue."""
    world = options.gpus * options.nodes
    if world <= 0:          # parameters() says which of the two is not a positive integer
        return
    for cfg in configs:
        if cfg.batch_size % world:
            raise ConfigError(f"{naming.setting('batch_size')} {cfg.batch_size} must be divisible by the {world} "
                              f"processes of a job (--slurm-gpus {options.gpus} × --slurm-nodes {options.nodes})")


def submit(configs: list[TrainConfig], names: list[str], options: SlurmOptions, folder: Path,
           dry_run: bool = False, echo=print) -> list:
    """Submit one job per config (an array where there are several); records each in its
    slurm.json. Returns the submitit jobs ([] for a dry run, which prints the sbatch script)."""
    if not configs:
        return []
    if dry_run:
        echo(sbatch_script(options, folder / "%j", names[0] if len(names) == 1 else "cifar_hw2-grid", len(configs)))
        return []
    ex = executor(options, folder / "%j", names[0] if len(names) == 1 else "cifar_hw2-grid")
    with ex.batch():
        jobs = [ex.submit(TrainJob(cfg.to_dict())) for cfg in configs]
    for cfg, job in zip(configs, jobs):
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        update(cfg.out, state="queued", job_id=str(job.job_id), cluster=options.cluster,
               logs=str(job.paths.stdout), submitted=time.time())
        echo(f"{cfg.out}: submitted as job {job.job_id} (logs: {job.paths.stdout})")
    return jobs


def status(out: str | Path) -> tuple[str, str]:
    """(done | running | queued | failed | stopped | interrupted | new, details) of a run folder, from
    its metrics.json, last.pt, lock and slurm.json (and the scheduler, where sacct answers)."""
    from ..training.folderlock import describe_holder, holder
    out = Path(out)
    metrics = read_json_mapping(out / "metrics.json")
    progress = f"{metrics.get('epochs_done', 0)}/{metrics.get('epochs', '?')} epochs" if metrics else "no epoch yet"
    if metrics.get("complete") is True:
        return "done", progress
    job = read(out)
    held = holder(out)
    if job:
        state = _scheduler_state(job) or job.get("state", "queued")
        state = {"requeued": "queued"}.get(state, state) if isinstance(state, str) else None
        if state not in JOB_STATES:     # slurm.json is not trusted: a state this tool never writes
            return "unknown", f"{out / JOB_FILE} holds a job state that is not one of {', '.join(JOB_STATES)}"
        if state == "running" and held is None and job.get("cluster") == "local":
            state = "failed"          # a local job's lock is visible here: its process is gone
        detail = f"job {job.get('job_id')}, {progress}" + (f": {job['message']}" if state in ("failed", "stopped")
                                                            and job.get("message") else "")
        return state, detail + (f", logs {job['logs']}" if job.get("logs") else "")
    if held is not None:
        return "running", f"{progress}, {describe_holder(held)}"
    if (out / "last.pt").is_file():
        return "interrupted", f"{progress}; resumes from last.pt"
    return "new", ""


def _scheduler_state(job: dict) -> str | None:
    """What Slurm says of the job (sacct), in status()'s words; None where it cannot be asked."""
    if job.get("cluster") != "slurm" or shutil.which("sacct") is None or not job.get("job_id"):
        return None
    try:
        import subprocess
        out = subprocess.run(["sacct", "-j", job["job_id"], "-X", "-n", "-o", "State"], capture_output=True,
                             text=True, timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    if not out:
        return None
    word = out[-1].rstrip("+")
    for mine, theirs in SCHEDULER_STATES.items():
        if word in theirs:
            return mine
    return None        # COMPLETED: the folder says whether the run is (a --time-limit stop also completes)
