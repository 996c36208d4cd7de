"""The train augmentation for a whole batch on its device, with per-sample random parameters.

torchvision.transforms.v2 applied to a batch draws *one* set of parameters for all of it (one
angle, one flip, one AutoAugment sub-policy), which is not the homework's augmentation. Here
every sample draws its own, from the same distributions as the per-image pipeline in augment.py:

    flip        each sample with probability 0.5
    rotation    angle ~ U(−10°, 10°) per sample, nearest, black fill (one batched grid_sample)
    AutoAugment sub-policy ~ U{0..24} per sample; each op fires with its probability, signed ops
                flip their sign with probability 0.5; the ops are torchvision's own, applied to
                the sub-batch that drew the same (sub-policy, op, sign)
    normalise + noise  as augment.BatchNormalizeNoise

Input uint8 [B, 3, H, W] on any device; output float [B, 3, H, W] on that device. On a GPU this
takes the CPU out of the loop entirely; tests check that both paths draw the same distribution.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import InterpolationMode, v2

from .augment import AUTOAUGMENT_FILL, NOISE_P, NOISE_STD, ROTATION_DEG, BatchNormalizeNoise


def random_flip(x: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    """Flip each image of [B, C, H, W] horizontally with probability p."""
    flip = torch.rand(x.shape[0], device=x.device) < p
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def rotate_batch(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image by its own angle (degrees, counter-clockwise, about the centre), nearest
    neighbour, zero fill; the same geometry as torchvision's rotate (expand=False)."""
    b, _, h, w = x.shape
    theta = degrees.to(torch.float32) * (math.pi / 180)
    cos, sin = torch.cos(theta), torch.sin(theta)
    # affine_grid maps output (x, y) in [-1, 1] to input coordinates: the inverse rotation. Pixel
    # aspect is square only when h == w; scale the shear terms for other shapes.
    matrix = torch.zeros(b, 2, 3, device=x.device)
    matrix[:, 0, 0], matrix[:, 0, 1] = cos, -sin * h / w
    matrix[:, 1, 0], matrix[:, 1, 1] = sin * w / h, cos
    grid = F.affine_grid(matrix, (b, 1, h, w), align_corners=False)
    out = F.grid_sample(x.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.round().to(x.dtype) if not x.is_floating_point() else out


def rotation_angles(b: int, degrees: float = ROTATION_DEG, device="cpu") -> torch.Tensor:
    """b angles ~ U(−degrees, degrees), as v2.RandomRotation draws one per image."""
    return (torch.rand(b, device=device) * 2 - 1) * degrees


def random_rotation(x: torch.Tensor, degrees: float = ROTATION_DEG) -> torch.Tensor:
    return rotate_batch(x, rotation_angles(x.shape[0], degrees, x.device))


class BatchAutoAugment(nn.Module):
    """AutoAugment with a sub-policy drawn per sample (torchvision's policies and ops)."""

    def __init__(self, policy: str = "CIFAR10", fill: int = AUTOAUGMENT_FILL):
        super().__init__()
        # torchvision exposes no public per-op API; its private policy table and op dispatcher are
        # used so that the ops and magnitudes are exactly those of v2.AutoAugment.
        self.aa = v2.AutoAugment(v2.AutoAugmentPolicy[policy], fill=fill,
                                 interpolation=InterpolationMode.NEAREST)
        self.policies = self.aa._policies

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        dev = x.device
        choice = self.sample_subpolicies(b, dev)
        # Group the batch by sub-policy: one host sync (the counts) per batch, none per op.
        order = torch.argsort(choice, stable=True)
        counts = torch.bincount(choice, minlength=len(self.policies)).tolist()
        grouped, pieces, start = x[order], [], 0
        for sub_policy, n in zip(self.policies, counts):
            if n == 0:
                continue
            images = grouped[start:start + n]
            for name, p, magnitude_bin in sub_policy:
                magnitudes_fn, signed = self.aa._AUGMENTATION_SPACE[name]
                mags = magnitudes_fn(10, h, w)
                magnitude = float(mags[magnitude_bin]) if mags is not None else 0.0  # e.g. Equalize
                fires = (torch.rand(n, device=dev) < p).view(-1, 1, 1, 1)
                applied = self._op(images, name, magnitude)
                if signed and mags is not None:  # each sample flips the sign with probability 0.5
                    negative = (torch.rand(n, device=dev) < 0.5).view(-1, 1, 1, 1)
                    applied = torch.where(negative, self._op(images, name, -magnitude), applied)
                images = torch.where(fires, applied, images)
            pieces.append(images)
            start += n
        out = torch.empty_like(x)
        out[order] = torch.cat(pieces)
        return out

    def sample_subpolicies(self, b: int, device="cpu") -> torch.Tensor:
        """Each sample's sub-policy index, uniform over the policy's sub-policies (as v2.AutoAugment)."""
        return torch.randint(len(self.policies), (b,), device=device)

    def _op(self, images: torch.Tensor, name: str, magnitude: float) -> torch.Tensor:
        return self.aa._apply_image_or_video_transform(images, name, magnitude, self.aa.interpolation,
                                                       self.aa._fill)


class BatchAugment(nn.Module):
    """The whole train pipeline for a uint8 batch on its device → normalised float batch."""

    def __init__(self, flip: bool = True, rotation: float = ROTATION_DEG, autoaugment: bool = True,
                 noise_p: float = NOISE_P, noise_std: float = NOISE_STD):
        super().__init__()
        self.flip, self.rotation = flip, rotation
        self.autoaugment = BatchAutoAugment() if autoaugment else None
        self.normalize_noise = BatchNormalizeNoise(noise_p, noise_std)

    def forward(self, images: torch.Tensor, train: bool = True) -> torch.Tensor:
        if train:
            if self.flip:
                images = random_flip(images)
            if self.rotation:
                images = random_rotation(images, self.rotation)
            if self.autoaugment is not None:
                images = self.autoaugment(images)
        return self.normalize_noise(images, train=train)
