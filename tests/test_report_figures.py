"""The report's figures, drawn from the shipped reference runs (no training)."""
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_hex

from cifar_hw2.experiments.report import ece_figure, figure7, find_runs, reliability_figure

REFERENCE = Path(__file__).resolve().parents[1] / "results" / "cpu-reference"


@pytest.fixture(scope="module")
def runs():
    found = find_runs(REFERENCE)
    assert len(found) == 8
    return found


def test_figure7_one_colour_per_loss_and_seeds_as_mean_with_band(runs):
    fig = figure7(runs)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["CE · bs 64: mean of 3 seeds (band: lowest to highest)",
                      "FLSD-53 · bs 64: mean of 3 seeds (band: lowest to highest)",
                      "FL γ=2 · bs 64: 1 seed", "MC · bs 64: 1 seed"]
    assert len({to_hex(line.get_color()) for line in ax.get_lines()}) == 4
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    ce = [r for r in runs if r.config["loss"] == "ce"]
    mean = np.mean([[100 * row["test_top1"] for row in r.history] for r in ce], axis=0)
    assert np.allclose(ax.get_lines()[0].get_ydata(), mean)
    plt.close(fig)


def test_reliability_grid_has_one_legend_and_a_count_strip_per_panel(runs):
    fig = reliability_figure(runs)
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    assert len(fig.axes) == 2 * len(runs)              # a diagram and its strip for each run
    strip = fig.axes[1]
    counts = np.array(runs[0].metrics["reliability"]["best"]["before"]["counts"], dtype=float)
    assert np.allclose([p.get_height() for p in strip.patches], 100 * counts / counts.sum())
    # shown at its own size in a 968 px notebook column (80 dpi inline)
    assert fig.get_figwidth() * 80 <= 968
    plt.close(fig)


def test_ece_figure_shows_each_loss_before_and_after_scaling(runs):
    fig = ece_figure(runs)
    ax = fig.axes[0]
    assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == ["CE · bs 64", "FLSD-53 · bs 64",
                                                                           "FL γ=2 · bs 64", "MC · bs 64"]
    before = [p.get_height() for p in ax.containers[0]]
    ce = [100 * r.metrics["best"]["ece"] for r in runs if r.config["loss"] == "ce"]
    mc = next(100 * r.metrics["best"]["ece_ts_ece"] for r in runs if r.config["loss"] == "mc")
    assert before[0] == pytest.approx(np.mean(ce)) and ax.containers[2][3].get_height() == pytest.approx(mc)
    plt.close(fig)


def test_figure8_only_when_the_runs_hold_two_models(tmp_path):
    """Figure 8 compares models: drawn for two, left out (with a sentence, and an earlier one removed) for one."""
    import json
    import shutil

    from cifar_hw2.experiments.report import write_report
    for name in ("ce-seed0", "flsd53-seed0"):
        shutil.copytree(REFERENCE / name, tmp_path / name, ignore=shutil.ignore_patterns("*.pt"))
    record = json.loads((tmp_path / "ce-seed0" / "config.json").read_text())
    record["config"]["model"] = "resnet9"          # as if trained with another model
    (tmp_path / "ce-seed0" / "config.json").write_text(json.dumps(record))
    paths = write_report(tmp_path, "two models")
    assert paths["fig8"].exists() and "![Figure 8](fig8_accuracy_by_model.png)" in paths["md"].read_text()
    shutil.rmtree(tmp_path / "ce-seed0")
    paths = write_report(tmp_path)
    assert "fig8" not in paths and not (tmp_path / "fig8_accuracy_by_model.png").exists()
    assert "Figure 8 (test accuracy by model) is left out: every run here is small_cnn." in paths["md"].read_text()
