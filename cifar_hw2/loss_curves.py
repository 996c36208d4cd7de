"""The losses against p_t: the report's Figure 6, FLSD-53's γ rule, and the gradients notebook 02 draws.

Every curve is computed with the library's own losses (losses.py) on a two-class problem whose true
class has probability p_t (`loss_and_gradient`), so the figures show what training runs.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from .plots import sns_palette


def logits_with_p_t(p_t, num_classes: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [N, K] (float64) whose softmax gives class y_i = i mod K exactly p_t[i], the other
    classes sharing the rest equally; and the targets y [N]."""
    p = torch.as_tensor(p_t, dtype=torch.float64)
    y = torch.arange(len(p)) % num_classes
    z = torch.zeros(len(p), num_classes, dtype=torch.float64)
    z[torch.arange(len(p)), y] = torch.log(p * (num_classes - 1) / (1 - p))
    return z, y


def loss_and_gradient(loss_fn, p_t: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Loss and |∂loss/∂z_y| of a two-class problem whose true class has probability p_t.

    With two classes the softmax is a sigmoid of z_y − z_other, so this is the loss curve of any
    K-class problem as a function of p_t, and the gradient on the true logit.
    """
    p = p_t.double()
    z = torch.stack([p.log(), (1 - p).log()], dim=1).requires_grad_(True)
    y = torch.zeros(len(p), dtype=torch.long)
    per_sample = torch.stack([loss_fn(z[i:i + 1], y[i:i + 1]) for i in range(len(p))])
    per_sample.sum().backward()
    return per_sample.detach().numpy(), z.grad[:, 0].abs().numpy()


def focal_loss_curves(gammas=(0, 0.5, 1, 2, 5), n: int = 400, extra: dict | None = None):
    """Figure 6 of the report: FL(p_t) = −(1 − p_t)^γ log p_t for several γ (γ = 0 is CE).

    `extra` maps labels to loss modules drawn dashed on the same axes (e.g. FLSD-53).
    """
    from .losses import build_loss
    p = torch.linspace(0.005, 1.0, n, dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colors = sns_palette(len(gammas) + len(extra or {}))
    for color, g in zip(colors, gammas):
        loss, _ = loss_and_gradient(build_loss("focal", gamma=g), p)
        ax.plot(p, loss, color=color, label=f"γ = {g}" + (" (CE)" if g == 0 else ""))
    for color, (label, fn) in zip(colors[len(gammas):], (extra or {}).items()):
        loss, _ = loss_and_gradient(fn, p)
        ax.plot(p, loss, color=color, ls="--", label=label)
    ax.set(xlabel="probability of the true class $p_t$", ylabel="loss", ylim=(0, 5), xlim=(0, 1),
           title="Focal loss $-(1-p_t)^\\gamma \\log p_t$")
    ax.legend()
    return fig


def flsd_figure(n: int = 400):
    """FLSD-53's γ against p_t (paper and homework rule) and the gradient on the true logit."""
    from .losses import build_loss
    p = torch.linspace(0.005, 0.995, n, dtype=torch.float64)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    paper, homework = build_loss("flsd53"), build_loss("flsd53_homework")
    a.plot(p, paper.gamma(p), label="FLSD-53 (Mukhoti et al.)", lw=2)
    a.plot(p, homework.gamma(p), ls="--", label="the homework's code", lw=2)
    a.set(xlabel="$p_t$", ylabel="γ", title="γ chosen per sample", ylim=(-0.3, 5.5))
    a.legend()
    for label, fn, style in (("CE", build_loss("ce"), ":"), ("FL γ=2", build_loss("focal", gamma=2), "-"),
                             ("FLSD-53", paper, "-"), ("FLSD-53, homework rule", homework, "--")):
        _, grad = loss_and_gradient(fn, p)
        b.plot(p, grad, ls=style, label=label)
    b.set(xlabel="$p_t$", ylabel="|∂loss/∂$z_y$|", title="gradient on the true logit")
    b.legend()
    fig.tight_layout()
    return fig


def gradient_ratio_figure(gammas=(2, 3, 5), n: int = 600, mark: tuple[float, float] = (3, 0.4)):
    """Focal's push on the true logit as a share of CE's, |∂FL/∂z_y| / |∂CE/∂z_y|, against p_t
    (log scale; 1 = as hard as CE), with FLSD-53 dashed. The shaded band p_t < 0.5 is where a sample
    can still be misclassified (at p_t >= 0.5 no other class can score higher). `mark` = (γ, p_t)
    is annotated with its ratio."""
    from .losses import build_loss
    p = torch.linspace(0.005, 0.995, n, dtype=torch.float64)
    _, ce = loss_and_gradient(build_loss("ce"), p)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.axvspan(0, 0.5, color="0.92", zorder=0)
    ax.text(0.25, 2.2, "can still be misclassified\n($p_t$ < 0.5)", ha="center", va="center", fontsize=9,
            color="0.35")
    ax.axhline(1, color="0.4", lw=1, ls=":")
    colors = sns_palette(len(gammas) + 1)
    for color, g in zip(colors, gammas):
        _, fl = loss_and_gradient(build_loss("focal", gamma=g), p)
        ratio = fl / ce
        ax.plot(p, ratio, color=color, label=f"FL γ = {g}")
        cross = float(p[ratio > 1].max())
        ax.plot([cross], [1], "o", color=color, ms=4)
    _, flsd = loss_and_gradient(build_loss("flsd53"), p)
    ax.plot(p, flsd / ce, color=colors[-1], ls="--", label="FLSD-53")
    g, at = mark
    _, one = loss_and_gradient(build_loss("focal", gamma=g), torch.tensor([at], dtype=torch.float64))
    _, one_ce = loss_and_gradient(build_loss("ce"), torch.tensor([at], dtype=torch.float64))
    share = float(one[0] / one_ce[0])
    ax.annotate(f"γ = {g:g}, $p_t$ = {at:g}: {share:.2f} × CE", (at, share), xytext=(0.55, 0.12),
                fontsize=9, arrowprops=dict(arrowstyle="->", color="0.3"))
    ax.set(yscale="log", ylim=(1e-3, 4), xlim=(0, 1), xlabel="probability of the true class $p_t$",
           ylabel="focal push / CE push", title="Gradient on the true logit, as a share of CE's")
    ax.legend(loc="lower left", fontsize=9)
    return fig
