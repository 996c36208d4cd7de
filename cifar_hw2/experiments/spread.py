"""Runs that differ only in their seed: mean ± sd, and whether a difference exceeds the spread.

    groups = seed_groups(runs)            one SeedGroup per setting (config less seed and out)
    summary_rows(groups)                  one dict per group: n, mean ± sd of each metric
    difference_rows(groups)               every pair of groups with ≥ 2 seeds each, same model

One seed says nothing about how much a number moves from run to run; a 0.1-point difference
between two losses can be noise. With n seeds per setting, a difference of means Δ = m_A − m_B
is said to exceed the seed spread when |Δ| > 2·SE, SE = √(s_A²/n_A + s_B²/n_B) (Welch's
standard error of a difference; s = sample standard deviation). That is roughly a two-sided 95 %
criterion for large n; with 3 seeds it is a rough screen, not a test, and the report says so.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from ..training.config import RUNTIME_FIELDS

# metrics.json "best" keys summarised across seeds (fractions; temperatures are plain numbers).
METRICS = ("top1", "top5", "nll", "ece", "ece_ts", "ece_ts_ece", "temperature", "temperature_ece")
# The ones compared between settings.
COMPARED = ("top1", "ece", "ece_ts", "ece_ts_ece")


@dataclass
class SeedGroup:
    label: str                                   # e.g. "small CNN · CE · bs 64"
    model: str
    runs: list = field(default_factory=list)     # report.Run objects, one per seed, sorted by seed
    repeats: list = field(default_factory=list)  # (kept run, run left out): the same setting and seed twice

    @property
    def seeds(self) -> list[int]:
        return [r.config.get("seed", 0) for r in self.runs]

    def values(self, key: str) -> list[float]:
        return [r.metrics["best"][key] for r in self.runs if r.metrics["best"].get(key) is not None]

    def mean_sd(self, key: str) -> tuple[float | None, float | None]:
        v = self.values(key)
        if not v:
            return None, None
        return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else None)


def setting_of(run) -> tuple:
    """What a run computes, less its seed: the config's identity fields and the epochs it ran."""
    cfg = {k: v for k, v in run.config.items() if k not in RUNTIME_FIELDS and k != "seed"}
    return tuple(sorted((k, repr(v)) for k, v in cfg.items())) + (("epochs_done", run.metrics["epochs_done"]),)


def seed_groups(runs) -> list[SeedGroup]:
    """Runs grouped by setting, in the order of their first run; each group sorted by seed. Two
    folders of one setting and one seed are one seed, not two: the first is kept, and the pair is
    listed in the group's `repeats` (so that the report can name them)."""
    groups: dict[tuple, SeedGroup] = {}
    for run in runs:
        g = groups.setdefault(setting_of(run), SeedGroup(run.label, run.config["model"]))
        kept = next((r for r in g.runs if r.config.get("seed", 0) == run.config.get("seed", 0)), None)
        if kept is not None:
            g.repeats.append((kept, run))
            continue
        g.runs.append(run)
    for g in groups.values():
        g.runs.sort(key=lambda r: r.config.get("seed", 0))
    return list(groups.values())


def summary_rows(groups: list[SeedGroup]) -> list[dict]:
    """One row per group: setting, n, seeds, and (mean, sd) for each metric (sd None for n = 1)."""
    rows = []
    for g in groups:
        row = {"setting": g.label, "n": len(g.runs), "seeds": ",".join(str(s) for s in g.seeds)}
        for key in METRICS:
            row[key] = g.mean_sd(key)
        rows.append(row)
    return rows


def difference_rows(groups: list[SeedGroup]) -> list[dict]:
    """Every pair of groups of one model with ≥ 2 seeds each: Δ of means, 2·SE, exceeds spread?"""
    several = [g for g in groups if len(g.runs) >= 2]
    rows = []
    for i, a in enumerate(several):
        for b in several[i + 1:]:
            if a.model != b.model:
                continue
            for key in COMPARED:
                va, vb = a.values(key), b.values(key)
                if len(va) < 2 or len(vb) < 2:
                    continue
                delta = statistics.fmean(va) - statistics.fmean(vb)
                se = math.sqrt(statistics.variance(va) / len(va) + statistics.variance(vb) / len(vb))
                rows.append({"a": a.label, "b": b.label, "metric": key, "delta": delta, "two_se": 2 * se,
                             "exceeds_spread": abs(delta) > 2 * se})
    return rows
