"""What a classifier gets wrong: superclass confusion, confused pairs, confident mistakes, hard classes.

All functions take what a run's predictions file holds (training/predictions.py): test logits
[N, K], the true labels [N], and for the superclass view the coarse label of each fine class [K].
They return counts and fractions (0.23, not 23 %), computed in float64.

Calibration is why this module is here. An over-confident network is *confidently* wrong more often:
`confident_mistakes` counts the test images that are misclassified with a confidence above a
threshold, the errors a user of the model would trust. ECE (metrics.py) averages the gap between
confidence and accuracy; this shows the images behind it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .metrics import predicted   # the prediction the metrics score: the error analysis reads the same one

CONFIDENCE_THRESHOLDS = (0.5, 0.8, 0.9)


def confusion(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts [K, K]: row = true class, column = predicted class."""
    index = labels.long() * num_classes + pred.long()
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes)


def superclass_confusion(pred: torch.Tensor, labels: torch.Tensor, coarse_of: torch.Tensor) -> torch.Tensor:
    """Row-normalised [20, 20]: of the images of superclass i, the share predicted in superclass j.
    The diagonal counts a mistake inside the superclass (maple → oak) as right at this level."""
    coarse_of = coarse_of.long()
    counts = confusion(coarse_of[pred.long()], coarse_of[labels.long()], int(coarse_of.max()) + 1).double()
    return counts / counts.sum(dim=1, keepdim=True).clamp_min(1)


@dataclass
class ConfusedPair:
    a: int          # the two fine classes, a < b
    b: int
    a_as_b: int     # images of a predicted as b
    b_as_a: int

    @property
    def total(self) -> int:
        return self.a_as_b + self.b_as_a


def confused_pairs(pred: torch.Tensor, labels: torch.Tensor, num_classes: int, k: int = 10) -> list[ConfusedPair]:
    """The k pairs of fine classes most often mistaken for each other, both directions counted."""
    c = confusion(pred, labels, num_classes)
    both = (c + c.T).triu(diagonal=1)                     # [K, K], pairs a < b
    flat = both.flatten()
    top = flat.topk(min(k, int((flat > 0).sum()))).indices
    return [ConfusedPair(int(i) // num_classes, int(i) % num_classes, int(c[i // num_classes, i % num_classes]),
                         int(c[i % num_classes, i // num_classes])) for i in top]


def confident_mistakes(logits: torch.Tensor, labels: torch.Tensor,
                       thresholds=CONFIDENCE_THRESHOLDS) -> dict[float, float]:
    """For each threshold t: the share of all test images that are misclassified with confidence > t."""
    conf, pred = predicted(logits)
    wrong = pred != labels
    return {t: float((wrong & (conf > t)).double().mean()) for t in thresholds}


def most_confident_mistakes(logits: torch.Tensor, labels: torch.Tensor, k: int = 12) -> list[tuple[int, int, float]]:
    """(image index, predicted class, confidence) of the k mistakes made with the highest confidence."""
    conf, pred = predicted(logits)
    wrong = (pred != labels).nonzero().flatten()
    order = wrong[conf[wrong].argsort(descending=True, stable=True)][:k]
    return [(int(i), int(pred[i]), float(conf[i])) for i in order]


def per_class_accuracy(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[K] accuracy of each true class (NaN for a class with no test image)."""
    c = confusion(pred, labels, num_classes).double()
    return c.diagonal() / c.sum(dim=1)


def rank_agreement(acc_a: torch.Tensor, acc_b: torch.Tensor) -> float:
    """Spearman's rank correlation of two per-class accuracies: 1 when two runs find the same classes
    hard, 0 when their orders are unrelated. Ties get their mean rank."""
    def ranks(x: torch.Tensor) -> torch.Tensor:
        order = x.argsort(stable=True)
        r = torch.empty_like(x)
        r[order] = torch.arange(len(x), dtype=x.dtype)
        for v in x.unique():                              # ties: the mean of their ranks
            same = x == v
            r[same] = r[same].mean()
        return r
    ra, rb = ranks(acc_a.double()), ranks(acc_b.double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))
