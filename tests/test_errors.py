"""Error analysis (errors.py) on hand-made predictions, and the predictions file (training/predictions.py)."""
import math

import numpy as np
import pytest
import torch

from cifar_hw2 import errors
from cifar_hw2.data import CifarSplit
from cifar_hw2.metrics import classification_metrics
from cifar_hw2.training.predictions import PredictionsError, load_predictions, write_predictions


def logits_for(pred: list[int], conf: list[float], k: int = 4) -> torch.Tensor:
    """Logits [N, k] whose softmax puts `conf` on class `pred` and shares the rest equally."""
    z = torch.zeros(len(pred), k, dtype=torch.float64)
    for i, (p, c) in enumerate(zip(pred, conf)):
        z[i, p] = math.log(c * (k - 1) / (1 - c))
    return z


def test_confusion_pairs_and_per_class_accuracy():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3])
    pred = torch.tensor([0, 1, 1, 0, 1, 2, 3, 3])
    c = errors.confusion(pred, labels, 4)
    assert c.tolist() == [[1, 2, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 1]]
    (top, second) = errors.confused_pairs(pred, labels, 4, k=5)        # only two pairs were ever confused
    assert (top.a, top.b, top.a_as_b, top.b_as_a, top.total) == (0, 1, 2, 1, 3)
    assert (second.a, second.b, second.a_as_b, second.b_as_a) == (2, 3, 1, 0)
    assert errors.per_class_accuracy(pred, labels, 4).tolist() == pytest.approx([1 / 3, 1 / 2, 1 / 2, 1])


def test_superclass_confusion_counts_a_mistake_inside_the_superclass_as_right():
    coarse_of = torch.tensor([0, 0, 1, 1])              # classes 0, 1 in superclass 0; 2, 3 in 1
    labels = torch.tensor([0, 0, 2, 2])
    pred = torch.tensor([1, 2, 3, 2])                   # 0→1 same superclass, 0→2 across, 2→3 and 2→2 inside
    m = errors.superclass_confusion(pred, labels, coarse_of)
    assert m.tolist() == [[0.5, 0.5], [0.0, 1.0]]


def test_confident_mistakes_and_the_gallery_order():
    labels = torch.tensor([0, 1, 2, 3, 0])
    z = logits_for([1, 1, 0, 0, 0], [0.95, 0.9, 0.6, 0.85, 0.99])   # wrong: #0 (0.95), #2 (0.6), #3 (0.85)
    shares = errors.confident_mistakes(z, labels)
    assert shares == pytest.approx({0.5: 3 / 5, 0.8: 2 / 5, 0.9: 1 / 5})
    got = errors.most_confident_mistakes(z, labels, k=2)
    assert [(i, p) for i, p, _ in got] == [(0, 1), (3, 0)] and got[0][2] == pytest.approx(0.95)


def test_rank_agreement_is_spearman():
    a = torch.tensor([0.1, 0.5, 0.3, 0.9])
    assert errors.rank_agreement(a, a * 2) == pytest.approx(1.0)
    assert errors.rank_agreement(a, -a) == pytest.approx(-1.0)
    b = torch.tensor([0.2, 0.4, 0.1, 0.3])              # ranks 1,3,0,2 against 0,2,1,3: Σd² = 4
    assert errors.rank_agreement(a, b) == pytest.approx(1 - 6 * 4 / (4 * 15))   # 0.6


def _split(n: int, k: int = 4) -> CifarSplit:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % k
    return CifarSplit(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), labels, labels // 2,
                      [f"class{i}" for i in range(k)], ["even", "odd"])


def test_predictions_round_trip_reproduce_the_metrics_exactly(tmp_path):
    test, val = _split(40), _split(20)
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(40, 4, generator=g).float()
    write_predictions(tmp_path / "predictions.npz", logits, test, epoch=3, val_logits=torch.randn(20, 4).float(),
                      val_split=val)
    p = load_predictions(tmp_path / "predictions.npz")
    assert classification_metrics(p.test_logits, p.test_labels) == classification_metrics(logits, test.labels)
    assert p.epoch == 3 and p.classes == test.classes and p.coarse_of.tolist() == [0, 0, 1, 1]
    assert p.val_logits.shape == (20, 4) and p.val_labels.tolist() == val.labels.tolist()
    first = errors.most_confident_mistakes(logits, test.labels, k=1)[0][0]
    assert torch.equal(p.mistake_images[0], test.images[first]) and int(p.mistake_at[0]) == first


def test_a_predictions_file_with_pickled_objects_is_refused(tmp_path):
    bad = tmp_path / "predictions.npz"
    np.savez(bad, test_logits=np.array([object()], dtype=object))
    with pytest.raises(PredictionsError, match="not a readable predictions file"):
        load_predictions(bad)
    with pytest.raises(PredictionsError, match="no predictions file"):
        load_predictions(tmp_path / "none.npz")


@pytest.mark.parametrize("n, title", [(16, "its 16 most confident mistakes"), (3, "")])
def test_the_gallery_titles_overlap_no_image_and_no_other_title(n, title):
    """Two-line titles ("true →\\npredicted 0.97") once overlapped the images of the row above."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from cifar_hw2.error_plots import mistake_gallery
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    fig = mistake_gallery(images, [f"aquarium_fish →\nsweet_pepper 0.9{i % 10}" for i in range(n)], title=title)
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)                      # constrained layout places the axes while drawing
    pictures = [ax.images[0].get_window_extent(renderer) for ax in fig.axes if ax.images]
    texts = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.images]
    if title:
        texts += [t.get_window_extent(renderer) for t in fig.texts if t.get_text() == title]   # the suptitle

    def overlap(a, b):                      # touching is fine; sharing more than 1 px each way is not
        return min(a.x1, b.x1) - max(a.x0, b.x0) > 1 and min(a.y1, b.y1) - max(a.y0, b.y0) > 1

    assert len(pictures) == n and len(texts) == n + bool(title)
    for i, t in enumerate(texts):
        assert not any(overlap(t, p) for p in pictures), f"text {i} overlaps an image"
        assert not any(overlap(t, u) for j, u in enumerate(texts) if j != i), f"text {i} overlaps another"
        assert fig.bbox.contains(t.x0, t.y0) and fig.bbox.contains(t.x1, t.y1), f"text {i} is cut off"
    plt.close(fig)


def test_hardest_and_easiest_classes_say_when_a_tie_is_cut():
    from types import SimpleNamespace
    from cifar_hw2.experiments import mistakes
    labels = torch.arange(12) // 2                        # 6 classes, 2 test images each
    right = [0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 1, 1]           # accuracy 0, 0, 0, 0.5, 1, 1
    pred = torch.where(torch.tensor(right).bool(), labels, (labels + 1) % 6)
    p = mistakes.Predictions(test_logits=torch.nn.functional.one_hot(pred, 6).double(), test_labels=labels,
                             classes=[f"c{i}" for i in range(6)], coarse_classes=["all"], coarse_of=torch.zeros(6),
                             epoch=1, mistake_images=torch.zeros(0, 3, 32, 32, dtype=torch.uint8),
                             mistake_at=torch.zeros(0, dtype=torch.int64))
    analysed = [(SimpleNamespace(name="r"), p)]
    assert mistakes.hard_classes_table(analysed, k=2) == [{"r: hardest": "c0 0", "r: easiest": "c5 100"},
                                                          {"r: hardest": "c1 0", "r: easiest": "c4 100"}]
    assert mistakes.ties_at_the_cut(analysed, k=2) == ["r: 3 classes tie at 0 % where the hardest column ends; "
                                                       "it lists 2 of them."]
    assert mistakes.ties_at_the_cut(analysed, k=3) == []     # all three zeros fit, and 0.5 is alone


def test_05s_mistakes_section_names_each_of_three_runs_with_one_title(tmp_path, monkeypatch):
    """A student's own runs often share "FLSD-53 · seed 0" (the README's quick run, 04's run, ...):
    05's figures are keyed by title, and three such runs once crashed the superclass figure."""
    import shutil
    from pathlib import Path
    from cifar_hw2.experiments.mistakes import run_titles
    from cifar_hw2.experiments.report import find_runs
    from cifar_hw2.notebook.helpers import show_mistakes
    source = Path(__file__).resolve().parents[1] / "results" / "cpu-reference-reruns" / "flsd53-seed0"
    for name in ("demo", "flsd53", "mine"):
        shutil.copytree(source, tmp_path / "runs" / name)
    shutil.copytree(source.parent / "ce-seed0", tmp_path / "runs" / "ce")
    runs = find_runs(tmp_path / "runs")
    assert run_titles(runs) == {"ce": "CE · seed 0", "demo": "FLSD-53 · seed 0 (demo)",
                                "flsd53": "FLSD-53 · seed 0 (flsd53)", "mine": "FLSD-53 · seed 0 (mine)"}
    monkeypatch.setenv("CIFAR_HW2_FIGURES", str(tmp_path / "figures"))
    monkeypatch.setattr("IPython.display.display", lambda *a, **k: None)
    show_mistakes(runs, "t")
    assert sorted(p.name for p in (tmp_path / "figures").glob("t_superclass_confusion_*.png")) == [
        "t_superclass_confusion_1.png", "t_superclass_confusion_2.png"]


def test_predictions_of_another_epoch_than_metrics_best_are_left_out_in_one_line(tmp_path):
    # A run killed between writing best.pt and predictions.npz keeps an older epoch's predictions:
    # 05 would mix their mistakes with metrics.json's numbers. evaluate's file can stand in.
    import shutil
    from pathlib import Path
    from cifar_hw2.experiments.mistakes import with_predictions
    from cifar_hw2.experiments.report import find_runs
    source = Path(__file__).resolve().parents[1] / "results" / "cpu-reference-reruns" / "ce-seed0"
    shutil.copytree(source, tmp_path / "ce")
    p = load_predictions(tmp_path / "ce" / "predictions.npz")
    test, val = _split(40), _split(20)
    write_predictions(tmp_path / "ce" / "predictions.npz", torch.randn(40, 4), test, epoch=p.epoch - 2,
                      val_logits=torch.randn(20, 4), val_split=val)
    said = []
    assert with_predictions(find_runs(tmp_path), warn=said.append) == []
    assert said == [f"left out: {tmp_path / 'ce' / 'predictions.npz'} holds epoch {p.epoch - 2}, but metrics.json's "
                    f"best epoch is {p.epoch}; `python -m cifar_hw2 evaluate --checkpoint {tmp_path / 'ce' / 'best.pt'}` "
                    "writes that epoch's"]
    shutil.copy(source / "predictions.npz", tmp_path / "ce" / "predictions-best.npz")   # as evaluate writes it
    [(run, found)] = with_predictions(find_runs(tmp_path), warn=said.append)
    assert found.epoch == p.epoch and len(said) == 1         # the stand-in is used, and nothing more is said
