"""The MC loss's masked path (CWA with drop_rate > 0) against the paper's definition.

Chang et al. 2020, Eq. 2–3: CWA keeps a random subset of each class's ξ channels, CCMP takes the
max over the *kept* channels at every position, GAP averages over positions. The reference below
is written loop by loop from that definition, independently of the module: it selects the kept
channels by index, so no dropped value can take part in the max.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from cifar_hw2.losses import MutualChannelLoss, channel_split


def dis_by_hand(feats, targets, sizes, keep):
    """L_dis with an explicit CWA mask keep [C] (bool): CE of GAP(max over kept channels)."""
    b = feats.shape[0]
    dis_logits = torch.zeros(b, len(sizes), dtype=feats.dtype)
    for i in range(b):
        start = 0
        for k, size in enumerate(sizes):
            kept = [start + j for j in range(size) if keep[start + j]]
            dis_logits[i, k] = feats[i, kept].amax(dim=0).mean()
            start += size
    return F.cross_entropy(dis_logits, targets)


def fixed_mask(sizes, drop_every=3):
    """Drop every `drop_every`-th channel of each group (never all of one)."""
    keep = []
    for size in sizes:
        keep += [j % drop_every != drop_every - 1 for j in range(size)]
    return torch.tensor(keep)


def test_masked_ccmp_matches_the_definition_on_signed_features():
    torch.manual_seed(11)
    sizes = channel_split(17, 5)                                   # 3, 3, 3, 4, 4
    # Signed features shifted down: many positions where every kept channel is negative.
    feats = torch.randn(4, 17, 3, 3, dtype=torch.float64) - 1.5
    logits, targets = torch.randn(4, 5, dtype=torch.float64), torch.tensor([0, 4, 2, 2])
    keep = fixed_mask(sizes)
    loss = MutualChannelLoss(5, mu=1.0, lambda_=0.0, drop_rate=0.4)
    parts = loss.parts(logits, targets, feats, mask=keep.double().view(1, -1, 1, 1))
    ref = dis_by_hand(feats, targets, sizes, keep)
    assert parts["dis"].item() == pytest.approx(ref.item(), rel=1e-12)
    # Multiplying the dropped channels by 0 (the official code's way) gives another number here:
    zeroed = feats * keep.double().view(1, -1, 1, 1)
    assert dis_by_hand(zeroed, targets, sizes, torch.ones(17, dtype=torch.bool)).item() != pytest.approx(ref.item())


def test_a_dropped_zero_never_wins_the_max():
    # One group of three channels at one position: kept [-2, -1], dropped channel 5 → CCMP -1.
    feats = torch.tensor([-2.0, -1.0, 5.0], dtype=torch.float64).view(1, 3, 1, 1)
    keep = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    loss = MutualChannelLoss(1, mu=1.0, lambda_=0.0, drop_rate=0.4)
    logits2 = torch.zeros(1, 2, dtype=torch.float64)
    two = MutualChannelLoss(2, mu=1.0, lambda_=0.0, drop_rate=0.4)
    # Two groups so that L_dis depends on the CCMP value: group 0 = [-2, -1, 5], group 1 = [0, 0, 0].
    feats2 = torch.cat([feats, torch.zeros(1, 3, 1, 1, dtype=torch.float64)], dim=1)
    keep2 = torch.cat([keep, torch.ones(3, dtype=torch.float64)])
    dis = two.parts(logits2, torch.tensor([0]), feats2, mask=keep2)["dis"]
    # CCMP logits (-1, 0): CE for class 0 = log(1 + e) ; with a zeroed channel they would be (0, 0): log 2.
    assert dis.item() == pytest.approx(math.log1p(math.e), rel=1e-12)
    assert loss.parts(torch.zeros(1, 1), torch.tensor([0]), feats, mask=keep)["total"].isfinite()


def test_the_drawn_mask_is_the_one_used():
    # With the same RNG state, the default (drawn) mask gives what an explicit copy of it gives.
    sizes = channel_split(40, 10)
    loss = MutualChannelLoss(10, drop_rate=1 / 3)
    torch.manual_seed(12)
    feats, logits = torch.randn(3, 40, 4, 4) - 1.0, torch.randn(3, 10)
    targets = torch.tensor([1, 5, 9])
    state = torch.get_rng_state()
    drawn = loss.parts(logits, targets, feats)
    torch.set_rng_state(state)
    mask = loss.mask(sizes)
    given = loss.parts(logits, targets, feats, mask=mask)
    assert torch.equal(drawn["total"], given["total"])
    ref = dis_by_hand(feats.double(), targets, sizes, mask.flatten() > 0)
    assert drawn["dis"].item() == pytest.approx(ref.item(), rel=1e-5)


def test_masked_gradients_reach_kept_channels_only():
    torch.manual_seed(13)
    sizes = channel_split(6, 2)
    feats = (torch.randn(2, 6, 2, 2, dtype=torch.float64) - 1).requires_grad_(True)
    keep = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    loss = MutualChannelLoss(2, mu=1.0, lambda_=0.0, drop_rate=0.4)
    loss.parts(torch.zeros(2, 2, dtype=torch.float64), torch.tensor([0, 1]), feats, mask=keep)["dis"].backward()
    assert feats.grad[:, [1, 5]].abs().sum() == 0 and feats.grad[:, [0, 2, 3, 4]].abs().sum() > 0
    assert sizes == [3, 3]


def test_bad_masks_are_refused():
    loss = MutualChannelLoss(2, drop_rate=0.4)
    feats, logits, y = torch.randn(1, 6, 2, 2), torch.zeros(1, 2), torch.tensor([0])
    with pytest.raises(ValueError, match="one entry per channel"):
        loss.parts(logits, y, feats, mask=torch.ones(5))
    with pytest.raises(ValueError, match="at least one channel of every group"):
        loss.parts(logits, y, feats, mask=torch.tensor([1.0, 1, 1, 0, 0, 0]))


def test_notebook_03s_mc_figure_shows_ccmp_over_kept_channels_only():
    """The figure's CCMP panel is the loss's: on all-negative channels a dropped channel must not
    show as 0 (what multiplying by the mask gave)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from cifar_hw2.losses import build_loss
    from cifar_hw2.plots import mc_class_figure
    loss = build_loss("mc")
    torch.manual_seed(1)
    feats = -1 - torch.rand(300, 8, 8)                                   # [C, H, W], every value < -1
    fig = mc_class_figure(feats, loss, class_index=4, seed=0)
    torch.manual_seed(0)
    keep = loss.mask(loss.sizes_for(300)).flatten()[12:15] > 0           # class 4: channels 12-14
    assert 0 < int(keep.sum()) < 3
    panel = next(ax for f in fig.subfigs for ax in f.axes if ax.get_title().startswith("CCMP"))
    shown = torch.as_tensor(panel.images[0].get_array().data)
    assert torch.equal(shown, feats[12:15][keep].amax(dim=0))           # by hand: max over kept channels
    assert shown.max() < -1
    plt.close(fig)
