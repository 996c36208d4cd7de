"""precision: auto | bf16 | fp16 | fp32 -- the choice per device (GPUs faked by their compute
capability), and the fp16 + GradScaler path run on the CPU: its step, its skipped steps, its
checkpoint and exact resume."""
import json

import pytest
import torch

from cifar_hw2.training.checkpoint import load_checkpoint
from cifar_hw2.training.config import ConfigError, make_config, upgrade_saved
from cifar_hw2.training.precision import choose_precision
from cifar_hw2.training.processes import Processes
from cifar_hw2.training.runfolder import settings_changed
from cifar_hw2.training.trainer import Trainer, fit

from test_trainer import read_history, tiny


@pytest.mark.parametrize("capability, picked, scaler", [((9, 0), "bf16", False), ((8, 0), "bf16", False),
                                                        ((8, 6), "bf16", False), ((7, 5), "fp16", True),
                                                        ((7, 0), "fp16", True), ((6, 1), "fp16", True)])
def test_auto_on_cuda_follows_the_compute_capability(capability, picked, scaler, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    p = choose_precision("auto", torch.device("cuda", 0))
    assert p.name == picked and p.uses_scaler == scaler and p.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[picked]
    assert f"compute capability {capability[0]}.{capability[1]}" in p.reason and p.reason.startswith("auto")
    assert (p.make_scaler() is not None) == scaler


def test_explicit_bf16_on_an_old_gpu_is_honoured_with_a_warning_in_the_reason(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    p = choose_precision("bf16", torch.device("cuda", 0))
    assert p.name == "bf16" and "emulates bf16" in p.reason and not p.uses_scaler


def test_auto_is_fp32_on_cpu_and_mps_and_half_precision_on_mps_is_refused():
    for kind in ("cpu", "mps"):
        p = choose_precision("auto", torch.device(kind))
        assert p.name == "fp32" and p.make_scaler() is None and p.reason == f"auto: fp32 on {kind}; autocast pays on CUDA only"
    with pytest.raises(ValueError, match="precision fp16 is not supported on mps"):
        choose_precision("fp16", torch.device("mps"))
    with pytest.raises(ValueError, match="unknown precision 'fp8'; valid choices: auto, bf16, fp16, fp32"):
        choose_precision("fp8", torch.device("cpu"))
    with pytest.raises(ConfigError, match="unknown precision 'half'; valid choices: auto, bf16, fp16, fp32"):
        make_config("quick", precision="half")


def test_a_config_saved_with_amp_reads_as_precision():
    assert upgrade_saved({"amp": True, "lr": 1.0}) == {"precision": "auto", "lr": 1.0}
    assert upgrade_saved({"amp": False}) == {"precision": "fp32"}
    cfg = make_config("quick")
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("precision", "compile_mode", "tf32", "deterministic")}
    assert settings_changed({**old, "amp": True}, cfg) == {}
    assert settings_changed({**old, "amp": False}, cfg) == {"precision": ("fp32", "auto")}


def _trainer(tiny_data, out, **kw):
    trainer = Trainer(tiny(tiny_data, out, **kw), Processes())
    trainer.setup(None)
    return trainer


@pytest.mark.slow
def test_fp16_step_on_the_cpu_trains_and_skips_a_step_whose_gradients_overflow(tiny_data, tmp_path):
    trainer = _trainer(tiny_data, tmp_path / "run", precision="fp16")
    assert trainer.precision.name == "fp16" and trainer.scaler is not None
    images, labels = next(iter(trainer.loader))
    x = trainer.augment(images)
    weights = [p.detach().clone() for p in trainer.model.parameters()]
    loss, logits = trainer.step(x, labels)
    assert logits.dtype == torch.float16 and torch.isfinite(loss) and not loss.requires_grad
    assert any(not torch.equal(a, b) for a, b in zip(weights, trainer.model.parameters()))
    assert int(trainer.skipped_steps) == 0 and trainer.scaler.get_scale() == 2.0 ** 16
    # A scale this large makes the scaled loss (and so every gradient) inf in fp32: the scaler
    # must skip the optimizer step, halve the scale and the trainer count the skip.
    trainer.scaler._scale.fill_(1e38)
    weights = [p.detach().clone() for p in trainer.model.parameters()]
    state = [{k: v.clone() for k, v in s.items() if torch.is_tensor(v)} for s in trainer.optimizer.state.values()]
    loss, _ = trainer.step(x, labels)
    assert torch.isfinite(loss)                                  # the loss itself was fine
    assert all(torch.equal(a, b) for a, b in zip(weights, trainer.model.parameters()))
    assert all(torch.equal(s[k], t[k]) for s, t in zip(state, trainer.optimizer.state.values()) for k in s)
    assert int(trainer.skipped_steps) == 1 and trainer.scaler.get_scale() == pytest.approx(5e37)


@pytest.mark.slow
def test_fp16_run_checkpoints_the_scaler_and_resumes_exactly(tiny_data, tmp_path):
    # fp16 on the CPU is many times slower than fp32: 100 training images (2 steps), 100 val, 100 test
    small = dict(precision="fp16", train_per_class=1, val_per_class=1, test_per_class=1)
    fit(tiny(tiny_data, tmp_path / "full", epochs=2, **small))
    fit(tiny(tiny_data, tmp_path / "part", epochs=1, **small))
    state = load_checkpoint(tmp_path / "part" / "last.pt")
    assert set(state["scaler"]) >= {"scale", "_growth_tracker"} and state["skipped_steps"] == 0
    assert state["scaler"]["_growth_tracker"] == 2      # one clean step per batch: 100 / 50
    fit(tiny(tiny_data, tmp_path / "part", epochs=2, resume=True, **small))
    assert read_history(tmp_path / "full") == read_history(tmp_path / "part")
    assert load_checkpoint(tmp_path / "part" / "last.pt")["scaler"] == load_checkpoint(tmp_path / "full" / "last.pt")["scaler"]
    config = json.loads((tmp_path / "full" / "config.json").read_text())
    assert config["precision"]["used"] == "fp16" and config["precision"]["reason"].startswith("asked for")
    # fp16 is another computation than fp32: a resume may not switch precision
    with pytest.raises(Exception, match="precision: 'fp16' in the checkpoint, 'fp32' now"):
        fit(tiny(tiny_data, tmp_path / "part", epochs=3, resume=True, **{**small, "precision": "fp32"}))
