"""The device path (batched, per-sample parameters) draws the same distribution as the per-image
CPU path. Everything runs on the CPU; on a GPU the same code runs on CUDA tensors."""
import math

import pytest
import torch
from torchvision.transforms import v2

from cifar_hw2.augment import train_transform, uint8_train_transform
from cifar_hw2.batch_augment import BatchAugment, BatchAutoAugment, flip_batch, rotate_batch


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
    flipped = flip_batch(x, BatchAugment().draw(len(x)).flip)[..., 0].flatten().float()
    assert flipped.mean().item() == pytest.approx(0.5, abs=0.015)
    per_image = torch.tensor([float(v2.RandomHorizontalFlip()(im)[..., 0]) for im in x[:4000]])
    assert se_close(flipped, per_image)


def test_rotation_angles_match_random_rotation():
    torch.manual_seed(2)
    ours = BatchAugment(rotation=10.0).draw(20_000).angle
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
    g = torch.Generator().manual_seed(3)
    aa = BatchAutoAugment()
    counts = torch.bincount(aa.draw(25_000, g)[0], minlength=25).double()
    assert len(aa.policies) == 25
    expected = 25_000 / 25
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 52.6     # the 0.999 quantile of χ² with 24 degrees of freedom


def test_each_op_fires_with_its_probability_and_signed_ops_take_both_signs():
    g = torch.Generator().manual_seed(7)
    aa = BatchAutoAugment()
    n = 200_000
    subpolicy, action = aa.draw(n, g)
    for s, sub_policy in enumerate(aa.policies):
        mine = action[subpolicy == s]                                   # [n_s, 2]
        for step, (name, p, magnitude_bin) in enumerate(sub_policy):
            taken = [aa.actions[a] for a in mine[:, step].tolist()]
            fired = torch.tensor([t[0] != "Identity" for t in taken], dtype=torch.float64)
            assert all(t[:2] == (name, magnitude_bin) for t in taken if t[0] != "Identity")
            se = math.sqrt(max(p * (1 - p), 1e-4) / len(mine))
            assert abs(fired.mean().item() - p) < 5 * se, (s, step, name)
            signs = torch.tensor([t[2] for t in taken if t[0] != "Identity"], dtype=torch.float64)
            signed = v2.AutoAugment._AUGMENTATION_SPACE[name][1] and magnitude_bin is not None
            if signed and len(signs) > 100:
                assert abs((signs < 0).double().mean().item() - 0.5) < 5 * math.sqrt(0.25 / len(signs))
            elif not signed:
                assert (signs > 0).all()


def test_batched_autoaugment_applies_exactly_the_drawn_ops(images):
    """Each sample's output equals torchvision's ops applied to it alone, in its sub-policy's order."""
    g = torch.Generator().manual_seed(8)
    aa = BatchAutoAugment()
    batch = images.repeat(40, 1, 1, 1)                                  # 320 images
    _, action = aa.draw(len(batch), g)
    ours = aa(batch, action)
    for i, image in enumerate(batch):
        x = image
        for a in action[i].tolist():
            name, magnitude_bin, sign = aa.actions[a]
            if name == "Identity":
                continue
            mags = aa.aa._AUGMENTATION_SPACE[name][0](10, 32, 32)
            magnitude = 0.0 if magnitude_bin is None else sign * float(mags[magnitude_bin])
            x = aa.aa._apply_image_or_video_transform(x, name, magnitude, aa.aa.interpolation, aa.aa._fill)
        assert torch.equal(ours[i], x), (i, [aa.actions[a] for a in action[i].tolist()])
    assert (action > 0).any(dim=1).float().mean() > 0.5                 # most samples changed


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
    ours = aug.uint8(batch, aug.draw(len(batch)))
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


def test_device_batches_do_not_depend_on_the_chunk_size(images):
    """Each batch draws from its own seed: augmenting 1 or 4 batches per call gives the same batches."""
    from cifar_hw2.data import CifarSplit
    from cifar_hw2.training.loader import DeviceBatches, SeededBatchSampler
    n = 96
    split = CifarSplit(images.repeat(12, 1, 1, 1), torch.arange(n) % 100, torch.arange(n) % 20,
                       [str(i) for i in range(100)], [str(i) for i in range(20)])
    runs = []
    for chunk_images in (16, 64, 1000):
        sampler = SeededBatchSampler(n, 16, seed=3)
        sampler.set_epoch(2)
        loader = DeviceBatches(split, sampler, torch.device("cpu"), BatchAugment(), chunk_images=chunk_images)
        runs.append(list(loader))
    assert len(runs[0]) == 6
    for other in runs[1:]:
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(runs[0], other))
    changed = torch.cat([x for x, _ in runs[0]]) != split.images[torch.cat([torch.tensor([i for i, _ in b])
                                                                             for b in sampler])]
    assert changed.any(dim=(1, 2, 3)).float().mean() > 0.5


def test_every_action_equals_torchvision_exactly(images):
    """Each action of the policy (the ops computed here with device constants included) gives
    torchvision's output pixel for pixel, on a batch that shares one grid or kernel."""
    aa = BatchAutoAugment()
    batch = images.repeat(2, 1, 1, 1)
    batch[0] = 7                                          # a constant image: AutoContrast's flat case
    for index, (name, magnitude_bin, sign) in enumerate(aa.actions):
        magnitude = aa._magnitude(name, magnitude_bin, sign, 32, 32) if name != "Identity" else 0.0
        ours = aa._run_action(batch, index, name, magnitude) if name != "Identity" else batch
        theirs = torch.stack([aa.aa._apply_image_or_video_transform(im, name, magnitude, aa.aa.interpolation,
                                                                      aa.aa._fill) for im in batch])
        assert torch.equal(ours, theirs), (name, magnitude_bin, sign)


def test_sharpness_sums_its_blur_without_a_convolution_and_equals_torchvision_on_every_factor():
    """No convolution (on a GPU: no cuDNN algorithm search per batch size, no TF32 rounding), and
    torchvision's pixels for random and flat images at every factor AutoAugment uses."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torchvision.transforms.v2 import functional as TF
    from cifar_hw2.batch_augment import sharpness
    seen = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 32, 32), generator=g, dtype=torch.uint8)
    x[:16] = x[:16] // 64 * 64                            # flat patches: sums near the rounding points
    with Record():
        sharpness(x, 1.5)
    assert not [op for op in seen if "conv" in op], seen
    aa = BatchAutoAugment()
    factors = {1 + aa._magnitude(name, b, sign, 32, 32) for name, b, sign in aa.actions if name == "Sharpness"}
    assert len(factors) == 10
    for factor in sorted(factors):
        assert torch.equal(sharpness(x, factor), TF.adjust_sharpness(x, factor)), factor


def test_a_device_chunk_makes_no_host_sync():
    """One 512-image chunk of the device path, on the meta device (shapes only, as fast as the
    planning): no host sync of any kind. torchvision's own affine op makes several, which shows
    the counter sees them."""
    from cifar_hw2.perf.syncs import HostSyncs
    aug = BatchAugment().to("meta")                       # normalisation's buffers too
    params = aug.draw(512, torch.Generator().manual_seed(0))
    assert (params.action > 0).any(dim=1).float().mean() > 0.5
    x = torch.zeros(512, 3, 32, 32, dtype=torch.uint8, device="meta")
    aug.uint8(x, params)                                  # first use makes the device constants
    for _ in range(2):
        with HostSyncs() as syncs:
            out = aug(x, generator=torch.Generator().manual_seed(1))
        assert syncs.count == 0, syncs.events
    assert out.shape == (512, 3, 32, 32) and out.device.type == "meta"
    with HostSyncs() as syncs:
        v2.functional.affine(x[:8], angle=5.0, translate=[1, 0], scale=1.0, shear=[0.0, 0.0], fill=128)
        v2.functional.autocontrast(x[:8])
    assert syncs.count >= 3, syncs.events
