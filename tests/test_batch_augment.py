"""The device path (batched, per-sample parameters) draws the same distribution as the per-image
CPU path. Everything runs on the CPU; on a GPU the same code runs on CUDA tensors."""
import math

import pytest
import torch
from torchvision.transforms import v2

from cifar_hw2.augment import train_transform, uint8_train_transform
from cifar_hw2.batch_augment import (BatchAugment, BatchAutoAugment, random_flip, rotate_batch,
                                     rotation_angles)


def se_close(a: torch.Tensor, b: torch.Tensor, k: float = 5.0) -> bool:
    """Means of two samples agree within k standard errors."""
    se = math.sqrt(a.var().item() / len(a) + b.var().item() / len(b)) + 1e-12
    return abs(a.mean().item() - b.mean().item()) < k * se


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    x[:, :, :, :16] //= 4            # a darker left half, so flips and rotations show
    return x


def test_flip_rate_is_one_half_per_sample():
    torch.manual_seed(1)
    x = torch.zeros(20_000, 1, 1, 2, dtype=torch.uint8)
    x[..., 1] = 1
    flipped = random_flip(x)[..., 0].flatten().float()
    assert flipped.mean().item() == pytest.approx(0.5, abs=0.015)
    per_image = torch.tensor([float(v2.RandomHorizontalFlip()(im)[..., 0]) for im in x[:4000]])
    assert se_close(flipped, per_image)


def test_rotation_angles_match_random_rotation():
    torch.manual_seed(2)
    ours = rotation_angles(20_000, 10.0)
    theirs = torch.tensor([v2.RandomRotation(10).make_params([torch.zeros(1, 2, 2)])["angle"] for _ in range(20_000)])
    assert ours.min() >= -10 and ours.max() <= 10 and ours.abs().max() > 9.9
    assert ours.std().item() == pytest.approx(20 / math.sqrt(12), rel=0.03)
    assert se_close(ours, theirs) and abs(ours.std().item() - theirs.std().item()) < 0.1


@pytest.mark.parametrize("angle", [-10.0, -3.7, 0.0, 6.2, 10.0])
def test_batched_rotation_equals_torchvision_rotate(images, angle):
    ours = rotate_batch(images, torch.full((len(images),), angle))
    theirs = torch.stack([v2.functional.rotate(im, angle) for im in images])
    assert (ours == theirs).float().mean().item() > 0.999


def test_subpolicies_are_drawn_uniformly():
    torch.manual_seed(3)
    aa = BatchAutoAugment()
    counts = torch.bincount(aa.sample_subpolicies(25_000), minlength=25).double()
    assert len(aa.policies) == 25
    expected = 25_000 / 25
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 52.6     # the 0.999 quantile of χ² with 24 degrees of freedom


def summaries(out: torch.Tensor, originals: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per output image: mean, std, share of grey-128 pixels (AutoAugment fill), share unchanged."""
    o = out.float()
    return {"mean": o.mean(dim=(1, 2, 3)), "std": o.std(dim=(1, 2, 3)),
            "grey_fill": (out == 128).all(dim=1).float().mean(dim=(1, 2)),
            "unchanged": (out == originals).all(dim=(1, 2, 3)).float()}


def test_autoaugment_batched_matches_per_image(images):
    torch.manual_seed(4)
    reps = 500
    batch = images.repeat(reps, 1, 1, 1)
    ours = BatchAutoAugment()(batch)
    per_image = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10, fill=128)
    theirs = torch.stack([per_image(im) for im in batch])
    a, b = summaries(ours, batch), summaries(theirs, batch)
    for key in a:
        assert se_close(a[key], b[key]), key


def test_whole_uint8_pipeline_batched_matches_per_image(images):
    torch.manual_seed(5)
    reps = 500
    batch = images.repeat(reps, 1, 1, 1)
    aug = BatchAugment(noise_p=0)
    ours = aug.autoaugment(rotate_batch(random_flip(batch), rotation_angles(len(batch), 10.0)))
    per_image = uint8_train_transform()
    theirs = torch.stack([per_image(im) for im in batch])
    a, b = summaries(ours, batch), summaries(theirs, batch)
    for key in a:
        assert se_close(a[key], b[key]), key
    black = lambda t: (t == 0).all(dim=1).float().mean(dim=(1, 2))   # rotation's black corners
    assert se_close(black(ours), black(theirs))


def test_batch_augment_output_matches_train_transform_statistics(images):
    torch.manual_seed(6)
    batch = images.repeat(300, 1, 1, 1)
    ours = BatchAugment(noise_p=1.0, noise_std=0.2)(batch)
    per_image = train_transform(noise_p=1.0, noise_std=0.2)
    theirs = torch.stack([per_image(im) for im in batch])
    assert ours.dtype == theirs.dtype == torch.float32 and ours.shape == theirs.shape
    for stat in (lambda t: t.mean(dim=(1, 2, 3)), lambda t: t.std(dim=(1, 2, 3))):
        assert se_close(stat(ours), stat(theirs))


def test_eval_mode_only_normalises(images):
    from cifar_hw2.augment import normalize_transform
    out = BatchAugment()(images, train=False)
    assert torch.allclose(out, torch.stack([normalize_transform()(im) for im in images]), atol=1e-5)
