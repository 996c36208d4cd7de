"""torch.compile for the training step: regional compilation, static shapes, portable caches,
and a one-line fallback to eager.

Why regional. One B4 training step dispatches ~2,400 aten ops (counted with the CPU profiler), each
with host overhead and many of them a CUDA kernel launch: the step is launch-bound, ~85 ms at batch 32 and 64
alike on an H200 (benchmarks/RESULTS.md, GPU). Fusion plus
CUDA graphs (`--compile-mode reduce-overhead`) removes that, but compiling the whole model did not
finish its warm-up within 150 s. B4's 32 MBConv blocks and Swin-B's 24 transformer blocks are a
few kinds repeated: compiling each block on its own (PyTorch's "regional compilation" recipe,
`module.compile()` per block) lets identical blocks reuse one compiled graph, so only the distinct
kinds are compiled. The pieces between blocks (stem, head, norms, patch embedding, downsampling)
are compiled as regions of their own, so that little stays eager: the loss, dropout before the
head, the optimizer (tests/test_compiled.py bounds what is left).

Two things would defeat the sharing, and are handled here:
  - timm's DropPath keeps its probability as a Python float, which dynamo specialises on: every
    block's rate differs (0 → 0.2 across the net), so each block would compile on its own and
    dynamo would stop after 8 and run the rest eager. `TensorDropPath` holds it in a buffer (not
    in the state dict; checkpoints are unchanged), a graph input instead of a constant.
  - dynamo's recompile limit (8 per code object) is raised to the number of regions.

`dynamic=False`: one static batch size per compiled model (the train loader drops the last partial
batch). Evaluation runs eager (`eager()`), so its short last batch never reaches a graph.

Caches: inductor's on-disk caches live in backends.inductor_cache_dir() (kept across runs and grid
rows); where torch offers portable cache artifacts (torch.compiler.save_cache_artifacts, torch >=
2.7), they are also saved beside the run after the first step and loaded before compiling, so a
resumed run starts warm even on a machine whose inductor cache is empty.

One run's compile, from setup to the warm-up line, is a `Compilation` (the Trainer holds one when
cfg.compile): what it compiled, the caches it started from, the first step's seconds, and the
one-line fallback to eager, whether compiling cannot start (no Triton) or fails at the first step.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from .backends import use_inductor_cache

SCOPES = ("regional", "whole")
ARTIFACTS = "compile_cache.bin"   # beside the run: torch.compiler.save_cache_artifacts()


class TensorDropPath(nn.Module):
    """timm's DropPath (stochastic depth, per sample, scaled by 1/keep) with its keep probability
    in a 0-dim buffer, so that blocks with different rates share one compiled graph."""

    def __init__(self, drop_prob: float, scale_by_keep: bool = True, device=None):
        super().__init__()
        self.active = drop_prob > 0          # a rate of 0 is the identity (traced as such)
        self.scale_by_keep = scale_by_keep
        self.register_buffer("keep", torch.tensor(1.0 - drop_prob, device=device), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.active and self.training):
            return x
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)          # one draw per sample: [B, 1, 1, 1]
        # Drawn and scaled in float32, as timm's Python-float rate is: a keep of 0.99375 rounded to
        # bfloat16 first would be 0.9922, a 25 % higher drop rate under bf16 autocast.
        mask = torch.empty(shape, device=x.device, dtype=self.keep.dtype).bernoulli_(self.keep)
        if self.scale_by_keep:
            mask = mask / self.keep
        return x * mask.to(x.dtype)


def tensor_drop_paths(model: nn.Module) -> int:
    """Replace every timm DropPath in `model` by a TensorDropPath (same rate); returns how many."""
    from timm.layers import DropPath
    n = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, DropPath):
                device = next((p.device for p in parent.parameters()), None)
                setattr(parent, name, TensorDropPath(child.drop_prob, child.scale_by_keep, device=device))
                n += 1
    return n


def regions(model: nn.Module) -> list[nn.Module] | None:
    """The modules compiled one by one for a Classifier of models.py, in forward order; None for a
    model without repeated blocks (small_cnn), which is compiled whole."""
    bb = getattr(model, "backbone", None)
    if bb is None:
        return None
    if hasattr(bb, "blocks") and hasattr(bb, "conv_stem"):           # timm EfficientNet
        return [bb.conv_stem, bb.bn1, *(block for stage in bb.blocks for block in stage),
                bb.conv_head, bb.bn2, bb.global_pool, bb.classifier]
    if hasattr(bb, "layers") and hasattr(bb, "patch_embed"):          # timm Swin
        parts = [bb.patch_embed]
        for stage in bb.layers:
            parts += [stage.downsample, *stage.blocks]
        return parts + [bb.norm, bb.head]
    return None


def compile_model(model: nn.Module, scope: str = "regional", mode: str = "default",
                  backend: str = "inductor") -> tuple[nn.Module, str]:
    """Compile `model` for training; returns (the module to call, what was done, in words).

    regional: every region of `regions(model)` is compiled in place (`module.compile`), and
    `model` itself is returned (its state dict and parameters are untouched); whole: one
    torch.compile of the whole model, returned as a wrapper. Nothing compiles until the first call.
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown compile scope {scope!r}; valid: {', '.join(SCOPES)}")
    kwargs = dict(mode=mode, dynamic=False) if backend == "inductor" else dict(backend=backend, dynamic=False)
    parts = regions(model) if scope == "regional" else None
    if parts is None:
        return torch.compile(model, **kwargs), "whole model"
    dropped = tensor_drop_paths(model)
    _raise_recompile_limit(len(parts))
    for part in parts:
        part.compile(**kwargs)
    return model, f"{len(parts)} regions" + (f", {dropped} DropPath rates as tensors" if dropped else "")


def compile_for_training(model: nn.Module, train_model: nn.Module, scope: str, mode: str,
                         backend: str) -> tuple[nn.Module, str]:
    """Compile what a training step calls; returns (the module the step calls now, in words).

    regional (where `regions` knows the model): its blocks are compiled in place, so `train_model`
    (`model` itself, or its DDP wrapper under torchrun) is still what the step calls; otherwise one
    graph of `train_model`, the wrapper included."""
    if scope == "regional" and regions(model) is not None:
        return train_model, compile_model(model, "regional", mode, backend)[1]
    return compile_model(train_model, "whole", mode, backend)


def failure_line(error: BaseException) -> str:
    """A failed compile in one line: the backend's own error (no C++ compiler, no Triton, ...),
    not dynamo's wrapper around it."""
    root = error
    while (inner := getattr(root, "inner_exception", None) or root.__cause__) is not None:
        root = inner
    text = str(root).strip().splitlines()
    return f"{type(root).__name__}: {text[0][:200] if text else ''}"


def uncompile(model: nn.Module) -> None:
    """Undo `compile_model(scope="regional")` in place: every region runs eager again."""
    for module in model.modules():
        if getattr(module, "_compiled_call_impl", None) is not None:
            module._compiled_call_impl = None


def _raise_recompile_limit(n: int) -> None:
    """Each region kind compiles once per distinct shape; allow one compile per region and more."""
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):          # renamed in torch 2.6; either exists
        if hasattr(config, name) and getattr(config, name) < n:
            setattr(config, name, n)
    if hasattr(config, "accumulated_recompile_limit"):
        config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, 4 * n)


def compile_unavailable(device: torch.device) -> str | None:
    """Why torch.compile (inductor) cannot run on `device`, or None if it can be tried."""
    if device.type == "cuda":
        try:
            from torch.utils._triton import has_triton
        except ImportError:
            return None
        if not has_triton():
            return "Triton is not installed or does not support this GPU"
    if device.type == "mps":
        return "inductor does not support MPS in this project (untested)"
    return None


def compile_errors() -> tuple[type[BaseException], ...]:
    """The exception types a failed compile raises at the first call (dynamo's, and inductor's,
    e.g. no C++ compiler or no Triton); anything else (a real error in the step) is not caught."""
    import torch._dynamo.exc as dynamo_exc
    kinds = [dynamo_exc.TorchDynamoException]
    try:
        import torch._inductor.exc as inductor_exc
        kinds += [getattr(inductor_exc, name) for name in ("InductorError", "CppCompileError")
                  if hasattr(inductor_exc, name)]
    except ImportError:
        pass
    return tuple(kinds)


def eager():
    """A context in which compiled code runs eagerly (evaluation, flop counting): no graph is
    compiled for eval mode or for a short last batch. torch >= 2.6: set_stance; older: dynamo's
    disable switch."""
    stance = getattr(torch.compiler, "set_stance", None)
    if stance is not None:
        return stance("force_eager")
    return torch._dynamo.config.patch(disable=True)


def load_artifacts(folder: Path) -> bool:
    """Load the portable cache artifacts saved beside a run, if torch has them and they exist."""
    path = Path(folder) / ARTIFACTS
    load = getattr(torch.compiler, "load_cache_artifacts", None)
    if load is None or not path.is_file():
        return False
    try:
        load(path.read_bytes())
        return True
    except Exception as e:          # a cache from another torch version: compile afresh
        print(f"torch.compile: could not load {path} ({type(e).__name__}); compiling afresh", flush=True)
        return False


def save_artifacts(folder: Path) -> Path | None:
    """Save what has been compiled so far as portable artifacts beside the run (torch >= 2.7)."""
    save = getattr(torch.compiler, "save_cache_artifacts", None)
    if save is None:
        return None
    try:
        result = save()
    except Exception:
        return None
    if not result:
        return None
    data = result[0]
    path = Path(folder) / ARTIFACTS
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


class Compilation:
    """One run's torch.compile of its training step: `wrap` at setup, `first_step` around the first
    step (it compiles, or loads from the caches), `fall_back` to eager where compiling cannot run."""

    def __init__(self, mode: str, scope: str, device: torch.device, out: Path, main: bool, resuming: bool):
        self.mode, self.scope, self.device, self.out, self.main = mode, scope, device, Path(out), main
        self.resuming = resuming            # the run continues the one in `out` (--resume)
        self.backend = "inductor"   # tests set "aot_eager" (no C++ compile on the CPU)
        # reduce-overhead / max-autotune replay CUDA graphs: each step must say a new one begins.
        self.graphed = device.type == "cuda" and mode in ("reduce-overhead", "max-autotune")
        self.what: str | None = None        # what was compiled, in words; None while eager
        self.cache: str | None = None       # inductor's cache folder, for config.json
        self.warm = False                   # portable cache artifacts were loaded before compiling
        self.seconds: float | None = None   # the first compiled step, measured once (0.0 after a fallback)
        self._model = self.eager_model = None   # what `fall_back` uncompiles, and what the step calls then

    def wrap(self, model: nn.Module, train_model: nn.Module) -> nn.Module:
        """Compile what the step calls (`train_model`: `model` itself or its DDP wrapper) per the
        run's scope and mode; returns the module the step calls now. Nothing compiles before the first step."""
        self._model, self.eager_model = model, train_model
        why_not = compile_unavailable(self.device)
        if why_not:
            return self.fall_back(why_not)
        self.cache = str(use_inductor_cache())
        # Only a resumed run loads the artifacts beside it: they are compiled code (docs/security.md),
        # and a folder being replaced (--overwrite) may hold another model's.
        self.warm = load_artifacts(self.out) if self.resuming else False
        compiled, self.what = compile_for_training(model, train_model, self.scope, self.mode, self.backend)
        return compiled

    def fall_back(self, why: str) -> nn.Module:
        """Say in one line why the run trains eager; returns the eager module the step calls from now on."""
        uncompile(self._model)
        self.graphed, self.what, self.seconds = False, None, 0.0
        if self.main:
            print(f"torch.compile is not available here ({why}); training continues eager", flush=True)
        return self.eager_model

    def first_step(self, step, say):
        """Run `step()`, the first compiled step, time it and `say` so, with the caches it started
        from; rank 0 saves the cache artifacts beside the run. Returns what `step` returned, or None
        where compiling failed (no C++ compiler or Triton, an unsupported GPU): then it has fallen
        back, and the caller redoes the step eager (a failure in backward leaves that batch's
        BatchNorm statistics counted once more: negligible)."""
        start = time.perf_counter()
        try:
            out = step()
        except compile_errors() as e:
            self.fall_back(failure_line(e))
            return None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)     # the step's kernels belong to its seconds
        self.seconds = time.perf_counter() - start
        saved = save_artifacts(self.out) if self.main else None
        start_kind = "warm, from the artifacts beside the run" if self.warm else "cache folder"
        say(f"torch.compile ({self.mode}, {self.what}) warm-up: {self.seconds:.1f} s for the first step "
            f"({start_kind}: {self.cache}" + (f"; artifacts saved to {saved}" if saved else "") + ")")
        return out
