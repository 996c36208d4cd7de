"""Seeds in the report: mean ± sd per setting, and differences against the seed spread."""
import json
import math
import statistics
from pathlib import Path

import pytest

from cifar_hw2.experiments.report import write_report
from cifar_hw2.experiments.spread import difference_rows, seed_groups, summary_rows
from cifar_hw2.experiments.report import find_runs


def fake_run(root: Path, name: str, loss: str, seed: int, top1: float, ece: float):
    """A run folder with the files the report reads (values chosen by the test)."""
    folder = root / name
    folder.mkdir(parents=True)
    config = {"model": "small_cnn", "loss": loss, "batch_size": 64, "lr": 2e-3, "seed": seed,
              "out": str(folder), "epochs": 7}
    best = {"epoch": 7, "top1": top1, "top5": top1 + 0.3, "nll": 2.0, "ece": ece, "temperature": 1.0,
            "ece_ts": ece / 2, "temperature_ece": 1.1, "ece_ts_ece": ece / 3, "val_top1": top1}
    bins = {"edges": [0.0, 0.5, 1.0], "counts": [1, 1], "confidence": [0.3, 0.7], "accuracy": [0.0, 1.0],
            "ece": 0.3}
    (folder / "config.json").write_text(json.dumps({"config": config}))
    (folder / "metrics.json").write_text(json.dumps({
        "top1": top1, "final": best, "best": best, "epochs_done": 7, "epochs": 7, "complete": True,
        "reliability": {"best": {"before": bins, "after_ts": bins}, "final": {"before": bins, "after_ts": bins}}}))
    (folder / "history.csv").write_text("epoch,test_top1,seconds\n7,%r,60.0\n" % top1)


@pytest.fixture
def three_seeds(tmp_path):
    ce = {0: (0.450, 0.017), 1: (0.455, 0.019), 2: (0.452, 0.018)}
    fl = {0: (0.440, 0.066), 1: (0.452, 0.061), 2: (0.447, 0.064)}
    for seed, (top1, ece) in ce.items():
        fake_run(tmp_path, f"ce-seed{seed}", "ce", seed, top1, ece)
    for seed, (top1, ece) in fl.items():
        fake_run(tmp_path, f"flsd53-seed{seed}", "flsd53", seed, top1, ece)
    fake_run(tmp_path, "mc", "mc", 0, 0.41, 0.05)
    return tmp_path, ce, fl


def test_groups_summaries_and_differences(three_seeds):
    root, ce, fl = three_seeds
    groups = seed_groups(find_runs(root))
    assert sorted(len(g.runs) for g in groups) == [1, 3, 3]
    rows = {r["setting"].split(" · ")[1]: r for r in summary_rows(groups)}
    mean, sd = rows["CE"]["top1"]
    assert mean == pytest.approx(statistics.fmean(v[0] for v in ce.values()))
    assert sd == pytest.approx(statistics.stdev(v[0] for v in ce.values()))
    assert rows["CE"]["seeds"] == "0,1,2" and rows["MC"]["top1"][1] is None     # one seed: no sd
    diffs = {d["metric"]: d for d in difference_rows(groups)}
    assert set(diffs) == {"top1", "ece", "ece_ts", "ece_ts_ece"}            # MC has one seed: no pair
    # top-1: Δ = 0.006, SE from sds ≈ 0.0025 and 0.006 → 2·SE ≈ 0.013: within the spread.
    se = math.sqrt(statistics.variance([v[0] for v in ce.values()]) / 3 +
                   statistics.variance([v[0] for v in fl.values()]) / 3)
    assert diffs["top1"]["two_se"] == pytest.approx(2 * se)
    assert diffs["top1"]["exceeds_spread"] is False
    # ECE: Δ ≈ −0.046 with sds of ~0.001–0.0025: far beyond the spread.
    assert diffs["ece"]["delta"] < 0 and diffs["ece"]["exceeds_spread"] is True


def test_report_shows_seeds_spread_and_both_temperature_protocols(three_seeds):
    root, _, _ = three_seeds
    md = write_report(root)["md"].read_text()
    assert "## Seeds: mean ± sd" in md and "| 3 | 0,1,2 |" in md
    assert "45.23 ± 0.25" in md                            # CE top-1 over seeds 0-2, in %
    assert "exceeds the spread?" in md and "| top1 | +0.60 |" in md
    assert "`temperature_ece`" in md and "Mukhoti" in md and "ece_ts_ece" in md
    assert "## Accuracy" in md and "## Calibration" in md


def test_report_without_repeated_seeds_has_no_seed_section(tmp_path):
    fake_run(tmp_path, "ce", "ce", 0, 0.45, 0.02)
    fake_run(tmp_path, "fl", "focal", 0, 0.44, 0.06)
    md = write_report(tmp_path)["md"].read_text()
    assert "Seeds" not in md and "exceeds" not in md


def test_a_repeated_seed_counts_once_and_the_report_names_the_folders(tmp_path):
    from cifar_hw2.experiments.report import seed_sections
    fake_run(tmp_path, "ce-a", "ce", 0, 0.45, 0.02)
    fake_run(tmp_path, "ce-b", "ce", 0, 0.47, 0.03)      # the same setting and seed again: not a second seed
    fake_run(tmp_path, "ce-c", "ce", 1, 0.46, 0.02)
    (group,) = seed_groups(find_runs(tmp_path))
    assert [r.name for r in group.runs] == ["ce-a", "ce-c"] and group.seeds == [0, 1]
    assert [(a.name, b.name) for a, b in group.repeats] == [("ce-a", "ce-b")]
    (row,) = summary_rows([group])
    assert row["n"] == 2 and row["seeds"] == "0,1"
    text = "".join(seed_sections(find_runs(tmp_path)))
    assert "ce-b repeats" in text and "ce-a" in text and "| 2 | 0,1 |" in text


def test_only_repeats_still_named(tmp_path):
    from cifar_hw2.experiments.report import seed_sections
    fake_run(tmp_path, "x", "ce", 0, 0.45, 0.02)
    fake_run(tmp_path, "y", "ce", 0, 0.45, 0.02)
    text = "".join(seed_sections(find_runs(tmp_path)))
    assert "Counted once" in text and "y repeats" in text
