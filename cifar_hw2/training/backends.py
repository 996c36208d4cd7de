"""Process-wide switches of torch's backends for one run: cuDNN autotuning, TF32, determinism,
and where torch.compile keeps its compiled artifacts.

    cudnn.benchmark   on for CUDA runs (cuDNN times its convolution algorithms on the first
                      batch of each shape and keeps the fastest; our train batches all have one
                      shape), off with --deterministic, since the fastest algorithm may differ
                      between runs
    --tf32            fp32 matmuls on TF32 tensor cores (10-bit mantissa; torch's one switch sets
                      oneDNN's CPU matmuls too, where a CPU has TF32). PyTorch already lets
                      cuDNN convolutions use TF32 by default; this adds matmuls. Opt-in: no GPU has
                      measured what it pays here, and under bf16/fp16 autocast few matmuls are fp32
    --deterministic   torch.use_deterministic_algorithms(True) (an op without a deterministic
                      implementation raises instead of running), cudnn.deterministic, and
                      CUBLAS_WORKSPACE_CONFIG=:4096:8, which cuBLAS needs for reproducible results
                      (PyTorch "Reproducibility" notes; CUDA docs, cuBLAS "Results reproducibility")

`backend_settings` applies them and restores the previous values when the run ends, so a run in
a notebook or a test leaves the process as it found it. On the CPU only --deterministic does
anything, and the CPU's results do not change with it: its kernels are deterministic already.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import torch

from .config import ConfigError
from .naming import how_to_set, setting

CUBLAS_ENV, CUBLAS_DETERMINISTIC = "CUBLAS_WORKSPACE_CONFIG", ":4096:8"
INDUCTOR_ENV = "TORCHINDUCTOR_CACHE_DIR"


@contextlib.contextmanager
def backend_settings(device: torch.device, deterministic: bool = False, tf32: bool = False):
    """Yields a dict saying what was set (for config.json); restores everything on exit."""
    cudnn = torch.backends.cudnn
    saved = {"benchmark": cudnn.benchmark, "cudnn_deterministic": cudnn.deterministic,
             "algorithms": torch.are_deterministic_algorithms_enabled(),
             "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
             "cublas": os.environ.get(CUBLAS_ENV)}
    cuda = device.type == "cuda"
    # TF32 through torch's one public switch. Setting only torch.backends.cuda.matmul.fp32_precision
    # (torch >= 2.9) leaves the legacy flag behind, and reading the precision then raises ("mix of
    # the legacy and new APIs"), as inductor's max-autotune does. The switch also sets oneDNN's CPU
    # matmuls; both per-backend values are put back as they were. Only touched when asked for.
    tf32_was = _matmul_precision() if cuda and tf32 else None
    try:
        cudnn.benchmark = cuda and not deterministic
        if deterministic:
            cudnn.deterministic = True
            torch.use_deterministic_algorithms(True)
            # Read once, when torch makes its first cuBLAS workspace (the first CUDA matmul): fit()
            # enters here before CUDA starts. A kernel that already ran CUDA may be past that point.
            if cuda and torch.cuda.is_initialized() and CUBLAS_ENV not in os.environ:
                warnings.warn(f"--deterministic: CUDA was already in use in this process, so cuBLAS may have made its "
                              f"workspace before {CUBLAS_ENV}={CUBLAS_DETERMINISTIC} was set, and its matmuls may "
                              f"not be reproducible: set it before Python starts (or restart the kernel first)",
                              stacklevel=3)
            os.environ.setdefault(CUBLAS_ENV, CUBLAS_DETERMINISTIC)
        if tf32_was is not None:
            torch.set_float32_matmul_precision("high")      # fp32 matmuls on TF32 tensor cores
        yield {"cudnn_benchmark": cudnn.benchmark, "deterministic": deterministic,
               "cublas_workspace_config": os.environ.get(CUBLAS_ENV) if deterministic else None,
               "tf32_matmul": cuda and tf32}
    finally:
        cudnn.benchmark, cudnn.deterministic = saved["benchmark"], saved["cudnn_deterministic"]
        torch.use_deterministic_algorithms(saved["algorithms"], warn_only=saved["warn_only"])
        if saved["cublas"] is None:
            os.environ.pop(CUBLAS_ENV, None)
        else:
            os.environ[CUBLAS_ENV] = saved["cublas"]
        if tf32_was is not None:
            torch.set_float32_matmul_precision(tf32_was[0])
            torch.backends.cuda.matmul.fp32_precision, torch.backends.mkldnn.matmul.fp32_precision = tf32_was[1]


def _matmul_precision() -> tuple[str, tuple[str, str]]:
    """torch's fp32 matmul precision, and its per-backend values (CUDA, oneDNN), to put back later."""
    try:
        legacy = torch.get_float32_matmul_precision()
    except RuntimeError:     # the process set torch.backends.*.fp32_precision itself, and torch cannot say
        raise ConfigError(f"{setting('tf32')}: this process already set torch.backends.cuda.matmul.fp32_precision "
                          f"(or another backend's) itself; set TF32 one way: {how_to_set('tf32', False)}, or "
                          f"torch.set_float32_matmul_precision instead of the per-backend values") from None
    return legacy, (torch.backends.cuda.matmul.fp32_precision, torch.backends.mkldnn.matmul.fp32_precision)


def inductor_cache_dir() -> Path:
    """Where torch.compile's caches live: $TORCHINDUCTOR_CACHE_DIR if the user set it, else
    ~/.cache/cifar_hw2/inductor ($XDG_CACHE_HOME respected). Inductor's own default is under /tmp,
    which a reboot or a fresh container empties."""
    if os.environ.get(INDUCTOR_ENV):
        return Path(os.environ[INDUCTOR_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cifar_hw2" / "inductor"


def use_inductor_cache() -> Path:
    """Point inductor's on-disk caches at `inductor_cache_dir()` (call before torch.compile).

    Inductor keeps there its FX graph cache (compiled kernels per graph) and its AOTAutograd cache
    (the joint forward/backward graphs), both on by default since torch 2.5/2.6, and the Triton
    kernels: a resumed run or the next grid row with the same model and shapes loads them instead
    of compiling again. Dynamo's tracing still runs each time."""
    folder = inductor_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[INDUCTOR_ENV] = str(folder)
    for name in ("TORCHINDUCTOR_FX_GRAPH_CACHE", "TORCHINDUCTOR_AUTOGRAD_CACHE"):
        os.environ.setdefault(name, "1")
    return folder
