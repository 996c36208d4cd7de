import pytest
import timm
import torch

from cifar_hw2.losses import build_loss
from cifar_hw2.models import ModelError, build_model, count_parameters, feature_channels


def test_small_cnn_logits_and_features_feed_the_mc_loss():
    model = build_model("small_cnn")
    logits, feats = model(torch.randn(2, 3, 32, 32), return_features=True)
    assert logits.shape == (2, 100) and feats.shape == (2, 300, 8, 8)
    assert feature_channels("small_cnn") == 300                # what config validation checks MC against
    _, feats10 = build_model("small_cnn", 10)(torch.randn(1, 3, 32, 32), return_features=True)
    assert feats10.shape[1] == feature_channels("small_cnn", 10) == 30
    assert 200_000 < count_parameters(model) < 250_000
    build_loss("mc")(logits, torch.tensor([0, 1]), feats).backward()


def test_efficientnet_b4_upsamples_to_224_and_returns_1792_channels():
    model = build_model("efficientnet_b4", pretrained=False).eval()
    seen = {}
    model.backbone.conv_stem.register_forward_hook(lambda m, i, o: seen.update(shape=i[0].shape))
    with torch.no_grad():
        logits, feats = model(torch.randn(1, 3, 32, 32), return_features=True)
    assert seen["shape"] == (1, 3, 224, 224)
    assert logits.shape == (1, 100) and feats.shape == (1, 1792, 7, 7)
    assert feature_channels("efficientnet_b4") == 1792       # what config validation checks MC against
    assert 17_000_000 < count_parameters(model) < 18_000_000


def test_nearest_upsampling_repeats_pixels():
    model = build_model("small_cnn")
    model.input_size = 64
    x = torch.arange(4.0).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    up = model.upsample(x)
    assert up.shape == (1, 3, 64, 64) and torch.equal(up[0, 0, :32, :32], torch.zeros(32, 32))


def test_swin_b_features_are_nchw_and_head_starts_at_zero():
    model = build_model("swin_b", pretrained=False).eval()
    assert torch.count_nonzero(model.backbone.head.fc.weight) == 0
    with torch.no_grad():
        logits, feats = model(torch.randn(1, 3, 32, 32), return_features=True)
    assert logits.shape == (1, 100) and feats.shape == (1, 1024, 12, 12)
    assert feature_channels("swin_b") == 1024
    assert torch.allclose(logits, torch.zeros_like(logits))   # zero head: uniform start
    parts = build_loss("mc").parts(logits, torch.tensor([5]), feats)
    assert torch.isfinite(parts["total"])


def test_unknown_model_lists_valid_names():
    with pytest.raises(ModelError, match="valid models: efficientnet_b4, swin_b, small_cnn"):
        build_model("resnet50")


def test_pretrained_offline_gives_instructions(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="model.safetensors.*pretrained=False"):
        build_model("efficientnet_b4", pretrained=True)


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "unreachable hub"])
def test_pretrained_without_network_fails_in_seconds_without_asking_the_hub(how, monkeypatch, tmp_path):
    """Offline, timm retries the hub for ~50 s before failing; the check before it takes seconds.
    The hub is made unreachable by pointing it at a closed local port: no network is needed."""
    import time

    import cifar_hw2.models as models
    monkeypatch.setenv("HF_HOME", str(tmp_path))               # an empty cache
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    if how == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
        assert not models.hub_reachable()
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: pytest.fail("the hub was asked"))
    start = time.perf_counter()
    with pytest.raises(ModelError, match="could not get the pretrained weights of efficientnet_b4.*"
                                         "`python -m cifar_hw2 weights`.*"
                                         "model.safetensors.*--pretrained PATH.*--no-pretrained"):
        models.build_model("efficientnet_b4", pretrained=True)
    assert time.perf_counter() - start < 5


class Payload:
    """Unpickling this touches a file: what a malicious weight file would do instead."""
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pretrained_from_a_local_file(tmp_path):
    reference = timm.create_model("efficientnet_b4", pretrained=False)   # 1000-class head
    path = tmp_path / "b4.pth"
    torch.save(reference.state_dict(), path)
    model = build_model("efficientnet_b4", pretrained=str(path))
    assert torch.equal(model.backbone.conv_stem.weight, reference.conv_stem.weight)
    assert model.backbone.classifier.out_features == 100
    with pytest.raises(ModelError, match="does not exist"):
        build_model("efficientnet_b4", pretrained=str(tmp_path / "missing.pth"))
    (tmp_path / "bad.pth").write_bytes(b"junk")
    with pytest.raises(ModelError, match="not a usable weight file"):
        build_model("efficientnet_b4", pretrained=str(tmp_path / "bad.pth"))
    # Another model's weights: timm loads them non-strictly (the head is replaced) and would have
    # left B4 randomly initialised without a word
    torch.save(build_model("small_cnn").state_dict(), tmp_path / "small_cnn.pth")
    with pytest.raises(ModelError) as e:
        build_model("efficientnet_b4", pretrained=str(tmp_path / "small_cnn.pth"))
    assert str(e.value).startswith(f"{tmp_path / 'small_cnn.pth'} is not a weight file of efficientnet_b4: ")
    assert "weight tensors are not in it (e.g. conv_stem.weight, bn1.weight, bn1.bias)" in str(e.value)
    # A pickle that would run code: refused unread, without torch's advice to unpickle it fully
    ran = tmp_path / "ran"
    torch.save({"conv_stem.weight": Payload(ran)}, tmp_path / "payload.pth")
    with pytest.raises(ModelError) as e:
        build_model("efficientnet_b4", pretrained=str(tmp_path / "payload.pth"))
    assert str(e.value).endswith("it holds objects other than tensors, which are never unpickled here")
    assert not ran.exists()
    with pytest.raises(ModelError, match="trained from scratch"):
        build_model("small_cnn", pretrained=True)


def test_swin_uses_fused_attention_and_matches_the_unfused_path():
    """Swin-B's window attention runs through F.scaled_dot_product_attention; its features equal
    those of timm's unfused matmul + softmax path to 1e-4 of their scale (fp32, CPU)."""
    from cifar_hw2.models import build_model, set_fused_attention
    torch.manual_seed(0)
    model = build_model("swin_b", 100, pretrained=False).eval()
    layers = [m for m in model.modules() if type(m).__name__ == "WindowAttention"]
    assert len(layers) == 24 and all(m.fused_attn for m in layers)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        _, fused = model(x, return_features=True)
        assert set_fused_attention(model, False) == 24
        _, plain = model(x, return_features=True)
    assert fused.shape == (1, 1024, 12, 12)
    scale = plain.abs().max().item()
    assert scale > 0 and (fused - plain).abs().max().item() <= 1e-4 * scale


def test_flop_count_includes_swin_bs_window_attention_on_the_fused_path():
    """The flop counter has no formula for the CPU's fused attention kernel: counted as it runs,
    Swin-B's 24 window attentions were 0 FLOPs (88.9 G). count_flops counts them on the math path,
    as the unfused model counts them, which is Liu et al.'s 47.0 G multiply-adds at 384 px, doubled."""
    from cifar_hw2.models import build_model, count_flops, set_fused_attention
    model = build_model("swin_b", 100, pretrained=False)   # training mode, fused attention on
    fused = count_flops(model)
    assert model.training
    set_fused_attention(model, False)
    assert fused == count_flops(model)
    assert fused / 2e9 == pytest.approx(47.08, abs=0.01)


def test_resnet9_maps_32px_to_a_512_channel_4x4_map_and_starts_at_uniform_predictions():
    from cifar_hw2.training.config import ConfigError, make_config
    model = build_model("resnet9", 100)
    assert 6_500_000 < count_parameters(model) < 6_700_000
    logits, feats = model(torch.randn(3, 3, 32, 32), return_features=True)
    assert logits.shape == (3, 100) and feats.shape == (3, 512, 4, 4)
    assert torch.equal(logits, torch.zeros(3, 100))       # zero head: p = 1/K for every class at the start
    assert make_config("gpu-reference", loss="mc").model == "resnet9"     # MC's groups fit its 512 channels
    with pytest.raises(ConfigError, match="resnet9 is trained from scratch"):
        make_config("gpu-reference", pretrained=True)
