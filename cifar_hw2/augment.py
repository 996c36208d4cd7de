"""The report's §2.1 augmentations, as the homework's code ran them, with torchvision.transforms.v2.

Train pipeline, per image (input uint8 [3, 32, 32]):
  1. RandomHorizontalFlip(0.5)
  2. RandomRotation(±10°), black fill
  3. AutoAugment, CIFAR-10 policy (25 sub-policies, one drawn per image), grey fill 128
  4. to float in [0, 1], Normalize with the ImageNet mean/std (the backbones were trained with it)
  5. with probability p, add N(0, σ²) noise to every pixel and channel, *after* normalisation

We augment at 32 px; upsampling to 224/384 happens inside the model (on the GPU when there is one).
Per CPU core, the same ops after a resize to 224 are about 3× slower.

This per-image pipeline is the definition: notebook 01 previews it step by step, and the tests
hold the batched version (batch_augment.py, the trainer's default) to its distribution. The
trainer splits it: steps 1–3 on uint8 images (batched on the device, or with `augment_on="loader"`
`uint8_train_transform` per image in loader workers), steps 4–5 as `BatchNormalizeNoise` on the
device, per batch.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The homework's values. Its σ is in *normalised* units: 0.005 · 0.226 ≈ 0.001 of the pixel range,
# about 0.3 of one 8-bit grey level (0.29), so its noise is invisible (notebook 01 shows this).
ROTATION_DEG = 10.0
NOISE_P = 0.1
NOISE_STD = 0.005
AUTOAUGMENT_FILL = 128


def uint8_train_transform(flip: bool = True, rotation: float = ROTATION_DEG,
                          autoaugment: bool = True) -> v2.Compose:
    """Steps 1–3 on uint8 [3, 32, 32] → uint8 [3, 32, 32]. `rotation=0` or False switches a step off."""
    if rotation < 0:
        raise ValueError(f"rotation must be >= 0 degrees, got {rotation}")
    steps = []
    if flip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    if rotation:
        steps.append(v2.RandomRotation(rotation, fill=0))
    if autoaugment:
        steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10, fill=AUTOAUGMENT_FILL))
    return v2.Compose(steps or [v2.Identity()])  # Compose refuses an empty list


def normalize_transform(normalize: bool = True) -> v2.Compose:
    """uint8 → float in [0, 1], then (optionally) ImageNet z-scores. The whole test transform."""
    steps = [v2.ToDtype(torch.float32, scale=True)]
    if normalize:
        steps.append(v2.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    return v2.Compose(steps)


def test_transform() -> v2.Compose:
    return normalize_transform(True)


def noise_transform(p: float = NOISE_P, std: float = NOISE_STD) -> v2.Transform:
    """Step 5. clip=False: after normalisation values are not in [0, 1] and must not be clipped."""
    _check_noise(p, std)
    return v2.RandomApply([v2.GaussianNoise(mean=0.0, sigma=std, clip=False)], p=p)


def train_transform(flip: bool = True, rotation: float = ROTATION_DEG, autoaugment: bool = True,
                    normalize: bool = True, noise_p: float = NOISE_P,
                    noise_std: float = NOISE_STD) -> v2.Compose:
    """The full per-image train pipeline, uint8 [3, 32, 32] → float32 [3, 32, 32].

    Every step can be switched off (`flip=False`, `rotation=0`, `autoaugment=False`,
    `normalize=False`, `noise_p=0`) or tuned, e.g. `noise_std=0.1` to make the noise visible.
    """
    steps = [uint8_train_transform(flip, rotation, autoaugment), normalize_transform(normalize)]
    if noise_p > 0 and noise_std > 0:
        steps.append(noise_transform(noise_p, noise_std))
    return v2.Compose(steps)


def _check_noise(p: float, std: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"noise probability must be in [0, 1], got {p}")
    if std < 0:
        raise ValueError(f"noise std must be >= 0, got {std}")


class BatchNormalizeNoise(nn.Module):
    """Steps 4–5 for a whole batch on its device: uint8 [B, 3, H, W] → float [B, 3, H, W].

    Each sample independently gets noise with probability p, exactly as `RandomApply` does per
    image, so the batch path has the same distribution as `train_transform`. With `train=False`
    it only normalises (the test transform).
    """

    def __init__(self, noise_p: float = NOISE_P, noise_std: float = NOISE_STD, normalize: bool = True):
        super().__init__()
        _check_noise(noise_p, noise_std)
        self.noise_p, self.noise_std = noise_p, noise_std
        mean = torch.tensor(IMAGENET_MEAN if normalize else (0.0, 0.0, 0.0)).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD if normalize else (1.0, 1.0, 1.0)).view(1, 3, 1, 1)
        # Folded into one multiply-add: (x/255 - mean)/std = x * scale + shift.
        self.register_buffer("scale", 1.0 / (255.0 * std), persistent=False)
        self.register_buffer("shift", -mean / std, persistent=False)

    def forward(self, images: torch.Tensor, train: bool = True) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"expected uint8 images [B, 3, H, W], got {images.dtype}")
        x = images.float() * self.scale + self.shift
        if train and self.noise_p > 0 and self.noise_std > 0:
            apply = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < self.noise_p  # [B,1,1,1]
            x = x + apply * (self.noise_std * torch.randn_like(x))
        return x


def autoaugment_subpolicies(policy: str = "CIFAR10") -> list[str]:
    """The sub-policies of a torchvision AutoAugment policy as text: "(Invert, p=0.1, 7) → (Contrast, p=0.2, 6)".

    torchvision keeps them in the private `_policies` list (no public accessor); each image gets one
    sub-policy, drawn uniformly; each op then runs with its probability at its magnitude bin (0-9).
    """
    aa = v2.AutoAugment(v2.AutoAugmentPolicy[policy])
    fmt = lambda op: f"({op[0]}, p={op[1]:g}" + (f", {op[2]})" if op[2] is not None else ")")
    return [" → ".join(fmt(op) for op in sub) for sub in aa._policies]
