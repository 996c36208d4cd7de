"""Guards for the private APIs of other libraries that the package still uses, because no public
one does the job (each use says why, where it is made). If a release changes or drops one, its
test here fails with one message naming the private API, the installed version and the package
file that uses it, instead of a confusing error deep inside a training run.

.ci/run runs this file on the newest versions and again on the lowest that pyproject.toml admits
(the GPU image's torch 2.11, torchvision 0.26, timm 1.0.29). A guard whose API the package no
longer uses fails too, so that it is removed with the use.
"""
import inspect
import math
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def guard(library: str, api: str, user: str, problem: str) -> str:
    """The failure message: what changed, in which version, and who relies on it."""
    import importlib
    version = getattr(importlib.import_module(library), "__version__", "?")
    return (f"{library} {version}: the private API {api} {problem}. {user} relies on it; adapt that code "
            f"(or find a public replacement) and this guard together")


@pytest.mark.parametrize("user, api", [
    ("cifar_hw2/training/precision.py", "._scale"),
    ("cifar_hw2/batch_augment.py", "._policies"),
    ("cifar_hw2/augment.py", "._policies"),              # autoaugment_subpolicies, for notebook 01
    ("cifar_hw2/batch_augment.py", "._AUGMENTATION_SPACE"),
    ("cifar_hw2/batch_augment.py", "._apply_image_or_video_transform"),
    ("cifar_hw2/batch_augment.py", "._fill"),
    ("cifar_hw2/experiments/slurm.py", "_make_sbatch_string"),
    ("cifar_hw2/losses.py", "torch._assert_async"),
    ("cifar_hw2/perf/syncs.py", "torch.utils._python_dispatch"),
    ("cifar_hw2/perf/bench.py", "torch._dynamo.utils"),
    ("cifar_hw2/training/compiled.py", "_compiled_call_impl"),
    ("cifar_hw2/training/compiled.py", "torch.utils._triton"),
    ("cifar_hw2/training/compiled.py", "torch._dynamo.config"),
    ("cifar_hw2/training/compiled.py", "torch._dynamo.exc"),
    ("cifar_hw2/cli/parser.py", "self._actions"),
])
def test_each_guarded_private_api_is_still_used(user, api):
    assert api in (ROOT / user).read_text(), f"{user} no longer uses {api}: remove its guard from {__file__}"


# ---- torch

def test_grad_scaler_keeps_its_scale_as_a_device_tensor_that_update_lowers_on_overflow():
    from cifar_hw2.training.precision import scaled_step
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    user = "cifar_hw2/training/precision.py (scaled_step: fp16 skipped steps counted without a host sync)"
    scaler.scale(torch.ones(()))                     # makes the scale tensor
    scale = getattr(scaler, "_scale", None)
    assert isinstance(scale, torch.Tensor) and scale.dim() == 0 and scale.dtype == torch.float32, \
        guard("torch", "GradScaler._scale", user, f"is no longer a 0-d float32 tensor (got {scale!r})")
    skipped = scaled_step(scaler, (weight * 2).sum(), optimizer)
    assert int(skipped) == 0 and scale.item() == 2.0 ** 10, \
        guard("torch", "GradScaler._scale", user, "changed on a step without overflow")
    skipped = scaled_step(scaler, (weight * math.inf).sum(), optimizer)
    assert int(skipped) == 1 and scaler._scale.item() == 2.0 ** 9, \
        guard("torch", "GradScaler._scale", user, "was not halved by update() after an overflowing step")


def test_assert_async_checks_on_the_device_and_passes_a_true_condition():
    user = "cifar_hw2/losses.py (the target-range check inside a GPU step, without a host sync)"
    check = getattr(torch, "_assert_async", None)
    assert callable(check), guard("torch", "torch._assert_async", user, "is gone")
    check(torch.tensor(True), "never shown")
    with pytest.raises(RuntimeError):
        check(torch.tensor(False), "targets must be in range")


def test_torch_dispatch_mode_sees_every_aten_call():
    user = "cifar_hw2/perf/syncs.py (HostSyncs counts would-be host syncs)"
    try:
        from torch.utils._python_dispatch import TorchDispatchMode
    except ImportError:
        pytest.fail(guard("torch", "torch.utils._python_dispatch.TorchDispatchMode", user, "cannot be imported"))
    seen = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(func)
            return func(*args, **(kwargs or {}))

    with Record():
        torch.ones(2).sum().item()
    assert torch.ops.aten._local_scalar_dense.default in seen, \
        guard("torch", "TorchDispatchMode.__torch_dispatch__", user, f"no longer sees .item() (saw {seen})")


def test_dynamo_counters_are_a_nested_counter_table():
    user = "cifar_hw2/perf/bench.py (_cache_state: were the compile caches warm)"
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        pytest.fail(guard("torch", "torch._dynamo.utils.counters", user, "cannot be imported"))
    assert isinstance(counters["inductor"], dict) and all(isinstance(v, int) for v in counters["inductor"].values()), \
        guard("torch", "torch._dynamo.utils.counters", user, "is no longer a table of integer counters per kind")


def test_module_compile_keeps_its_compiled_call_in_an_attribute_that_none_undoes():
    user = "cifar_hw2/training/compiled.py (uncompile: regions run eager again after a failed compile)"
    traced = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            traced.append(torch.compiler.is_compiling())
            return x + 1

    probe = Probe()
    probe.compile(backend="eager")
    assert getattr(probe, "_compiled_call_impl", None) is not None, \
        guard("torch", "nn.Module._compiled_call_impl", user, "is not set by Module.compile()")
    probe(torch.zeros(2))
    probe._compiled_call_impl = None
    probe(torch.zeros(2))
    assert traced[0] and not traced[-1], \
        guard("torch", "nn.Module._compiled_call_impl", user, f"set to None no longer runs eager ({traced})")


def test_compile_support_probes_and_settings_exist():
    user = "cifar_hw2/training/compiled.py (compile_unavailable, _raise_recompile_limit, compile_errors)"
    try:
        from torch.utils._triton import has_triton
    except ImportError:
        pytest.fail(guard("torch", "torch.utils._triton.has_triton", user, "cannot be imported"))
    assert isinstance(has_triton(), bool), guard("torch", "has_triton()", user, "no longer answers True or False")
    config = torch._dynamo.config
    limits = [n for n in ("recompile_limit", "cache_size_limit") if isinstance(getattr(config, n, None), int)]
    assert limits, guard("torch", "torch._dynamo.config.recompile_limit", user, "is gone (and so is cache_size_limit)")
    import torch._dynamo.exc as dynamo_exc
    assert issubclass(getattr(dynamo_exc, "TorchDynamoException", type(None)), Exception), \
        guard("torch", "torch._dynamo.exc.TorchDynamoException", user, "is gone")


# ---- torchvision: AutoAugment's tables and op dispatcher (no public per-op API)

def test_autoaugment_policy_and_magnitude_tables_keep_their_shape():
    import torchvision
    from torchvision.transforms import v2
    user = ("cifar_hw2/batch_augment.py (BatchAutoAugment draws torchvision's sub-policies per sample) and "
            "augment.py (autoaugment_subpolicies)")
    aa = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10, fill=128)
    policies, space = getattr(aa, "_policies", None), getattr(aa, "_AUGMENTATION_SPACE", None)
    assert isinstance(policies, list) and len(policies) == 25, \
        guard("torchvision", "AutoAugment._policies", user, "is no longer the list of 25 CIFAR-10 sub-policies")
    for sub_policy in policies:
        assert len(sub_policy) == 2 and all(isinstance(name, str) and 0 <= p <= 1 and (b is None or isinstance(b, int))
                                            for name, p, b in sub_policy), \
            guard("torchvision", "AutoAugment._policies", user, f"has an entry not (name, p, bin): {sub_policy}")
    assert isinstance(space, dict), guard("torchvision", "AutoAugment._AUGMENTATION_SPACE", user, "is gone")
    for name, _, magnitude_bin in {step for sub in policies for step in sub}:
        entry = space.get(name)
        # an op without magnitude (Invert, Equalize, ...) has bin None and its table is never read
        ok = (isinstance(entry, tuple) and len(entry) == 2 and callable(entry[0]) and isinstance(entry[1], bool)
              and (magnitude_bin is None or len(entry[0](10, 32, 32)) == 10 > magnitude_bin))
        assert ok, guard("torchvision", f"AutoAugment._AUGMENTATION_SPACE[{name!r}]", user,
                         f"is not (magnitudes(num_bins, h, w) -> 10 values, signed) in torchvision "
                         f"{torchvision.__version__}: {entry!r}")


def test_autoaugment_op_dispatcher_applies_the_public_ops_with_its_fill():
    from torchvision.transforms import InterpolationMode, v2
    user = "cifar_hw2/batch_augment.py (BatchAutoAugment runs each op through torchvision's dispatcher)"
    aa = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10, fill=128, interpolation=InterpolationMode.NEAREST)
    apply = getattr(aa, "_apply_image_or_video_transform", None)
    assert callable(apply), guard("torchvision", "AutoAugment._apply_image_or_video_transform", user, "is gone")
    params = list(inspect.signature(apply).parameters)
    assert params == ["image", "transform_id", "magnitude", "interpolation", "fill"], \
        guard("torchvision", "AutoAugment._apply_image_or_video_transform", user, f"takes {params} now")
    assert isinstance(getattr(aa, "_fill", None), dict), guard("torchvision", "AutoAugment._fill", user,
                                                               "is no longer the fill dict the dispatcher takes")
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    F = v2.functional
    expected = {"Invert": (0.0, F.invert(image)), "Brightness": (0.3, F.adjust_brightness(image, 1.3)),
                "Posterize": (4.0, F.posterize(image, 4)),
                "Rotate": (20.0, F.rotate(image, 20.0, interpolation=InterpolationMode.NEAREST, fill=128))}
    for name, (magnitude, theirs) in expected.items():
        ours = apply(image, name, magnitude, aa.interpolation, aa._fill)
        assert torch.equal(ours, theirs), guard("torchvision", f"AutoAugment._apply_image_or_video_transform({name!r})",
                                                user, "no longer equals the public op it stands for")


# ---- argparse (the standard library's)

def test_argparse_lists_a_parsers_actions_with_their_option_strings():
    import argparse
    user = "cifar_hw2/cli/parser.py (Parser._near_flags: the nearest flag to a misspelt one)"
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", "-b")
    actions = getattr(parser, "_actions", None)
    assert isinstance(actions, list) and any(a.option_strings == ["--batch-size", "-b"] for a in actions), \
        guard("argparse", "ArgumentParser._actions", user, "no longer lists the actions with their option_strings")


# ---- submitit

def test_submitit_writes_the_sbatch_script_from_its_parameters():
    pytest.importorskip("submitit")
    user = "cifar_hw2/experiments/slurm.py (sbatch_script: `--launcher slurm --dry-run`)"
    try:
        from submitit.slurm.slurm import _make_sbatch_string
    except ImportError:
        pytest.fail(guard("submitit", "submitit.slurm.slurm._make_sbatch_string", user, "cannot be imported"))
    from cifar_hw2.experiments.slurm import SlurmOptions
    params = SlurmOptions(gpus=2, time="90", partition="gpu", options=["cpus-per-task=4", "qos=high"]).parameters("x")
    try:
        script = _make_sbatch_string(command="python -m job", folder="/tmp/logs/%j", map_count=3, **params)
    except TypeError as e:
        pytest.fail(guard("submitit", "_make_sbatch_string", user, f"refuses these parameters: {e}"))
    lines = script.splitlines()
    for line in ("#SBATCH --array=0-2%3", "#SBATCH --gpus-per-node=2", "#SBATCH --ntasks-per-node=2",
                 "#SBATCH --time=90", "#SBATCH --partition=gpu", "#SBATCH --qos=high", "#SBATCH --job-name=x",
                 "#SBATCH --signal=USR2@300", "#SBATCH --cpus-per-task=4"):
        assert line in lines, guard("submitit", "_make_sbatch_string", user, f"no longer writes {line!r}")
    # an option given again replaces submitit's own line rather than adding a second one
    assert sum(line.startswith("#SBATCH --cpus-per-task=") for line in lines) == 1, \
        guard("submitit", "_make_sbatch_string", user, "writes additional_parameters beside, not over, its own")
    assert "python -m job" in script
