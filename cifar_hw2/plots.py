"""Figures for the notebooks and the report. Each returns a matplotlib Figure; none calls show().

Image helpers take uint8 [N, 3, H, W] (what the data and the uint8 augmentations produce) or
float images already in [0, 1].
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from .augment import IMAGENET_MEAN, IMAGENET_STD
from .metrics import Reliability


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised [N, 3, H, W] → pixel values in [0, 1] (not clipped)."""
    return x * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)


def to_display(images: torch.Tensor, normalized: bool = False) -> np.ndarray:
    """[N, 3, H, W] uint8, or float in [0, 1] (or normalised) → [N, H, W, 3] floats for imshow."""
    x = images.detach().cpu()
    if x.dtype == torch.uint8:
        x = x.float() / 255
    elif normalized:
        x = denormalize(x)
    return x.clamp(0, 1).permute(0, 2, 3, 1).numpy()


# The widest figure a notebook shows at its own size: JupyterLab's 968 px output at a 1400 px window,
# at the notebooks' 80 dpi. A wider one is scaled down, and its text with it.
NOTEBOOK_WIDTH_IN = 12.0


def image_grid(images: torch.Tensor, titles=None, ncols: int = 10, size: float = 1.2,
               normalized: bool = False, fontsize: int = 9):
    """A grid of images with optional titles, at most NOTEBOOK_WIDTH_IN wide."""
    size = min(size, NOTEBOOK_WIDTH_IN / ncols)
    pics = to_display(images, normalized)
    n = len(pics)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * (size + 0.15 * bool(titles))),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(pics[i], interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=fontsize, pad=2)
    fig.tight_layout(pad=0.2)
    return fig


def image_rows(rows: dict[str, torch.Tensor], size: float = 1.2, normalized: bool = False,
               col_titles: list[str] | None = None):
    """One row per named batch (same images, different augmentation): label on the left, and
    optional column titles on top."""
    names = list(rows)
    ncols = max(len(v) for v in rows.values())
    top = 0.3 if col_titles else 0
    size = min(size, (NOTEBOOK_WIDTH_IN - 1.6) / ncols)   # 1.6 in for the row labels
    fig, axes = plt.subplots(len(names), ncols, figsize=(ncols * size + 1.6, len(names) * size + top), squeeze=False)
    for ax, title in zip(axes[0], col_titles or []):
        ax.set_title(title, fontsize=10, pad=3)
    for r, name in enumerate(names):
        pics = to_display(rows[name], normalized)
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([]), ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if c < len(pics):
                ax.imshow(pics[c], interpolation="nearest")
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=10)
    fig.tight_layout(pad=0.2)
    return fig


def sns_palette(n: int):
    import seaborn as sns
    return sns.color_palette("deep", n)


# ---------------------------------------------------------------------------------------------
# Training curves (report Figures 7 and 8) and calibration

def training_curves(histories: dict[str, list[dict]], metric: str = "test_top1", title: str = "",
                    percent: bool = True, reference: dict[str, float] | None = None):
    """One line per run: `metric` per epoch. `reference` draws horizontal lines (e.g. the report)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colors = sns_palette(max(len(histories), 1))
    scale = 100 if percent else 1
    for color, (label, rows) in zip(colors, histories.items()):
        epochs = [int(r["epoch"]) for r in rows]
        ax.plot(epochs, [float(r[metric]) * scale for r in rows], color=color, label=label, marker="o" if len(rows) < 20 else None, ms=3)
    for label, value in (reference or {}).items():
        ax.axhline(value * scale, ls=":", color="grey")
        ax.annotate(label, (ax.get_xlim()[0], value * scale), fontsize=8, color="grey", va="bottom")
    ax.set(xlabel="epoch", ylabel=metric.replace("_", " ") + (" (%)" if percent else ""), title=title)
    if histories:
        ax.legend(fontsize=9)
    return fig


def run_curves(history: list[dict], title: str = ""):
    """One run: loss per epoch (left) and train/val/test top-1 per epoch (right)."""
    epochs = [int(r["epoch"]) for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(epochs, [float(r["train_loss"]) for r in history], marker="o", ms=3, label="train loss")
    a.plot(epochs, [float(r["val_nll"]) for r in history], marker="o", ms=3, label="val NLL")
    a.set(xlabel="epoch", ylabel="loss / NLL", title="loss")
    for key, label in (("train_acc", "train (augmented)"), ("val_top1", "validation"), ("test_top1", "test")):
        b.plot(epochs, [100 * float(r[key]) for r in history], marker="o", ms=3, label=label)
    b.set(xlabel="epoch", ylabel="top-1 (%)", title="accuracy")
    a.legend(), b.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def reliability_diagram(rel: Reliability, title: str = "", ax=None, strip=None, legend: bool = True):
    """Bars: accuracy per confidence bin; diagonal: perfect calibration; a black tick at each bin's
    mean confidence, joined to the bar's top by a red line: the gap. `strip`, an axes below, gets
    the share of the images in each bin: a bin of 3 images at accuracy 1.0 says little, and
    without the counts it looks like one of 3,000.

    The gap is drawn as a line beside nothing, not as a translucent bar, because where confidence
    is below accuracy a bar would overlap the accuracy bar and mix into a colour nothing explains.
    """
    own = ax is None
    if own:
        fig, (ax, strip) = plt.subplots(2, 1, figsize=(3.6, 4.3), sharex=True, height_ratios=[4, 1])
    width = float(rel.edges[1] - rel.edges[0])
    centers = (rel.edges[:-1] + width / 2).numpy()
    counts = rel.counts.numpy().astype(float)
    has = counts > 0
    acc, conf = rel.accuracy.numpy()[has], rel.confidence.numpy()[has]
    # Opacity by count as well: a bin holding fewer images than an even share (N / bins) is paler.
    alpha = np.clip(counts[has] * len(counts) / max(counts.sum(), 1), 0.25, 1.0)
    bars = ax.bar(centers[has], acc, width=width, edgecolor="black", lw=0.5, color="#4C72B0",
                  label="accuracy of the bin (paler: fewer images)")
    for bar, a in zip(bars, alpha):
        bar.set_alpha(float(a))
    ax.vlines(centers[has], acc, conf, color="#C44E52", lw=2.5, label="gap to confidence")
    ax.plot(centers[has], conf, ls="none", marker="_", ms=9, mew=1.5, color="black", label="mean confidence")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1))
    ax.set_title(f"{title}\nECE {100 * rel.ece:.2f} %" if title else f"ECE {100 * rel.ece:.2f} %", fontsize=10)
    if strip is not None:
        share = 100 * counts / max(counts.sum(), 1)
        strip.bar(centers, share, width=width, color="#8C8C8C", edgecolor="black", lw=0.3)
        strip.set(xlim=(0, 1), ylim=(0, max(share.max() * 1.15, 1)))
        strip.tick_params(labelsize=9)
        strip.set_xlabel("confidence")
        ax.tick_params(labelbottom=False)
    else:
        ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    if legend:
        # beside the axes, not over them: a bin at high accuracy would hide behind it
        ax.legend(*_reliability_legend(ax), loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=9, frameon=False)
    return ax.figure if own else ax


def _reliability_legend(ax) -> tuple[list, list[str]]:
    """The diagram's legend entries, the bars' shown at full opacity (the first bar may be pale)."""
    from matplotlib.container import BarContainer
    from matplotlib.patches import Patch
    handles, labels = ax.get_legend_handles_labels()
    return [Patch(facecolor="#4C72B0", edgecolor="black", lw=0.5) if isinstance(h, BarContainer) else h
            for h in handles], labels


def reliability_grid(diagrams: dict[str, Reliability], ncols: int = 4, panel: float = 2.875):
    """One diagram per entry, each over a strip with the share of images per bin, and one legend
    for all of them above the grid. `panel`, the width of one diagram in inches: four of them at the
    notebooks' 80 dpi are 920 px, inside JupyterLab's 968 px at a 1400 px window, so the figure
    is shown at its own size, not scaled down."""
    from matplotlib.ticker import MaxNLocator
    n = len(diagrams)
    ncols = min(ncols, max(n, 1))
    nrows = max(-(-n // ncols), 1)
    few = ncols < 3                 # one or two diagrams: larger panels, the legend at the right
    panel = max(panel, 3.6) if few else panel
    fig = plt.figure(figsize=(ncols * panel + 2.6 * few, nrows * panel * 1.32 + 0.5 * (not few)),
                     layout="constrained")
    grid = fig.add_gridspec(2 * nrows, ncols, height_ratios=[4, 1] * nrows)
    for i, (title, rel) in enumerate(diagrams.items()):
        r, c = divmod(i, ncols)
        ax = fig.add_subplot(grid[2 * r, c])
        strip = fig.add_subplot(grid[2 * r + 1, c], sharex=ax)
        reliability_diagram(rel, title, ax=ax, strip=strip, legend=False)
        strip.set_ylabel("% of\nimages", fontsize=9)
        strip.yaxis.set_major_locator(MaxNLocator(2))   # two ticks: the strip is short, more would collide
        if c:   # labels on the left column only: the panels share their axes' meaning
            ax.set_ylabel(""), strip.set_ylabel("")
        if r < nrows - 1 and i + ncols < n:
            strip.set_xlabel("")
    if n:
        handles, labels = _reliability_legend(fig.axes[0])
        fig.legend(handles, labels, loc="outside right upper" if few else "outside upper center",
                   ncols=1 if few else len(labels), fontsize=10, frameon=False)
    return fig


def ece_before_after(groups: dict[str, dict[str, list[float]]], title: str = ""):
    """Bars: ECE (%) per loss before and after temperature scaling, the mean over the seeds, with a
    dot for each seed (one seed: the dot is the bar). `groups`: {loss label: {"before": [...],
    "after T (NLL fit)": [...], ...}}, fractions, one value per seed."""
    labels = list(groups)
    stages = list(next(iter(groups.values()))) if groups else []
    colors = ["#C44E52", "#DD8452", "#55A868", "#4C72B0"][:len(stages)]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.8 / max(len(stages), 1)
    for j, (stage, color) in enumerate(zip(stages, colors)):
        x = np.arange(len(labels)) + (j - (len(stages) - 1) / 2) * width
        means = [100 * np.mean(groups[label][stage]) for label in labels]
        ax.bar(x, means, width=width * 0.92, color=color, label=stage)
        for xi, label in zip(x, labels):
            values = 100 * np.asarray(groups[label][stage])
            if len(values) > 1:
                ax.plot([xi] * len(values), values, ls="none", marker="o", ms=4, color="black")
    seeds = [len(next(iter(groups[label].values()))) for label in labels]
    ax.set_xticks(np.arange(len(labels)), [f"{label}\n({n} seed{'s' * (n > 1)})" for label, n in zip(labels, seeds)])
    if any(n > 1 for n in seeds):
        ax.plot([], [], ls="none", marker="o", ms=4, color="black", label="one seed (bar: their mean)")
    ax.set(ylabel="test ECE (%)", title=title or "ECE before and after temperature scaling")
    ax.legend(fontsize=9, frameon=False)
    fig.tight_layout()
    return fig


def seed_curves(groups: dict[str, list[list[dict]]], metric: str = "test_top1", title: str = "",
                styles: dict[str, tuple] | None = None):
    """One colour per group (e.g. a loss): for several seeds the mean per epoch and a band from the
    lowest to the highest seed; a single seed as a thin line. `styles` may give a group's
    (colour, linestyle)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    palette = sns_palette(max(len(groups), 1))
    for i, (label, histories) in enumerate(groups.items()):
        color, ls = (styles or {}).get(label, (palette[i], "-"))
        n = min(len(h) for h in histories)
        epochs = [int(r["epoch"]) for r in histories[0][:n]]
        values = 100 * np.array([[float(r[metric]) for r in h[:n]] for h in histories])
        if len(histories) > 1:
            ax.fill_between(epochs, values.min(0), values.max(0), color=color, alpha=0.2, lw=0)
            ax.plot(epochs, values.mean(0), color=color, ls=ls, lw=2, marker="o", ms=3,
                    label=f"{label}: mean of {len(histories)} seeds (band: lowest to highest)")
        else:
            ax.plot(epochs, values[0], color=color, ls=ls, lw=1, label=f"{label}: 1 seed")
    ax.set(xlabel="epoch", ylabel=metric.replace("_", " ") + " (%)", title=title)
    if groups:
        ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# The MC loss on one image: the channels of one class, CWA, CCMP and the spatial softmax

def mc_class_figure(features: torch.Tensor, loss, class_index: int, seed: int = 0, ncols: int = 6,
                    class_name: str | None = None):
    """features [C, H, W] of one image. Left: the class's ξ channels on one colour scale, the ones
    CWA drops this time crossed out. Right: CCMP (max over the kept channels; GAP of it is the
    class's score in L_dis) and the max over the group of each channel's spatial softmax (its sum
    over positions, divided by ξ, is the diversity D). Each with its colour scale. `class_name`
    (e.g. "bear") is shown beside the index."""
    from matplotlib.colors import Normalize
    from .losses import cwa_ccmp
    sizes = loss.sizes_for(features.shape[0])
    start = sum(sizes[:class_index])
    xi = sizes[class_index]
    group = features[start:start + xi].float()                                  # [ξ, H, W]
    torch.manual_seed(seed)
    keep = loss.mask(sizes).flatten()[start:start + xi]                          # [ξ]
    ccmp = cwa_ccmp(group, keep.view(-1, 1, 1) > 0, dim=0)                       # [H, W], as the loss does
    peak = group.flatten(1).softmax(dim=1).view_as(group).amax(dim=0)            # [H, W]
    nrows = -(-xi // ncols)
    fig = plt.figure(figsize=(10, max(3.6, 1.25 * nrows + 0.9)), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[ncols, 4.2], wspace=0.04)
    axes = left.subplots(nrows, ncols, squeeze=False)
    norm = Normalize(float(group.min()), float(group.max()))
    for j, ax in enumerate(axes.flat):
        ax.set_xticks([]), ax.set_yticks([])
        if j >= xi:
            ax.axis("off")
            continue
        image = ax.imshow(group[j].numpy(), cmap="viridis", norm=norm)
        dropped = keep[j] == 0
        ax.set_title(f"{start + j}" + (" dropped" if dropped else ""), fontsize=9,
                     color="#C44E52" if dropped else "black", pad=2)
        if dropped:
            ax.plot([-0.5, group.shape[2] - 0.5], [-0.5, group.shape[1] - 0.5], color="#C44E52", lw=2)
            ax.plot([-0.5, group.shape[2] - 0.5], [group.shape[1] - 0.5, -0.5], color="#C44E52", lw=2)
    left.colorbar(image, ax=axes, shrink=0.8, label="activation")
    named = f"class {class_index}" + (f" ({class_name})" if class_name else "")
    left.suptitle(f"{named}: its ξ = {xi} channels ({start}–{start + xi - 1}); "
                  f"CWA drops {int((keep == 0).sum())}", fontsize=10)
    a, b = right.subplots(1, 2)
    for ax, data, cmap, title, label in (
            (a, ccmp, "viridis", f"CCMP: max over kept\nchannels; GAP = {ccmp.mean():.2f}", "activation"),
            (b, peak, "magma", f"max over channels of the\nspatial softmax; h/ξ = {peak.sum() / xi:.2f}",
             "probability")):
        im = ax.imshow(data.numpy(), cmap=cmap)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(title, fontsize=9)
        right.colorbar(im, ax=ax, orientation="horizontal", shrink=0.9, label=label)
    return fig


# ---------------------------------------------------------------------------------------------
# The learning-rate schedule over a whole run

def lr_schedule_figure(factors: list[float], marks: dict[float, int], title: str = ""):
    """lr / lr0 per epoch (log scale), with each share in `marks` ({0.01: first epoch below it})
    drawn as a horizontal line and the epoch where the schedule falls below it."""
    epochs = list(range(1, len(factors) + 1))
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    ax.step(epochs, factors, where="post", color="#4C72B0", lw=2, label="lr / lr0")
    for (share, epoch), color in zip(sorted(marks.items(), reverse=True), ("#DD8452", "#C44E52")):
        ax.axhline(share, ls=":", color=color, lw=1)
        ax.axvline(epoch, ls="--", color=color, lw=1)
        ax.annotate(f"< {share * 100:g} % of lr0 from epoch {epoch}", (epoch, share), xytext=(6, 6),
                    textcoords="offset points", color=color, fontsize=9)
    ax.set(yscale="log", xlim=(1, len(factors)), xlabel="epoch", ylabel="lr / lr0", title=title)
    ax.legend(loc="upper right", fontsize=9)
    fig.tight_layout()
    return fig
