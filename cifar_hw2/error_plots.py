"""Figures of what a classifier gets wrong (errors.py): superclass confusion, confident mistakes, a
gallery of the most confident mistakes, and per-class accuracy. Each returns a matplotlib Figure
at most 12 in wide (JupyterLab's 968 px at the notebooks' 80 dpi), so its text is not scaled down."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from .plots import NOTEBOOK_WIDTH_IN, sns_palette, to_display


def superclass_confusion_figure(matrices: dict[str, torch.Tensor], names: list[str]):
    """One heatmap per run: row = true superclass, column = predicted, share of the row in %.
    The diagonal (right at the superclass level) is left blank so that the confusions stand out;
    its value is the row's complement."""
    n = len(matrices)
    fig, axes = plt.subplots(1, n, figsize=(min(NOTEBOOK_WIDTH_IN, 2.2 + 4.9 * n), 5.2), squeeze=False,
                             layout="constrained")
    off = [100 * m.clone().fill_diagonal_(float("nan")).numpy() for m in matrices.values()]
    top = max(float(np.nanmax(o)) for o in off) if off else 1.0
    for k, (ax, (label, grid)) in enumerate(zip(axes[0], zip(matrices, off))):
        image = ax.imshow(grid, cmap="Reds", vmin=0, vmax=top)
        ax.set_title(label, fontsize=10)
        ax.set_xticks(range(len(names)), [str(i) for i in range(len(names))], fontsize=8)
        ax.set_yticks(range(len(names)), [f"{name.replace('_', ' ')} {i}" for i, name in enumerate(names)]
                      if k == 0 else [], fontsize=8)
        ax.set_xlabel("predicted superclass", fontsize=9)
    fig.colorbar(image, ax=axes[0], shrink=0.7, label="% of the true superclass's images")
    return fig


def confident_mistakes_figure(shares: dict[str, dict[float, float]]):
    """Grouped bars: per run, the % of test images misclassified with confidence above each threshold."""
    labels = list(shares)
    thresholds = list(next(iter(shares.values()))) if shares else []
    fig, ax = plt.subplots(figsize=(min(NOTEBOOK_WIDTH_IN, 2 + 1.6 * len(labels)), 3.6))
    width = 0.8 / max(len(thresholds), 1)
    for j, (t, color) in enumerate(zip(thresholds, sns_palette(len(thresholds)))):
        x = np.arange(len(labels)) + (j - (len(thresholds) - 1) / 2) * width
        values = [100 * shares[label][t] for label in labels]
        bars = ax.bar(x, values, width=width, color=color, label=f"confidence > {t:g}")
        ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=1)     # the digits of the table above it
    ax.set_xticks(range(len(labels)), labels, fontsize=9)
    ax.set_ylabel("% of test images\nwrong with that confidence")
    ax.set_title("Confidently wrong: misclassified images above a confidence threshold", fontsize=10)
    ax.legend(fontsize=9, frameon=False)
    return fig


def mistake_gallery(images: torch.Tensor, titles: list[str], ncols: int = 8, title: str = ""):
    """uint8 images [k, 3, 32, 32] with a title each ("true → predicted, confidence")."""
    pics = to_display(images)
    nrows = max(-(-len(pics) // ncols), 1)
    size = NOTEBOOK_WIDTH_IN / ncols
    # each row: a square image and a two-line 9 pt title (~0.35 in with its padding); constrained layout
    # then keeps the titles off the images above them and off the suptitle, which tight_layout did not
    height = nrows * (size + 0.45) + (0.3 if title else 0)
    fig, axes = plt.subplots(nrows, ncols, figsize=(NOTEBOOK_WIDTH_IN, height), squeeze=False, layout="constrained")
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(pics):
            ax.imshow(pics[i], interpolation="nearest")
            ax.set_title(titles[i], fontsize=9, pad=2)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def per_class_accuracy_figure(accuracies: dict[str, torch.Tensor]):
    """Per-class test accuracy, classes sorted by the first run's; one line per run."""
    first = next(iter(accuracies.values()))
    order = first.argsort(descending=True)
    fig, ax = plt.subplots(figsize=(8, 3.4))
    for (label, acc), color in zip(accuracies.items(), sns_palette(len(accuracies))):
        ax.plot(np.arange(len(order)), 100 * acc[order].numpy(), color=color, label=label, lw=1.5)
    ax.set(xlabel=f"class, sorted by {next(iter(accuracies))}'s accuracy", ylabel="test accuracy (%)",
           xlim=(0, len(order) - 1), ylim=(0, 100))
    ax.set_title("Per-class accuracy: do the losses find the same classes hard?", fontsize=10)
    ax.legend(fontsize=9, frameon=False)
    return fig
