import pytest
import torch

from cifar_hw2.augment import (IMAGENET_MEAN, IMAGENET_STD, BatchNormalizeNoise, normalize_transform,
                               test_transform as make_test_transform, train_transform,
                               uint8_train_transform)
from cifar_hw2.batch_augment import BatchAugment


@pytest.fixture
def images():
    torch.manual_seed(0)
    return torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)


def test_train_pipeline_shapes_and_steps(images):
    t = train_transform()
    out = t(images[0])
    assert out.dtype == torch.float32 and out.shape == (3, 32, 32)
    names = [type(s).__name__ for s in t.transforms[0].transforms]
    assert names == ["RandomHorizontalFlip", "RandomRotation", "AutoAugment"]
    assert t.transforms[0].transforms[2].policy.name == "CIFAR10"


def test_every_step_can_be_switched_off(images):
    t = train_transform(flip=False, rotation=0, autoaugment=False, normalize=False, noise_p=0)
    assert torch.allclose(t(images[0]), images[0].float() / 255, atol=1e-7, rtol=0)
    assert torch.equal(uint8_train_transform(False, 0, False)(images[1]), images[1])


def test_test_transform_only_normalises(images):
    x = make_test_transform()(images[0])
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(x, (images[0] / 255 - mean) / std, atol=1e-6)


def test_noise_is_added_after_normalisation_and_not_clipped(images):
    torch.manual_seed(1)
    t = train_transform(flip=False, rotation=0, autoaugment=False, noise_p=1.0, noise_std=0.5)
    clean = normalize_transform()(images[0])
    diff = t(images[0]) - clean
    assert diff.std().item() == pytest.approx(0.5, rel=0.05)
    assert t(images[0]).min() < -2.1    # values below the normalised range survive: no clip


def test_batch_normalize_matches_the_per_image_transform(images):
    dev = BatchNormalizeNoise(noise_p=0.0)
    ref = torch.stack([normalize_transform()(im) for im in images])
    assert torch.allclose(dev(images), ref, atol=1e-5)
    assert torch.allclose(dev(images, train=False), ref, atol=1e-5)


def test_batch_noise_is_per_sample_with_probability_p():
    torch.manual_seed(2)
    dev = BatchNormalizeNoise(noise_p=0.3, noise_std=0.2)
    x = torch.zeros(20_000, 3, 4, 4, dtype=torch.uint8)
    diff = dev(x) - dev(x, train=False)
    noisy = diff.flatten(1).abs().amax(1) > 0
    assert noisy.float().mean().item() == pytest.approx(0.3, abs=0.015)
    assert diff[noisy].std().item() == pytest.approx(0.2, rel=0.02)


def test_bad_augmentation_arguments(images):
    with pytest.raises(ValueError, match="noise probability"):
        train_transform(noise_p=1.5)
    with pytest.raises(ValueError, match="rotation"):
        train_transform(rotation=-3)
    with pytest.raises(TypeError, match="uint8"):
        BatchNormalizeNoise()(images.float())
    with pytest.raises(ValueError, match="rotation must be >= 0 degrees, got -3"):
        BatchAugment(rotation=-3)
