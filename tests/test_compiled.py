"""The compiled training step (compiled.py) on the CPU, with dynamo's aot_eager backend (no C++
compile): what stays eager outside the compiled regions of one B4 step, host syncs inside
`Trainer.step`, and the eager fallback. B4 at batch 2 with a 64 px backbone input: the op count
does not depend on the input size, the time does."""
import collections
import math

import pytest
import torch

from cifar_hw2.training.compiled import TensorDropPath, compile_model
from cifar_hw2.training.config import make_config
from cifar_hw2.training.processes import Processes
from cifar_hw2.perf.syncs import HostSyncs
from cifar_hw2.training.trainer import Trainer

# Profiler events that mark code run by a compiled graph (forward and backward).
COMPILED_MARKS = ("Torch-Compiled Region", "CompiledFunction", "Compiled", "## Call CompiledFxGraph")
# Ops that launch no kernel (views, metadata, allocation): not counted as dispatches that cost a launch.
NO_KERNEL = {"aten::view", "aten::detach", "aten::detach_", "aten::alias", "aten::as_strided", "aten::t",
             "aten::transpose", "aten::expand", "aten::reshape", "aten::_unsafe_view", "aten::permute",
             "aten::unsqueeze", "aten::squeeze", "aten::slice", "aten::select", "aten::empty",
             "aten::empty_strided", "aten::empty_like", "aten::lift_fresh", "aten::resolve_conj",
             "aten::resolve_neg", "aten::result_type", "aten::_local_scalar_dense", "aten::is_nonzero",
             "aten::split", "aten::unbind", "aten::flatten", "aten::contiguous", "aten::set_"}


def eager_ops(events) -> collections.Counter:
    """Top-level aten ops (not called by another aten op) with no compiled region above them."""
    counts = collections.Counter()
    for e in events:
        if not e.name.startswith("aten::") or e.name in NO_KERNEL:
            continue
        parent, inside = e.cpu_parent, False
        while parent is not None:
            if parent.name.startswith("aten::") or any(m in parent.name for m in COMPILED_MARKS):
                inside = True
                break
            parent = parent.cpu_parent
        if not inside:
            counts[e.name] += 1
    return counts


@pytest.fixture(scope="module")
def b4_trainer(tiny_data, tmp_path_factory):
    cfg = make_config("quick", model="efficientnet_b4", pretrained=False, data=str(tiny_data),
                      out=str(tmp_path_factory.mktemp("b4")), train_per_class=2, val_per_class=2,
                      test_per_class=1, batch_size=2, epochs=1, compile=True, progress="off", loss="ce")
    trainer = Trainer(cfg.validate(), Processes())
    trainer.compilation.backend = "aot_eager"
    trainer.setup(None)
    trainer.model.input_size = 64
    # On CUDA the trainer's AdamW is fused (2 ops a step); on the CPU it loops over the 418
    # parameters (~4,000 ops). Use the fused one, as on CUDA, to count what CUDA would run.
    trainer.optimizer = torch.optim.AdamW(trainer.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                          fused=True)
    return trainer


@pytest.mark.slow
def test_b4_step_leaves_few_eager_ops_and_no_host_sync(b4_trainer):
    t = b4_trainer
    x = torch.randn(2, 3, 32, 32)
    labels = torch.tensor([3, 7])
    assert t.compilation.what == "38 regions, 31 DropPath rates as tensors"
    t.train_model.train()
    t.step(x, labels)                                     # compiles
    t.step(x, labels)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t.step(x, labels)
    counts = eager_ops(prof.events())
    # The eager remainder: the loss and its backward, the upsampling, dropout before the head,
    # fused AdamW. Uncompiled, the step makes ~2,400.
    assert 5 < sum(counts.values()) <= 50, counts
    from torch._dynamo.utils import counters
    assert counters["stats"]["unique_graphs"] <= 24       # identical blocks share their graph
    with HostSyncs(cpu_is_device=True) as syncs:
        t.step(x, labels)
    # The loss checks the range of CPU targets on the host; on CUDA the same check is
    # torch._assert_async (losses._check), so that branch is not a sync there.
    cuda_syncs = [e for e in syncs.events if "in _check" not in e]
    assert syncs.count <= 2 and cuda_syncs == [], syncs.events


def test_a_failing_compile_says_so_in_one_line_and_trains_eager(tiny_data, tmp_path, capsys):
    def broken_backend(gm, example_inputs):
        raise RuntimeError("no compiler here")

    cfg = make_config("quick", data=str(tiny_data), out=str(tmp_path / "run"), train_per_class=2,
                      val_per_class=2, test_per_class=1, batch_size=50, epochs=1, compile=True, progress="off")
    trainer = Trainer(cfg.validate(), Processes())
    trainer.compilation.backend = broken_backend
    trainer.setup(None)
    assert trainer.compilation.what == "whole model"      # small_cnn has no repeated blocks
    row = trainer.train_epoch(0, None, max_steps=3)
    lines = [line for line in capsys.readouterr().out.splitlines() if "torch.compile" in line]
    assert len(lines) == 1 and "training continues eager" in lines[0] and "no compiler here" in lines[0]
    assert trainer.train_model is trainer.model and trainer.compilation.what is None
    assert math.isfinite(row["train_loss"])


def test_regional_compile_keeps_the_state_dict_and_drop_path_rates():
    from timm.layers import DropPath
    from cifar_hw2.models import build_model
    torch.manual_seed(0)
    model = build_model("efficientnet_b4", 100)
    keys = list(model.state_dict())
    rates = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    same, what = compile_model(model, "regional", backend="aot_eager")
    assert same is model and what.startswith("38 regions") and list(model.state_dict()) == keys
    ours = [m for m in model.modules() if isinstance(m, TensorDropPath)]
    assert [1 - m.keep.item() for m in ours] == pytest.approx(rates, rel=1e-5) and len(ours) == 31
    assert not any(isinstance(m, DropPath) for m in model.modules())


def test_tensor_drop_path_drops_whole_samples_at_its_rate_and_rescales():
    torch.manual_seed(0)
    drop = TensorDropPath(0.2).train()
    out = drop(torch.ones(20_000, 3, 2, 2))
    kept = out[:, 0, 0, 0] != 0
    assert (out == out[:, :1, :1, :1]).all()                 # one draw per sample
    assert kept.float().mean().item() == pytest.approx(0.8, abs=0.01)
    assert out[kept].unique().tolist() == pytest.approx([1 / 0.8])
    assert torch.equal(drop.eval()(out), out)


def test_tensor_drop_path_keeps_its_rate_on_bfloat16_activations():
    """B4's first block drops 0.625 %; its keep rounded to bfloat16 (0.9922) would drop 0.78 %."""
    torch.manual_seed(0)
    drop = TensorDropPath(0.00625).train()
    out = drop(torch.ones(400_000, 1, dtype=torch.bfloat16))
    dropped = (out == 0).float().mean().item()
    assert dropped == pytest.approx(0.00625, abs=0.0006)     # 5 standard errors; bf16's rate is 13 away
    assert out.dtype == torch.bfloat16 and out[out != 0].unique().tolist() == [(torch.tensor(1 / 0.99375)
                                                                               .to(torch.bfloat16).item())]


@pytest.mark.parametrize("resuming", [False, True])
def test_only_a_resumed_run_loads_the_compile_artifacts_beside_it(resuming, tmp_path, monkeypatch):
    """compile_cache.bin is compiled code (docs/security.md): a resumed run loads it; a new run, or
    one replacing the folder's run with --overwrite (which may be another model's), does not, and
    --overwrite deletes it with the old run."""
    from cifar_hw2.training import compiled
    from cifar_hw2.training.runfolder import run_paths
    (tmp_path / compiled.ARTIFACTS).write_bytes(b"not from this run")
    loaded = []
    monkeypatch.setattr(compiled, "load_artifacts", lambda folder: loaded.append(folder) or True)
    compilation = compiled.Compilation("default", "whole", torch.device("cpu"), tmp_path, True, resuming=resuming)
    compilation.backend = "aot_eager"
    model = torch.nn.Linear(2, 2)
    compilation.wrap(model, model)
    assert loaded == ([tmp_path] if resuming else []) and compilation.warm == resuming
    assert tmp_path / compiled.ARTIFACTS in run_paths(tmp_path)
