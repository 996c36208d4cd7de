"""Models by name: `build_model(name, num_classes=100, pretrained=...)`.

    "efficientnet_b4"  timm EfficientNet-B4, ImageNet-1k weights (timm/efficientnet_b4.ra2_in1k),
                       input upsampled 32 → 224 inside the model; feature map [B, 1792, 7, 7]
    "swin_b"           timm Swin-B, patch 4, window 12, ImageNet-22k weights
                       (timm/swin_base_patch4_window12_384.ms_in22k), input upsampled 32 → 384;
                       feature map [B, 1024, 12, 12]
    "small_cnn"        a 7-layer VGG-style CNN with BatchNorm for 32 px (0.22 M parameters), trained
                       from scratch: quick runs, tests and the CPU reference; feature map
                       [B, 300, 8, 8] = 3 channels per class, the MC paper's setting
    "resnet9"          Page (2018)'s ResNet-9 for 32 px (6.6 M parameters), trained from scratch:
                       the GPU reference (preset gpu-reference); feature map [B, 512, 4, 4]

Every model maps normalised images [B, 3, 32, 32] to logits [B, K]; `model(x, return_features=True)`
also returns the last feature map as [B, C, H, W] (Swin's NHWC is permuted), so the MC loss works
on every model. The homework could only use it on B4.

Upsampling uses `nearest` by default: the homework's `nn.Upsample(size=...)` has that default
mode. It simply repeats each pixel 7× (224) or 12× (384); "bilinear" is an option.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class ModelError(ValueError):
    """Unknown model, or pretrained weights that cannot be had."""


@dataclass(frozen=True)
class ModelSpec:
    timm_name: str | None       # None: defined here
    input_size: int             # the side the backbone sees
    hub_tag: str | None         # timm pretrained tag (weights on the Hugging Face hub)
    timm_kwargs: dict
    feature_channels: int | None = None   # C of the feature map; None: 3 per class (small_cnn)


MODELS = {
    # drop_rate 0.4 before the head and stochastic depth 0.2: what torchvision's B4 (the homework's)
    # uses.
    "efficientnet_b4": ModelSpec("efficientnet_b4", 224, "ra2_in1k",
                                 dict(drop_rate=0.4, drop_path_rate=0.2), feature_channels=1792),
    # drop_path 0.2 as in the homework; the new head starts at zero (see _zero_head).
    "swin_b": ModelSpec("swin_base_patch4_window12_384", 384, "ms_in22k", dict(drop_path_rate=0.2),
                        feature_channels=1024),
    "small_cnn": ModelSpec(None, 32, None, {}),
    "resnet9": ModelSpec(None, 32, None, {}, feature_channels=512),
}


def feature_channels(name: str, num_classes: int = 100) -> int:
    """C of the feature map that `model(x, return_features=True)` returns, without building the
    model: config validation checks the MC loss's channel groups against it before any training."""
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    spec = MODELS[name]
    return spec.feature_channels if spec.feature_channels is not None \
        else SmallCNN.CHANNELS_PER_CLASS * num_classes


class SmallCNN(nn.Module):
    """conv-bn-relu ×2 at 32 px (24 ch), pool, ×2 at 16 px (48 ch), pool, ×2 at 8 px (96 ch),
    then a 1×1 conv to 3 channels per class ([B, 300, 8, 8] for 100 classes), GAP, linear.

    About 0.22 M parameters and 48 MFLOPs per image; ~700 images/s per training step on 2 CPU cores.
    """

    CHANNELS_PER_CLASS = 3

    def __init__(self, num_classes: int = 100, widths=(24, 48, 96), channels_per_class: int = CHANNELS_PER_CLASS):
        super().__init__()

        def conv(cin, cout, k=3):
            return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        a, b, c = widths
        self.num_features = channels_per_class * num_classes
        self.features = nn.Sequential(
            *conv(3, a), *conv(a, a), nn.MaxPool2d(2),
            *conv(a, b), *conv(b, b), nn.MaxPool2d(2),
            *conv(b, c), *conv(c, c),
            *conv(c, self.num_features, k=1),
        )
        self.head = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, f):
        return self.head(f.mean(dim=(2, 3)))


class ResNet9(nn.Module):
    """The ResNet-9 of David Page's "How to train your ResNet" (Myrtle.ai, 2018; the DAWNBench
    CIFAR-10 entry that trains to 94 % in minutes), for 32 px, from scratch:

        prep     conv 64                                     [B,  64, 32, 32]
        layer1   conv 128, max-pool 2, + residual (2 convs)  [B, 128, 16, 16]
        layer2   conv 256, max-pool 2                        [B, 256,  8,  8]
        layer3   conv 512, max-pool 2, + residual (2 convs)  [B, 512,  4,  4]  (the feature map)
        head     global max-pool, linear                     [B, K]

    Every conv is 3x3, bias-free, followed by BatchNorm and ReLU. 6.6 M parameters and 0.38 G
    multiply-adds per image: fewer and wider layers than a CIFAR ResNet-18 (11 M, 0.56 G), hence
    fewer kernel launches per step. Page's head multiplies the logits by 0.125, because the
    max-pooled features are large and a random head starts far from p = 1/K (here: CE ~7 at the
    first step against ln 100 = 4.6). A fixed logit scale would itself change the calibration this
    model is used to measure, so the head starts at zero instead (_zero_head, as Swin-B's does).
    """

    def __init__(self, num_classes: int = 100):
        super().__init__()

        def conv(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                 nn.ReLU(inplace=True))

        self.num_features = 512
        self.prep = conv(3, 64)
        self.layer1 = nn.Sequential(conv(64, 128), nn.MaxPool2d(2))
        self.res1 = nn.Sequential(conv(128, 128), conv(128, 128))
        self.layer2 = nn.Sequential(conv(128, 256), nn.MaxPool2d(2))
        self.layer3 = nn.Sequential(conv(256, 512), nn.MaxPool2d(2))
        self.res3 = nn.Sequential(conv(512, 512), conv(512, 512))
        self.head = nn.Linear(512, num_classes)
        _zero_head(self.head)

    def forward_features(self, x):
        x = self.layer1(self.prep(x))
        x = x + self.res1(x)
        x = self.layer3(self.layer2(x))
        return x + self.res3(x)

    def forward_head(self, f):
        return self.head(f.amax(dim=(2, 3)))


# The models defined here (ModelSpec.timm_name None), by name.
OWN_MODELS = {"small_cnn": SmallCNN, "resnet9": ResNet9}


class Classifier(nn.Module):
    """Upsample (if needed) → backbone features → head. See the module docstring."""

    def __init__(self, name: str, backbone: nn.Module, input_size: int, upsample_mode: str = "nearest",
                 features_nhwc: bool = False):
        super().__init__()
        if upsample_mode not in ("nearest", "bilinear", "bicubic"):
            raise ModelError(f"unknown upsample_mode {upsample_mode!r}; valid: nearest, bilinear, bicubic")
        self.name, self.backbone = name, backbone
        self.input_size, self.upsample_mode, self.features_nhwc = input_size, upsample_mode, features_nhwc

    def upsample(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == self.input_size and x.shape[-2] == self.input_size:
            return x
        align = None if self.upsample_mode == "nearest" else False
        return F.interpolate(x, size=(self.input_size, self.input_size), mode=self.upsample_mode,
                             align_corners=align)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        feats = self.backbone.forward_features(self.upsample(x))   # NCHW, or NHWC for Swin
        logits = self.backbone.forward_head(feats)
        if not return_features:
            return logits
        return logits, (feats.permute(0, 3, 1, 2) if self.features_nhwc else feats)


def build_model(name: str, num_classes: int = 100, pretrained: bool | str | os.PathLike = False,
                upsample_mode: str = "nearest") -> Classifier:
    """Build a model by name. `pretrained` is False, True (download from the hub) or a local file.

    A local file is a timm state dict (`.safetensors` or `.pth`/`.bin`) for the same architecture,
    e.g. the hub's model.safetensors; its 1000- or 21841-class head is dropped for a new one.
    """
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    if num_classes <= 0:
        raise ModelError(f"num_classes must be positive, got {num_classes}")
    spec = MODELS[name]
    if spec.timm_name is None:
        if pretrained:
            raise ModelError(f"{name} has no pretrained weights: it is trained from scratch; "
                             f"pass pretrained=False")
        return Classifier(name, OWN_MODELS[name](num_classes), spec.input_size, upsample_mode)
    backbone = _create_timm(name, spec, num_classes, pretrained)
    if name == "swin_b":
        _zero_head(backbone.head.fc)
        set_fused_attention(backbone, True)
    return Classifier(name, backbone, spec.input_size, upsample_mode, features_nhwc=(name == "swin_b"))


def pretrained_models() -> list[str]:
    """The models that start from ImageNet weights on the Hugging Face hub."""
    return [name for name, spec in MODELS.items() if spec.hub_tag]


def fetch_pretrained(name: str) -> str:
    """Put `name`'s ImageNet weights into the local Hugging Face hub cache, downloading them if they
    are not there, and return the hub id. Afterwards pretrained=True finds them without network (the
    cache is $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub: on a cluster, a shared
    disk serves every node)."""
    if name not in pretrained_models():
        raise ModelError(f"{name!r} has no pretrained weights; models with them: {', '.join(pretrained_models())}")
    spec = MODELS[name]
    # timm downloads into the cache; the 1-way head is thrown away. The advice fits this command.
    _create_timm(name, spec, 1, True, advice=(
        "Run this where the hub can be reached (with the cache on a disk shared with this machine), "
        "or download model.safetensors from https://huggingface.co/{hub_id} and pass its path to "
        "train as --pretrained PATH."))
    return _hub_id(spec)


_RUN_ADVICE = ("Fetch them once where the hub can be reached (`python -m cifar_hw2 weights`: into the hub cache, "
              "read offline afterwards), or download model.safetensors from https://huggingface.co/{hub_id} and "
              "pass its path (--pretrained PATH; in a notebook pretrained=PATH), or train from scratch "
              "(--no-pretrained; pretrained=False).")


def _create_timm(name: str, spec: ModelSpec, num_classes: int, pretrained,
                 advice: str = _RUN_ADVICE) -> nn.Module:
    """timm's model; `advice` (with {hub_id}) ends the error when hub weights cannot be had."""
    import timm

    hub_id = _hub_id(spec)
    arch = f"{spec.timm_name}.{spec.hub_tag}"
    kwargs = dict(num_classes=num_classes, **spec.timm_kwargs)
    if pretrained is False or pretrained is None:
        return timm.create_model(arch, pretrained=False, **kwargs)
    if pretrained is True:
        def unavailable(why: str) -> ModelError:
            return ModelError(
                f"could not get the pretrained weights of {name} from the Hugging Face hub ({hub_id}): "
                f"{why}. " + advice.format(hub_id=hub_id))
        why = why_no_pretrained(name)
        if why:
            raise unavailable(why)
        try:
            return timm.create_model(arch, pretrained=True, **kwargs)
        except (OSError, RuntimeError) as e:  # huggingface_hub's LocalEntryNotFoundError is an OSError
            raise unavailable(type(e).__name__) from None
    path = Path(pretrained).expanduser()
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "is not a regular file" if path.exists() else "does not exist"
        raise ModelError(f"pretrained weights file {path} {what}; pass a timm state dict "
                         f"for {spec.timm_name} (e.g. model.safetensors from https://huggingface.co/{hub_id}), "
                         f"True to download, or False")
    try:
        model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
        in_file = set(timm.models.load_state_dict(str(path)))
    except Exception as e:
        why = f"{type(e).__name__}: {str(e)[:300]}"
        if "weights_only" in why:       # torch's advice to unpickle it fully is not advice for a file from outside
            why = "it holds objects other than tensors, which are never unpickled here"
        raise ModelError(f"{path} is not a usable weight file for {spec.timm_name}: {why}") from None
    # timm loads a file non-strictly where the classifier is replaced (100 classes, not 1,000): a file
    # of another model would load nothing and leave a randomly initialised network, silently.
    heads = model.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    missing = [n for n, _ in model.named_parameters() if n not in in_file and n.rsplit(".", 1)[0] not in heads]
    if missing:
        raise ModelError(f"{path} is not a weight file of {spec.timm_name}: {len(missing)} of the model's "
                         f"{sum(1 for _ in model.parameters())} weight tensors are not in it (e.g. "
                         f"{', '.join(missing[:3])}); pass a timm state dict for {spec.timm_name}, such as "
                         f"model.safetensors from https://huggingface.co/{hub_id}")
    return model


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_host() -> tuple[str, int]:
    from urllib.parse import urlparse
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def why_no_pretrained(name: str) -> str | None:
    """Why `name`'s ImageNet weights cannot be had here: not in the local hub cache, and the hub
    switched off (HF_HUB_OFFLINE) or out of reach. None where they can (or may: the hub answers).
    Offline, timm would spend ~50 s in hub retries before failing: this asks in seconds."""
    hub_id = _hub_id(MODELS[name])
    if _in_hub_cache(hub_id):
        return None
    if _hub_offline():
        return "HF_HUB_OFFLINE is set and they are not in the local cache"
    if not hub_reachable():
        return "{}:{} cannot be reached (no network?)".format(*_hub_host())
    return None


def _hub_id(spec: ModelSpec) -> str:
    return f"timm/{spec.timm_name}.{spec.hub_tag}"


def _in_hub_cache(hub_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return any(isinstance(try_to_load_from_cache(hub_id, f), str)
               for f in ("model.safetensors", "pytorch_model.bin"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """Can a TCP connection to the hub be opened within `timeout` seconds (name lookup included)?

    Behind a proxy (HTTPS_PROXY/ALL_PROXY) a direct connection says nothing, so it answers True and
    lets the hub client try."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    import socket
    import threading
    result = []

    def connect():
        try:
            socket.create_connection(_hub_host(), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    # A thread, because a name lookup without network can block longer than the socket timeout.
    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout + 1)
    return bool(result and result[0])


def set_fused_attention(model: nn.Module, on: bool = True) -> int:
    """Switch timm's attention layers to F.scaled_dot_product_attention (fused kernels: flash or
    memory-efficient attention on CUDA) or back; returns how many layers it set.

    timm leaves it off for Swin (`use_fused_attn(experimental=True)`), so each window attention
    materialises its full score tensor [B·windows, heads, 144, 144] through a matmul, an fp32
    softmax and another matmul. The fused path adds the relative position bias and the shift mask
    as `attn_mask`: the same function (tests/test_models.py compares both paths). It does not store
    the softmax's probabilities, but in the 11 blocks that shift their windows that mask is itself
    score-sized, so the memory it saves is partial (docs/gpu.md)."""
    n = 0
    for module in model.modules():
        if hasattr(module, "fused_attn") and isinstance(getattr(module, "fused_attn"), bool):
            module.fused_attn = on
            n += 1
    return n


def _zero_head(fc: nn.Linear) -> None:
    """Start the new classifier at zero, as the homework's Swin-B did: every class starts at
    p = 1/K and the pretrained features are not disturbed by a random head in the first steps."""
    nn.init.zeros_(fc.weight)
    nn.init.zeros_(fc.bias)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, images: torch.Tensor | None = None) -> int:
    """FLOPs (2 × multiply-adds, as torch's FlopCounterMode counts) of one forward pass in eval mode,
    of `images` (default: one 32 × 32 image). The counter counts matrix products and convolutions
    only: the upsampling to the backbone's input size adds nothing.

    Attention runs on the math path here: the counter has no formula for the CPU's fused kernel and
    counted Swin-B's window attention as 0 (88.9 GFLOPs instead of 94.2; Liu et al. give 47.0 G
    multiply-adds at 384 px). The math path is the same function (tests/test_models.py)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode
    if images is None:
        images = torch.zeros(1, 3, 32, 32, device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    try:
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(images)
    finally:
        model.train(was_training)
    return counter.get_total_flops()
