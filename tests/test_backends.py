"""Backend switches (determinism, cuDNN autotuning, TF32), the compile cache folder, SyncBatchNorm
conversion, and the one-shape train batches a captured step relies on."""
import json
import os
import warnings

import pytest
import torch

from cifar_hw2.training.config import ConfigError
from cifar_hw2.training.backends import CUBLAS_ENV, backend_settings, inductor_cache_dir, use_inductor_cache
from cifar_hw2.training.loader import DeviceBatches, SeededBatchSampler
from cifar_hw2.models import build_model
from cifar_hw2.training.processes import convert_sync_batchnorm
from cifar_hw2.training.trainer import fit

from test_trainer import read_history, tiny


def test_deterministic_settings_are_applied_and_then_restored(monkeypatch):
    monkeypatch.delenv(CUBLAS_ENV, raising=False)
    before = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
              torch.are_deterministic_algorithms_enabled())
    with backend_settings(torch.device("cpu"), deterministic=True) as picked:
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark and os.environ[CUBLAS_ENV] == ":4096:8"
        assert picked == {"cudnn_benchmark": False, "deterministic": True, "cublas_workspace_config": ":4096:8",
                          "tf32_matmul": False}
    assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
            torch.are_deterministic_algorithms_enabled()) == before
    assert CUBLAS_ENV not in os.environ


def test_cudnn_benchmark_is_on_for_cuda_unless_deterministic():
    # Only flags are set here; nothing touches a GPU.
    with backend_settings(torch.device("cuda", 0)) as picked:
        assert torch.backends.cudnn.benchmark and picked["cudnn_benchmark"] and not picked["tf32_matmul"]
    with backend_settings(torch.device("cuda", 0), deterministic=True) as picked:
        assert not torch.backends.cudnn.benchmark and not picked["cudnn_benchmark"]
    with backend_settings(torch.device("cpu"), tf32=True) as picked:
        assert not picked["tf32_matmul"]                # TF32 is a CUDA thing; the CPU is left alone


def test_deterministic_warns_where_cublas_may_have_started_without_its_setting(monkeypatch):
    # cuBLAS reads CUBLAS_WORKSPACE_CONFIG when its handle is made: in a kernel that already ran CUDA
    # matmuls, setting it now may change nothing, and the run would not be reproducible unannounced.
    monkeypatch.delenv(CUBLAS_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.warns(UserWarning, match="CUDA was already in use in this process"):
        with backend_settings(torch.device("cuda", 0), deterministic=True):
            pass
    monkeypatch.setenv(CUBLAS_ENV, ":4096:8")                    # set before Python started: nothing to say
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with backend_settings(torch.device("cuda", 0), deterministic=True):
            pass


def test_fit_sets_the_cublas_workspace_before_the_trainer_starts_cuda(monkeypatch, tmp_path):
    # The Trainer starts CUDA (the precision's capability check, the model's move): by then fit must
    # have set CUBLAS_WORKSPACE_CONFIG and deterministic algorithms, or every fresh CUDA run with
    # --deterministic would warn that CUDA was already in use.
    from cifar_hw2.training import trainer as trainer_module
    from cifar_hw2.training.config import make_config

    class Started(Exception):
        pass

    seen = {}

    def trainer_starts(cfg, procs, resume_command):
        seen.update(cublas=os.environ.get(CUBLAS_ENV), algorithms=torch.are_deterministic_algorithms_enabled())
        raise Started

    monkeypatch.delenv(CUBLAS_ENV, raising=False)
    monkeypatch.setattr(trainer_module, "Trainer", trainer_starts)
    with pytest.raises(Started):
        trainer_module.fit(make_config("quick", deterministic=True, device="cpu", out=str(tmp_path / "run")))
    assert seen == {"cublas": ":4096:8", "algorithms": True}
    assert CUBLAS_ENV not in os.environ and not torch.are_deterministic_algorithms_enabled()    # restored


def test_tf32_is_set_and_restored_through_the_one_public_switch():
    # Only flags: nothing touches a GPU. torch >= 2.9 has two ways to say TF32; setting only the new
    # per-backend one made every read of the precision raise "mix of the legacy and new APIs"
    # (inductor's max-autotune reads it).
    matmul = torch.backends.cuda.matmul, torch.backends.mkldnn.matmul
    before = torch.get_float32_matmul_precision(), [m.fp32_precision for m in matmul]
    with backend_settings(torch.device("cuda", 0), tf32=True) as picked:
        assert picked["tf32_matmul"] and torch.get_float32_matmul_precision() == "high"
        assert torch.backends.cuda.matmul.allow_tf32              # both APIs agree, neither raises
    assert (torch.get_float32_matmul_precision(), [m.fp32_precision for m in matmul]) == before


def test_tf32_after_the_new_api_was_used_is_one_line():
    # A process that set the per-backend value itself: torch cannot say what to restore, so --tf32
    # says so in one line, and changes nothing.
    matmul = torch.backends.cuda.matmul
    was, matmul.fp32_precision = matmul.fp32_precision, "tf32"
    try:
        with pytest.raises(ConfigError, match=r"^tf32: this process already set .*: tf32=False, or torch.set_float32_matmul_precision"):
            with backend_settings(torch.device("cuda", 0), tf32=True):
                pass
        assert matmul.fp32_precision == "tf32" and not torch.backends.cudnn.benchmark
    finally:
        matmul.fp32_precision = was
    assert not torch.backends.cuda.matmul.allow_tf32


@pytest.mark.slow
def test_deterministic_cpu_run_equals_the_default_one(tiny_data, tmp_path):
    """The CPU is bit-exact with and without --deterministic (its kernels are deterministic)."""
    fit(tiny(tiny_data, tmp_path / "plain", epochs=1))
    fit(tiny(tiny_data, tmp_path / "det", epochs=1, deterministic=True))
    assert read_history(tmp_path / "plain") == read_history(tmp_path / "det")
    backends = json.loads((tmp_path / "det" / "config.json").read_text())["backends"]
    assert backends["deterministic"] and not backends["cudnn_benchmark"]
    assert not torch.are_deterministic_algorithms_enabled()     # restored after the run


def test_inductor_cache_folder_is_stable_unless_the_user_chose_one(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert inductor_cache_dir() == tmp_path / "cache" / "cifar_hw2" / "inductor"
    assert use_inductor_cache() == tmp_path / "cache" / "cifar_hw2" / "inductor"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache" / "cifar_hw2" / "inductor")
    assert (tmp_path / "cache" / "cifar_hw2" / "inductor").is_dir()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert use_inductor_cache() == tmp_path / "mine"


def test_sync_batchnorm_conversion_keeps_efficientnet_b4_outputs():
    """timm's B4 fuses each BatchNorm with its SiLU (BatchNormAct2d). torch's converter made them
    plain SyncBatchNorms that never call the SiLU; the outputs then differ completely."""
    from timm.layers.norm_act import SyncBatchNormAct
    torch.manual_seed(0)
    model = build_model("efficientnet_b4", pretrained=False).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        n_bn = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
        params = {id(p) for p in model.parameters()}
        converted = convert_sync_batchnorm(model).eval()
        after = converted(x)
    assert torch.equal(before, after)
    assert sum(isinstance(m, SyncBatchNormAct) for m in converted.modules()) == n_bn > 90
    assert {id(p) for p in converted.parameters()} == params     # an optimizer built before still holds them


def test_train_batches_all_have_one_shape(tiny_data):
    """A CUDA graph is captured for one input shape: the train batches (drop_last) never end short."""
    from cifar_hw2.data import load_cifar100
    split = load_cifar100("train", tiny_data)                    # 1,200 images
    sampler = SeededBatchSampler(len(split), 500, seed=0)
    sampler.set_epoch(0)
    shapes = {tuple(images.shape) for images, _ in DeviceBatches(split, sampler, torch.device("cpu"))}
    assert shapes == {(500, 3, 32, 32)} and len(sampler) == 2
