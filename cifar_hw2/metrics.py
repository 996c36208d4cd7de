"""Accuracy, NLL and calibration (ECE, reliability diagrams, temperature scaling).

All functions take logits [N, K] and targets [N] and return fractions (0.23, not 23 %);
displays may show percent. Everything is computed in float64 on the CPU-or-wherever tensors given.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _check(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.ndim != 2 or targets.ndim != 1 or logits.shape[0] != targets.shape[0]:
        raise ValueError(f"expected logits [N, K] and targets [N], got {tuple(logits.shape)} "
                         f"and {tuple(targets.shape)}")
    if logits.shape[0] == 0:
        raise ValueError("no samples: logits and targets are empty")
    if not torch.isfinite(logits).all():
        bad = int((~torch.isfinite(logits)).sum())
        raise ValueError(f"{bad} of the {logits.numel()} logits are NaN or infinite: the model's outputs "
                         "overflowed or training diverged, so no metric of them means anything")


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, k: int = 1) -> float:
    """Fraction of samples whose true class is among the k highest logits. Top-1 is the argmax, the
    predicted class of `reliability` and of errors.py (on a tie, the first class: topk may pick another)."""
    _check(logits, targets)
    k = min(k, logits.shape[1])
    if k == 1:
        hit = logits.argmax(dim=1) == targets
    else:
        hit = (logits.topk(k, dim=1).indices == targets[:, None]).any(dim=1)
    return hit.double().mean().item()


def nll(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean negative log-likelihood of the true class (nats)."""
    _check(logits, targets)
    return F.cross_entropy(logits.double(), targets.long()).item()


@dataclass
class Reliability:
    """Per-bin data for a reliability diagram. Arrays have one entry per bin (n_bins)."""

    edges: torch.Tensor        # [n_bins + 1], 0 .. 1
    counts: torch.Tensor       # samples in each bin
    confidence: torch.Tensor   # mean max-softmax confidence in each bin (0 where empty)
    accuracy: torch.Tensor     # accuracy in each bin (0 where empty)
    ece: float                 # Σ_b (n_b / N) · |acc_b − conf_b|

    @property
    def mean_confidence(self) -> float:
        """Mean max-softmax confidence over all samples: above the accuracy, over-confident on average."""
        return float((self.counts * self.confidence).sum() / self.counts.sum())

    def calibrated_ece(self) -> float:
        """The ECE that a perfectly calibrated model with these bins would show, in expectation: its
        floor on this many samples. Each bin's accuracy is then a binomial draw around its confidence,
        Binomial(n_b, conf_b) / n_b, whose mean absolute deviation is summed as the ECE sums the gaps.
        ECE is biased upwards on a finite sample: an ECE within a few tenths of a point of this is what a
        calibrated model gives, one well above it is miscalibration. (Every sample of a bin counts as
        the bin's mean confidence; per-sample confidences give nearly the same: 1.22 % either way for
        the CE re-run of results/cpu-reference-reruns/, 10,000 test images.)"""
        total = 0.0
        for n, p in zip(self.counts.tolist(), self.confidence.tolist()):
            if n == 0 or p >= 1.0:
                continue
            k = torch.arange(n + 1, dtype=torch.float64)
            log_pmf = (math.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
                       + k * math.log(p) + (n - k) * math.log1p(-p))
            total += float((log_pmf.exp() * (k - n * p).abs()).sum())   # E|X − n·p|, X ~ Binomial(n, p)
        return total / int(self.counts.sum())

    def to_dict(self) -> dict:
        """Plain lists, for metrics.json."""
        return {"edges": self.edges.tolist(), "counts": self.counts.tolist(),
                "confidence": self.confidence.tolist(), "accuracy": self.accuracy.tolist(), "ece": self.ece}

    @classmethod
    def from_dict(cls, d: dict) -> "Reliability":
        return cls(torch.tensor(d["edges"], dtype=torch.float64), torch.tensor(d["counts"]),
                   torch.tensor(d["confidence"], dtype=torch.float64),
                   torch.tensor(d["accuracy"], dtype=torch.float64), float(d["ece"]))


def predicted(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(confidence [N], predicted class [N]): the top softmax probability (float64) and the argmax
    class (on a tie, the first; topk may pick another)."""
    return logits.double().softmax(dim=1).max(dim=1).values, logits.argmax(dim=1)


def reliability(logits: torch.Tensor, targets: torch.Tensor, n_bins: int = 15) -> Reliability:
    """Equal-width bins over max-softmax confidence; a sample is in bin b when lo_b < conf ≤ hi_b.

    This is the binning of Guo et al. 2017 and of Mukhoti et al. 2020, who report 15 bins.
    """
    _check(logits, targets)
    if n_bins <= 0:
        raise ValueError(f"n_bins must be positive, got {n_bins}")
    conf, pred = predicted(logits)
    correct = (pred == targets).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    # bucketize(right=False) gives i with edges[i-1] < conf <= edges[i]; bin index i - 1.
    # conf = 0 cannot happen for a softmax, so every sample falls in bins 0..n_bins-1.
    bins = (torch.bucketize(conf, edges, right=False) - 1).clamp(0, n_bins - 1)
    counts = torch.bincount(bins, minlength=n_bins).double()
    conf_sum = torch.bincount(bins, weights=conf, minlength=n_bins)
    acc_sum = torch.bincount(bins, weights=correct, minlength=n_bins)
    nonzero = counts.clamp_min(1)
    confidence, accuracy = conf_sum / nonzero, acc_sum / nonzero
    ece = ((counts / len(conf)) * (accuracy - confidence).abs()).sum().item()
    return Reliability(edges, counts.long(), confidence, accuracy, ece)


def expected_calibration_error(logits: torch.Tensor, targets: torch.Tensor, n_bins: int = 15) -> float:
    """ECE as a fraction (Naeini et al. 2015; Guo et al. 2017 Eq. 3), equal-width bins."""
    return reliability(logits, targets, n_bins).ece


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor,
                    t_min: float = 0.05, t_max: float = 20.0) -> float:
    """The temperature T > 0 that minimises the NLL of softmax(logits / T) on held-out logits.

    NLL(β) with β = 1/T is convex (log-sum-exp of a linear function minus a linear term), so its
    derivative  dNLL/dβ = mean(E_softmax(βz)[z] − z_y)  is increasing: we find its zero by
    bisection in float64, to machine precision and without a learning rate to tune. The answer
    is clipped to [t_min, t_max] (hit only by degenerate data, e.g. all predictions right).
    """
    _check(logits, targets)
    z = logits.double()
    z_true = z.gather(1, targets.long()[:, None]).squeeze(1)

    def slope(beta: float) -> float:
        p = (beta * z).softmax(dim=1)
        return ((p * z).sum(dim=1) - z_true).mean().item()

    lo, hi = 1.0 / t_max, 1.0 / t_min
    if slope(lo) >= 0:
        return t_max
    if slope(hi) <= 0:
        return t_min
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if slope(mid) < 0:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return 1.0 / (0.5 * (lo + hi))


# Mukhoti et al. 2020's protocol (their code's `set_temperature(cross_validate="ece")`): try
# T = 0.1, 0.2, ..., 10.0 and keep the first T with the lowest validation ECE (15 bins).
ECE_GRID = tuple(round(0.1 * i, 1) for i in range(1, 101))


def fit_temperature_ece(logits: torch.Tensor, targets: torch.Tensor, grid=ECE_GRID, n_bins: int = 15) -> float:
    """The grid temperature with the lowest ECE of softmax(logits / T) on held-out logits.

    This is the protocol behind the ECE-after-scaling numbers in Mukhoti et al.'s tables. It
    minimises the reported metric itself, so it usually finds a lower ECE than the NLL fit
    (`fit_temperature`), and on ECE's flat, noisy landscape it can pick a very different T.
    Ties keep the smallest T, as a strict "<" over the ascending grid does.
    """
    _check(logits, targets)
    if not grid:
        raise ValueError("grid must hold at least one temperature")
    if any(t <= 0 for t in grid):
        raise ValueError(f"temperatures must be positive, got {min(grid)}")
    z = logits.double()
    best_t, best_ece = None, float("inf")
    for t in grid:
        ece = reliability(z / t, targets, n_bins).ece
        if ece < best_ece:
            best_t, best_ece = float(t), ece
    return best_t


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor, n_bins: int = 15) -> dict:
    """{"top1", "top5", "nll", "ece"} as floats (fractions, nats)."""
    return {
        "top1": topk_accuracy(logits, targets, 1),
        "top5": topk_accuracy(logits, targets, 5),
        "nll": nll(logits, targets),
        "ece": expected_calibration_error(logits, targets, n_bins),
    }


def temperature_scaled(val_logits: torch.Tensor, val_labels: torch.Tensor, logits: torch.Tensor,
                       labels: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """Both temperatures, fitted on validation (never on the split reported), the ECE of `logits`
    [N, K] after each, and the logits scaled by the NLL fit:

        temperature, ece_ts          T minimising validation NLL (Guo et al. 2017)
        temperature_ece, ece_ts_ece  T from the 0.1..10 grid by validation ECE, the protocol of
                                     Mukhoti et al. 2020's code (their tables' "after TS")
    """
    t, t_ece = fit_temperature(val_logits, val_labels), fit_temperature_ece(val_logits, val_labels)
    scaled = logits / t
    return {"temperature": t, "ece_ts": expected_calibration_error(scaled, labels),
            "temperature_ece": t_ece, "ece_ts_ece": expected_calibration_error(logits / t_ece, labels)}, scaled
