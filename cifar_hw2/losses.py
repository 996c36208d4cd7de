"""The four losses of the report, as the papers define them, behind one registry.

Every loss is an nn.Module called as `loss(logits, targets)` (MC also takes `features`) and returns
the mean over the batch. logits: float [B, K]; targets: int64 [B] in 0..K-1.

    build_loss("ce")                        cross-entropy
    build_loss("focal", gamma=2)            Lin et al. 2017
    build_loss("flsd53")                    Mukhoti et al. 2020
    build_loss("mc", num_classes=100)       Chang et al. 2020

The homework's code ran different things under the same names (the README's table "what its
code ran"; notebooks 02 and 03 show each beside the paper's). Two of them are here by name so that
notebooks and the grid can show the difference on the same tensors: "flsd53_homework" (γ = 0 above p_t = 0.5) and "mc_homework"
(219 channel groups, μ = 0.001). Its "FL" was `build_loss("focal", gamma=0)`, i.e. cross-entropy.
"mc_homework" is sized for B4's 1792 channels; "mc_homework_scaled" makes the same mistake at any
width (C channels in 219 groups), the stand-in that quick mode trains on small_cnn.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _check(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.ndim != 2:
        raise ValueError(f"logits must be [B, K], got shape {tuple(logits.shape)}")
    if targets.ndim != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(f"targets must be [B] with B = {logits.shape[0]} to match logits "
                         f"{tuple(logits.shape)}, got shape {tuple(targets.shape)}")
    if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"targets must be integer class indices, got {targets.dtype}")
    k = logits.shape[1]
    if targets.device.type == "cpu":
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= k):
            raise ValueError(f"targets must be in 0..{k - 1}, got values "
                             f"{int(targets.min())}..{int(targets.max())}")
    else:  # no host sync inside a GPU step; a bad target still fails loudly on the device
        torch._assert_async(((targets >= 0) & (targets < k)).all(), f"targets must be in 0..{k - 1}")


def _nll_per_sample(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """−log p_t per sample, [B]. bf16/fp16 logits are upcast to float32; float64 stays float64."""
    _check(logits, targets)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return F.cross_entropy(logits, targets.long(), reduction="none")


def _batch_mean(per_sample: torch.Tensor) -> torch.Tensor:
    """Mean over the batch with the same reduction kernel as F.cross_entropy.

    `.mean()` sums in another order and can differ from F.cross_entropy in the last bit; feeding
    the per-sample losses through nll_loss makes focal(γ=0) equal cross-entropy bit for bit.
    """
    zeros = torch.zeros(per_sample.shape[0], dtype=torch.long, device=per_sample.device)
    return F.nll_loss(-per_sample[:, None], zeros)


class CrossEntropyLoss(nn.Module):
    """CE = −log p_t, with p_t = softmax(z)_y the probability of the true class."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return _batch_mean(_nll_per_sample(logits, targets))


def focal_term(nll: torch.Tensor, gamma: torch.Tensor | float) -> torch.Tensor:
    """(1 − p_t)^γ · (−log p_t) per sample, given nll = −log p_t.

    1 − p_t is computed as −expm1(−nll), exact near p_t = 1, and floored at the smallest normal
    float so that γ < 1 does not give 0 · ∞ = NaN in the backward pass when p_t rounds to 1.
    """
    one_minus_p = (-torch.expm1(-nll)).clamp_min(torch.finfo(nll.dtype).tiny)
    return one_minus_p.pow(gamma) * nll


class FocalLoss(nn.Module):
    """Focal loss, Lin et al. 2017, Eq. 4 (their Eq. 5 without α):  FL(p_t) = −(1 − p_t)^γ · log p_t.

    γ = 0 is cross-entropy exactly. γ = 2 is the paper's default. The gradient flows through
    both factors, as in the paper.
    """

    def __init__(self, gamma: float = 2.0):
        super().__init__()
        if not gamma >= 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return _batch_mean(focal_term(_nll_per_sample(logits, targets), self.gamma))

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"


class SampleDependentFocalLoss(nn.Module):
    """Focal loss whose γ depends on each sample's p_t (Mukhoti et al. 2020, §5, "FLSD-53").

        γ(p_t) = 5  if p_t < 0.2
                 3  otherwise

    `schedule` is a list of (threshold, γ) pairs, ascending: the first threshold that p_t is below
    picks γ; `gamma_above` applies when p_t is above all thresholds. γ is computed without
    gradient (a per-sample constant), as in the paper's code. The paper's 0.2 and 5 go together:
    γ = 5 is, rounded, the γ whose gradient on the true logit equals CE's at p_t = 0.2 (the
    authors' code has the solver; exactly γ ≈ 4.85, rounded to 5), so below 0.2 the hardest samples
    get about CE's push or more. The homework's rule, (0.2, 5), (0.5, 3) and γ = 0 above, is what the
    authors' class gives without its `gamma` argument (default 0; their FLSD-53 passes 3).
    """

    def __init__(self, schedule=((0.2, 5.0),), gamma_above: float = 3.0):
        super().__init__()
        schedule = tuple((float(t), float(g)) for t, g in schedule)
        thresholds = [t for t, _ in schedule]
        if thresholds != sorted(thresholds) or any(not 0 < t <= 1 for t in thresholds):
            raise ValueError(f"schedule thresholds must ascend within (0, 1], got {thresholds}")
        if any(g < 0 for _, g in schedule) or gamma_above < 0:
            raise ValueError("every gamma in the schedule must be >= 0")
        self.schedule, self.gamma_above = schedule, float(gamma_above)

    @torch.no_grad()
    def gamma(self, p_t: torch.Tensor) -> torch.Tensor:
        """γ per sample, same shape as p_t. Walk the thresholds from the top down."""
        g = torch.full_like(p_t, self.gamma_above)
        for threshold, gamma in reversed(self.schedule):
            g = torch.where(p_t < threshold, torch.full_like(p_t, gamma), g)
        return g

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        nll = _nll_per_sample(logits, targets)
        return _batch_mean(focal_term(nll, self.gamma(torch.exp(-nll.detach()))))

    def extra_repr(self) -> str:
        return f"schedule={self.schedule}, gamma_above={self.gamma_above}"


# ---------------------------------------------------------------------------------------------
# Mutual-channel loss

# Defaults follow the authors' official code (CUB-200, 3 channels per class): α = 1.5 on L_dis and
# β = 20 on (1 − D), one channel in three masked. In this module's form L = CE + μ(L_dis + λ(1 − D))
# that is μ = 1.5, λ = 20 / 1.5.
MC_OFFICIAL = dict(mu=1.5, lambda_=20 / 1.5, drop_rate=1 / 3)
# What the homework ran: μ = 0.001, λ = 10, p = 0.4, which makes the MC term ~0.02 against CE ~4.6.
MC_HOMEWORK = dict(mu=0.001, lambda_=10.0, drop_rate=0.4)
# ...and its channel groups, sized for a 219-class task: 179 groups of 8 + 40 of 9 = 1792 channels,
# i.e. channel_split(1792, 219): the right rule with the wrong number of classes.
HOMEWORK_GROUPS = 219
HOMEWORK_GROUP_SIZES = (8,) * 179 + (9,) * 40


def channel_split(channels: int, num_classes: int) -> list[int]:
    """Channels per class, contiguous: the first K − r classes get q, the last r get q + 1.

    q = C // K, r = C % K.  1792 over 100 → 8 × 17 + 92 × 18;  1024 over 100 → 76 × 10 + 24 × 11.
    """
    if num_classes <= 0:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if channels < num_classes:
        raise ValueError(f"the MC loss needs at least one channel per class: the feature map has "
                         f"{channels} channels for {num_classes} classes")
    q, r = divmod(channels, num_classes)
    return [q] * (num_classes - r) + [q + 1] * r


def split_summary(sizes) -> str:
    """[8, 8, ..., 9] → "179 × 8 + 40 × 9": groups × channels, in channel order."""
    return " + ".join(f"{n} × {size}" for size, n in _runs(sizes))


def _checked_keep(mask: torch.Tensor, sizes) -> torch.Tensor:
    """A caller's CWA mask (1 = kept, any shape with C entries) as a [C] bool tensor, after
    checking that it keeps at least one channel of every group (else CCMP would be −inf)."""
    c = sum(sizes)
    if mask.numel() != c:
        raise ValueError(f"mask must have one entry per channel ({c}), got shape {tuple(mask.shape)}")
    keep = mask.reshape(c) > 0
    group = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))    # [C] group of each channel
    kept = torch.bincount(group, weights=keep.cpu().double(), minlength=len(sizes))
    if (kept == 0).any():
        empty = (kept == 0).nonzero().flatten().tolist()
        raise ValueError(f"mask must keep at least one channel of every group; groups {empty[:10]} keep none")
    return keep


def cwa_ccmp(groups: torch.Tensor, keep: torch.Tensor | None, dim: int) -> torch.Tensor:
    """CWA then CCMP (Chang et al. 2020, Eq. 2): the max over a group's *kept* channels, the
    channel axis `dim` of `groups` (e.g. [B, n, ξ, HW] with dim=2). keep: bool, broadcastable to
    `groups`, True = kept; None keeps all. Dropped channels are -inf, never 0 (see
    MutualChannelLoss); every group keeps at least one channel, so the result is finite."""
    masked = groups if keep is None else groups.masked_fill(~keep, float("-inf"))
    return masked.amax(dim=dim)


def _runs(sizes) -> list[tuple[int, int]]:
    """[8, 8, 9, 9, 9] → [(8, 2), (9, 3)]: consecutive groups of equal size, viewed as one tensor."""
    out: list[list[int]] = []
    for s in sizes:
        if out and out[-1][0] == s:
            out[-1][1] += 1
        else:
            out.append([s, 1])
    return [(s, n) for s, n in out]


class MutualChannelLoss(nn.Module):
    """Mutual-channel loss, Chang et al. 2020 ("The devil is in the channels"), Eqs. 1–8.

        L = CE(logits, y) + μ · (L_dis + λ · (1 − D))

    features F: [B, C, H, W], split into K contiguous groups of ξ_c channels, one per class.
    - L_dis (discriminality, Eq. 3): CWA masks a random `drop_rate` of each group's channels (one
      mask shared by the batch, as in the official code), CCMP takes the max over each group's
      kept channels → [B, K, H, W], GAP → [B, K], and L_dis is the cross-entropy of that with y.
      A dropped channel is set to −inf before the max, not multiplied by 0: the paper's CCMP is
      the max over the channels CWA keeps, and on signed features (B4's SiLU output, Swin's
      LayerNorm output) a zeroed channel would win over kept channels that are all negative
      (kept [−2, −1] → 0 instead of −1). The official code multiplies by 0, which is the same
      only because its VGG features follow a ReLU. At least one channel per group is always kept
      (⌊p·ξ_c⌋ < ξ_c for p < 1), so the max is finite, and dropped channels get no gradient.
    - D (diversity, Eq. 6): softmax over the H·W positions of every channel, max over each
      group's channels, summed over positions: h ∈ [1, ξ_c]. D = mean over samples and classes of
      h / ξ_c. It is 1/ξ_c when a group's channels share one spatial softmax, and approaches 1
      only when each channel's softmax sits on one position, a different one per channel.
    """

    def __init__(self, num_classes: int = 100, mu: float = MC_OFFICIAL["mu"],
                 lambda_: float = MC_OFFICIAL["lambda_"], drop_rate: float = MC_OFFICIAL["drop_rate"],
                 group_sizes=None):
        super().__init__()
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if mu < 0 or lambda_ < 0:
            raise ValueError(f"mu and lambda_ must be >= 0, got mu={mu}, lambda_={lambda_}")
        if not 0 <= drop_rate < 1:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        self.num_classes, self.mu, self.lambda_, self.drop_rate = num_classes, mu, lambda_, drop_rate
        self.group_sizes = None if group_sizes is None else tuple(int(s) for s in group_sizes)

    def sizes_for(self, channels: int) -> list[int]:
        if self.group_sizes is None:
            return channel_split(channels, self.num_classes)
        if sum(self.group_sizes) != channels:
            raise ValueError(f"group_sizes cover {sum(self.group_sizes)} channels, "
                             f"but the feature map has {channels}")
        return list(self.group_sizes)

    def mask(self, sizes, device="cpu") -> torch.Tensor:
        """CWA: 1 for kept channels, 0 for dropped, [1, C, 1, 1]; ⌊p·ξ_c⌋ channels dropped per group."""
        parts = []
        for size, n in _runs(sizes):
            drop = int(size * self.drop_rate)
            rank = torch.rand(n, size, device=device).argsort(dim=1).argsort(dim=1)  # random permutation
            parts.append((rank >= drop).flatten())
        return torch.cat(parts).float().view(1, -1, 1, 1)

    def parts(self, logits: torch.Tensor, targets: torch.Tensor, features: torch.Tensor | None,
              mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """{"ce", "dis", "div" (= D), "total"}, each a float scalar tensor.

        mask: a CWA mask as `self.mask` returns it ([1, C, 1, 1] or [C], 1 = kept), to use instead
        of a random one (notebooks and tests); by default one is drawn when drop_rate > 0.
        """
        if features is None:
            raise ValueError("the 'mc' loss needs the model's feature map: call loss(logits, targets, "
                             "features) with features [B, C, H, W]")
        if features.ndim != 4 or features.shape[0] != logits.shape[0]:
            raise ValueError(f"features must be [B, C, H, W] with B = {logits.shape[0]}, "
                             f"got shape {tuple(features.shape)}")
        ce = _batch_mean(_nll_per_sample(logits, targets))
        x = features if features.dtype == torch.float64 else features.float()
        b, c, h, w = x.shape
        sizes = self.sizes_for(c)
        if mask is not None:        # given by the caller: checked (a host sync; never in training)
            keep = _checked_keep(mask, sizes).to(x.device)
        elif self.drop_rate > 0:    # drawn: keeps ⌊(1 − p)·ξ_c⌋ ≥ 1 channels of each group by construction
            keep = self.mask(sizes, x.device).reshape(c) > 0                     # [C] bool
        else:
            keep = None

        dis_logits, div_terms, start = [], [], 0
        for size, n in _runs(sizes):
            g = x[:, start:start + size * n].reshape(b, n, size, h * w)          # [B, n, ξ, HW]
            kept = None if keep is None else keep[start:start + size * n].view(1, n, size, 1)
            dis_logits.append(cwa_ccmp(g, kept, dim=2).mean(dim=2))              # CCMP, GAP → [B, n]
            peak = g.softmax(dim=3).amax(dim=2).sum(dim=2)                       # h → [B, n]
            div_terms.append(peak / size)
            start += size * n
        dis = F.cross_entropy(torch.cat(dis_logits, dim=1), targets.long())
        div = torch.cat(div_terms, dim=1).mean()
        total = ce + self.mu * (dis + self.lambda_ * (1.0 - div))
        return {"ce": ce, "dis": dis, "div": div, "total": total}

    def forward(self, logits, targets, features=None) -> torch.Tensor:
        return self.parts(logits, targets, features)["total"]

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, mu={self.mu}, lambda_={self.lambda_}, drop_rate={self.drop_rate}"


class HomeworkMCAtWidth(MutualChannelLoss):
    """The homework's MC mistake at any feature-map width: C channels split into 219 groups
    (channel_split(C, 219)) instead of 100, with its μ = 0.001, λ = 10, p = 0.4.

    As in the homework, L_dis is then a 219-way cross-entropy whose targets are the first 100
    groups; the other 119 groups only ever act as negatives, and D averages over all 219. At B4's
    1792 channels this is "mc_homework" exactly (179 × 8 + 40 × 9); on small_cnn's 300 channels it
    is 138 × 1 + 81 × 2, where a group of one channel keeps all of it (⌊0.4⌋ = 0 dropped) and has
    h / ξ = 1. Quick mode trains it in place of "mc_homework", whose fixed groups need 1792 channels.
    """

    def sizes_for(self, channels: int) -> list[int]:
        if channels < HOMEWORK_GROUPS:
            raise ValueError(f"the homework's MC split needs at least {HOMEWORK_GROUPS} channels (one per "
                             f"group), but the feature map has {channels}")
        return channel_split(channels, HOMEWORK_GROUPS)


# ---------------------------------------------------------------------------------------------
# The registry. Values build a loss from keyword arguments; unknown names list the valid ones.

LOSSES = {
    # Every factory takes num_classes so callers can pass it uniformly; only MC uses it.
    "ce": lambda num_classes=None: CrossEntropyLoss(),
    "focal": lambda num_classes=None, gamma=2.0: FocalLoss(gamma),
    "flsd53": lambda num_classes=None: SampleDependentFocalLoss(((0.2, 5.0),), gamma_above=3.0),
    "mc": lambda num_classes=100, **kw: MutualChannelLoss(num_classes, **kw),
    # What the homework's code ran (for comparison only):
    "flsd53_homework": lambda num_classes=None: SampleDependentFocalLoss(((0.2, 5.0), (0.5, 3.0)),
                                                                         gamma_above=0.0),
    "mc_homework": lambda num_classes=100: MutualChannelLoss(num_classes, **MC_HOMEWORK,
                                                             group_sizes=HOMEWORK_GROUP_SIZES),
    "mc_homework_scaled": lambda num_classes=100: HomeworkMCAtWidth(num_classes, **MC_HOMEWORK),
}
NEEDS_FEATURES = {"mc", "mc_homework", "mc_homework_scaled"}


def build_loss(name: str, **kwargs) -> nn.Module:
    """Build a loss by name. `build_loss("focal", gamma=2)`, `build_loss("mc", num_classes=100, mu=1.5)`."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid losses: {', '.join(LOSSES)}")
    try:
        return LOSSES[name](**kwargs)
    except TypeError as e:
        raise ValueError(f"bad arguments for loss {name!r}: {e}") from None
