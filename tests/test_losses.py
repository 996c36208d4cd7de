import math

import pytest
import torch
import torch.nn.functional as F

from cifar_hw2.losses import (HOMEWORK_GROUP_SIZES, LOSSES, MutualChannelLoss, build_loss,
                              channel_split)
from cifar_hw2.models import MODELS, feature_channels


def binary_logits(p_true: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-class logits whose softmax gives class 0 exactly the probabilities p_true."""
    p = torch.tensor(p_true, dtype=torch.float64)
    return torch.stack([p.log(), (1 - p).log()], dim=1), torch.zeros(len(p), dtype=torch.long)


# ------------------------------------------------------------------ cross-entropy and focal

def test_ce_and_focal_on_hand_computed_values():
    z, y = binary_logits([0.2])
    assert build_loss("ce")(z, y).item() == pytest.approx(math.log(5))            # 1.6094
    assert build_loss("focal", gamma=2)(z, y).item() == pytest.approx(0.64 * math.log(5))  # 1.0300
    z, y = binary_logits([0.6])
    assert build_loss("ce")(z, y).item() == pytest.approx(-math.log(0.6))         # 0.5108
    assert build_loss("focal")(z, y).item() == pytest.approx(0.16 * -math.log(0.6))  # 0.0817


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_focal_gamma_zero_equals_cross_entropy_exactly(dtype):
    torch.manual_seed(0)
    z, y = torch.randn(33, 100, dtype=dtype) * 4, torch.randint(0, 100, (33,))
    ref = F.cross_entropy(z, y)
    assert torch.equal(build_loss("focal", gamma=0)(z, y), ref)
    assert torch.equal(build_loss("ce")(z, y), ref)


def test_losses_return_the_batch_mean():
    torch.manual_seed(1)
    z, y = torch.randn(8, 10, dtype=torch.float64), torch.randint(0, 10, (8,))
    for name in ("ce", "focal", "flsd53"):
        loss = build_loss(name)
        whole = loss(z, y)
        parts = torch.stack([loss(z[i:i + 1], y[i:i + 1]) for i in range(8)])
        assert whole.item() == pytest.approx(parts.mean().item(), rel=1e-12)


def test_focal_is_stable_when_p_t_rounds_to_one():
    z = torch.tensor([[60.0, -60.0]], requires_grad=True)  # p_t = 1 in float32
    loss = build_loss("focal", gamma=0.5)(z, torch.tensor([0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


# ------------------------------------------------------------------ FLSD-53 in all its regions

@pytest.mark.parametrize("p, gamma_paper, gamma_homework", [
    (0.05, 5.0, 5.0), (0.1999, 5.0, 5.0),   # p_t < 0.2: both use 5
    (0.2, 3.0, 3.0), (0.35, 3.0, 3.0),      # 0.2 <= p_t < 0.5: both use 3
    (0.5, 3.0, 0.0), (0.9, 3.0, 0.0),       # p_t >= 0.5: paper 3, homework 0 (cross-entropy)
])
def test_flsd53_gamma_regions(p, gamma_paper, gamma_homework):
    z, y = binary_logits([p])
    for name, gamma in (("flsd53", gamma_paper), ("flsd53_homework", gamma_homework)):
        loss = build_loss(name)
        assert loss.gamma(torch.tensor([p], dtype=torch.float64)).item() == gamma
        expected = (1 - p) ** gamma * -math.log(p)
        assert loss(z, y).item() == pytest.approx(expected, rel=1e-9)


def test_flsd53_gamma_carries_no_gradient():
    """γ is a per-sample constant: the gradient equals that of FL with that fixed γ."""
    z, y = binary_logits([0.1, 0.3, 0.8])
    z1 = z.clone().requires_grad_(True)
    build_loss("flsd53")(z1, y).backward()
    expected = torch.zeros_like(z)
    for i, g in enumerate((5.0, 3.0, 3.0)):
        zi = z[i:i + 1].clone().requires_grad_(True)
        build_loss("focal", gamma=g)(zi, y[i:i + 1]).backward()
        expected[i] = zi.grad[0] / 3
    assert torch.allclose(z1.grad, expected, atol=1e-12)


def test_flsd53_mixed_batch_differs_from_homework_rule():
    z, y = binary_logits([0.1, 0.3, 0.6, 0.95])
    paper, homework = build_loss("flsd53")(z, y).item(), build_loss("flsd53_homework")(z, y).item()
    assert homework > paper  # γ = 0 above 0.5 keeps the full CE of easy samples


# ------------------------------------------------------------------ gradients (float64)

@pytest.mark.parametrize("name, kwargs", [("ce", {}), ("focal", {"gamma": 2.0}),
                                          ("focal", {"gamma": 0.5}), ("flsd53", {})])
def test_gradcheck(name, kwargs):
    torch.manual_seed(2)
    # p_t kept away from the FLSD thresholds so a finite difference does not cross one.
    z = (torch.randn(6, 5, dtype=torch.float64) * 0.5).requires_grad_(True)
    y = torch.randint(0, 5, (6,))
    loss = build_loss(name, **kwargs)
    assert torch.autograd.gradcheck(lambda t: loss(t, y), (z,))


def test_gradcheck_mc():
    torch.manual_seed(3)
    z = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    f = torch.randn(3, 10, 2, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 3, 1])
    loss = build_loss("mc", num_classes=4, drop_rate=0.0)
    # fast_mode checks the Jacobian along random directions: the same assurance here, ~20× faster.
    assert torch.autograd.gradcheck(lambda a, b: loss(a, y, b), (z, f), fast_mode=True)


# ------------------------------------------------------------------ mutual-channel loss

def test_channel_splits():
    b4 = channel_split(1792, 100)
    assert (b4.count(17), b4.count(18), len(b4), sum(b4)) == (8, 92, 100, 1792)
    assert b4[:8] == [17] * 8 and b4[8:] == [18] * 92  # the q-sized groups come first
    swin = channel_split(1024, 100)
    assert (swin.count(10), swin.count(11), sum(swin)) == (76, 24, 1024)
    assert channel_split(300, 100) == [3] * 100
    # The homework's groups are the same rule with 219 classes: what mc_homework_scaled applies at any width.
    assert channel_split(1792, 219) == list(HOMEWORK_GROUP_SIZES)
    assert channel_split(300, 219) == [1] * 138 + [2] * 81


def mc_by_hand(logits, targets, feats, sizes, mu, lam):
    """Loop-by-loop version of the MC loss (no masking), written independently of the module."""
    b = feats.shape[0]
    ce = F.cross_entropy(logits, targets)
    dis_logits = torch.zeros(b, len(sizes), dtype=feats.dtype)
    div = 0.0
    for i in range(b):
        start = 0
        for k, size in enumerate(sizes):
            group = feats[i, start:start + size]                    # [ξ, H, W]
            dis_logits[i, k] = group.amax(dim=0).mean()             # CCMP then GAP
            soft = group.flatten(1).softmax(dim=1)                  # spatial softmax per channel
            div += soft.amax(dim=0).sum() / size
            start += size
    d = div / (b * len(sizes))
    dis = F.cross_entropy(dis_logits, targets)
    return ce, dis, d, ce + mu * (dis + lam * (1 - d))


def test_mc_matches_hand_computation_without_mask():
    torch.manual_seed(4)
    logits, targets = torch.randn(4, 7, dtype=torch.float64), torch.tensor([0, 6, 3, 3])
    feats = torch.randn(4, 17, 3, 3, dtype=torch.float64)        # 17 over 7 → 2,2,2,2,3,3,3
    loss = MutualChannelLoss(7, mu=0.7, lambda_=3.0, drop_rate=0.0)
    parts = loss.parts(logits, targets, feats)
    ce, dis, d, total = mc_by_hand(logits, targets, feats, channel_split(17, 7), 0.7, 3.0)
    for key, ref in (("ce", ce), ("dis", dis), ("div", d), ("total", total)):
        assert parts[key].item() == pytest.approx(float(ref), rel=1e-12), key
    assert torch.equal(loss(logits, targets, feats), parts["total"])


def test_mc_drop_rate_zero_is_deterministic_and_mask_drops_floor_of_p():
    torch.manual_seed(5)
    logits, targets = torch.randn(2, 100), torch.tensor([1, 2])
    feats = torch.randn(2, 1792, 7, 7)
    loss = build_loss("mc", drop_rate=0.0)
    assert torch.equal(loss(logits, targets, feats), loss(logits, targets, feats))
    mask = build_loss("mc", drop_rate=0.4).mask(channel_split(1792, 100), "cpu").flatten()
    assert mask.shape == (1792,)
    # 17 · 0.4 → 6 dropped, 18 · 0.4 → 7 dropped, in every group
    assert mask[:17].sum() == 11 and mask[8 * 17:8 * 17 + 18].sum() == 11
    assert (1792 - mask.sum()).item() == 8 * 6 + 92 * 7


def test_mc_div_is_one_for_channels_peaking_apart_and_low_for_identical_channels():
    feats = torch.full((1, 2, 2, 2), -30.0)
    feats[0, 0, 0, 0] = feats[0, 1, 1, 1] = 30.0                  # two channels, two peaks
    parts = MutualChannelLoss(1, drop_rate=0).parts(torch.zeros(1, 1), torch.tensor([0]), feats)
    assert parts["div"].item() == pytest.approx(1.0)
    same = torch.randn(1, 1, 3, 3).expand(1, 2, 3, 3).contiguous()
    parts = MutualChannelLoss(1, drop_rate=0).parts(torch.zeros(1, 1), torch.tensor([0]), same)
    assert parts["div"].item() == pytest.approx(0.5)


@pytest.mark.parametrize("name, channels", [("mc_homework", 1792), ("mc_homework_scaled", 1792),
                                            ("mc_homework_scaled", 300), ("mc", 1792)])
def test_mc_homework_has_219_way_discrimination(name, channels):
    """On an all-zero feature map every group's CCMP is 0, so L_dis is the cross-entropy of a
    uniform K-way guess: log 219 for the homework's split, log 100 for the paper's."""
    parts = build_loss(name).parts(torch.randn(2, 100), torch.tensor([0, 99]), torch.zeros(2, channels, 7, 7))
    assert parts["dis"].item() == pytest.approx(math.log(100 if name == "mc" else 219))
    if name != "mc":
        torch.manual_seed(6)
        parts = build_loss(name).parts(torch.randn(2, 100), torch.tensor([0, 99]), torch.randn(2, channels, 7, 7))
        assert parts["total"] - parts["ce"] < 0.05              # μ = 0.001: the MC term is negligible


def test_mc_homework_scaled_is_mc_homework_at_b4_width():
    z, y, f = torch.randn(2, 100), torch.tensor([3, 42]), torch.randn(2, 1792, 7, 7)
    torch.manual_seed(7)
    homework = build_loss("mc_homework").parts(z, y, f)
    torch.manual_seed(7)                                          # the same CWA mask
    scaled = build_loss("mc_homework_scaled").parts(z, y, f)
    assert all(torch.equal(homework[k], scaled[k]) for k in homework)


def test_mc_homework_scaled_runs_on_every_model_width():
    loss, z, y = build_loss("mc_homework_scaled"), torch.randn(2, 100), torch.tensor([0, 1])
    for model in MODELS:
        assert torch.isfinite(loss(z, y, torch.randn(2, feature_channels(model), 4, 4))), model
    with pytest.raises(ValueError, match="at least 219 channels"):
        loss(z, y, torch.randn(2, 218, 4, 4))


# ------------------------------------------------------------------ bad input

def test_unknown_loss_lists_valid_names():
    with pytest.raises(ValueError, match="unknown loss 'fl'.*ce, focal, flsd53, mc"):
        build_loss("fl")


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_shape_mismatch_and_range(name):
    loss = build_loss(name)
    f = torch.randn(3, 1792, 2, 2)
    call = (lambda z, y: loss(z, y, f)) if name.startswith("mc") else loss
    with pytest.raises(ValueError, match="targets must be \\[B\\]"):
        call(torch.randn(3, 100), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="logits must be \\[B, K\\]"):
        call(torch.randn(3, 100, 1), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="targets must be in 0..99"):
        call(torch.randn(3, 100), torch.tensor([1, 2, 100]))
    with pytest.raises(ValueError, match="targets must be in 0..99"):
        call(torch.randn(3, 100), torch.tensor([-1, 2, 3]))


def test_mc_needs_features_with_enough_channels():
    loss = build_loss("mc")
    z, y = torch.randn(2, 100), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="needs the model's feature map"):
        loss(z, y)
    with pytest.raises(ValueError, match="64 channels for 100 classes"):
        loss(z, y, torch.randn(2, 64, 4, 4))
    with pytest.raises(ValueError, match=r"features must be \[B, C, H, W\]"):
        loss(z, y, torch.randn(2, 300))


@pytest.mark.parametrize("name, kwargs, match", [
    ("focal", {"gamma": -1}, "gamma must be >= 0"),
    ("mc", {"drop_rate": 1.0}, "drop_rate"),
    ("mc", {"mu": -1}, "mu and lambda_"),
    ("ce", {"gamma": 2}, "bad arguments for loss 'ce'"),
])
def test_bad_hyper_parameters(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_loss(name, **kwargs)
