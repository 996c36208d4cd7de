"""What each run gets wrong, read from the predictions.npz beside it (no model is run again).

    analysed = with_predictions(runs)          the runs that have a predictions file, with it
    run_titles(runs)                           how the figures name each run
    confident_table(analysed)                  % of test images wrong above each confidence threshold
    confused_pairs_table(run, predictions)     the 10 fine-class pairs most often mistaken for each other
    hard_classes_table(analysed)               each run's 10 hardest and 10 easiest classes
    ties_at_the_cut(analysed)                  where equal accuracies make that choice arbitrary
    agreement_rows(analysed)                   do two runs find the same classes hard? (Spearman ρ)

Notebook 05's "What each loss gets wrong" shows these, with the figures of error_plots.py.
"""
from __future__ import annotations

import torch

from .. import errors
from ..training.predictions import FILENAME, Predictions, PredictionsError, load_predictions


def run_title(run) -> str:
    """"CE · seed 0": the loss and the seed, what tells the reference runs apart."""
    return f"{run.loss_label} · seed {run.config.get('seed')}"


def run_titles(runs) -> dict[str, str]:
    """{run.name: title}: run_title, with the run's folder name added where runs share a title (two
    FLSD-53 seed-0 runs of one's own). The figures are keyed by title: shared, they would merge."""
    plain = {run.name: run_title(run) for run in runs}
    shared = {t for t in plain.values() if list(plain.values()).count(t) > 1}
    return {name: f"{t} ({name})" if t in shared else t for name, t in plain.items()}


def with_predictions(runs, warn=print) -> list[tuple]:
    """(run, Predictions) for each run whose folder holds a readable predictions file of the epoch that
    its metrics.json reports as best; a damaged file, or one of another epoch (a run killed between
    writing its checkpoints and its predictions), is named in one line and left out."""
    out = []
    for run in runs:
        # the trainer's file, else the one `evaluate --checkpoint RUN/best.pt` writes
        found = [run.path / name for name in (FILENAME, "predictions-best.npz") if (run.path / name).exists()]
        best, said = run.metrics["best"]["epoch"], []
        for path in found:
            try:
                predictions = load_predictions(path)
            except PredictionsError as e:
                said.append(f"left out: {e}")
                continue
            if predictions.epoch == best:
                out.append((run, predictions))
                break
            said.append(f"left out: {path} holds epoch {predictions.epoch}, but metrics.json's best epoch is "
                        f"{best}; `python -m cifar_hw2 evaluate --checkpoint {run.path / 'best.pt'}` writes that epoch's")
        else:                          # no file of the best epoch: say why each was left out
            for line in said:
                warn(line)
    return out


def confident_table(analysed) -> list[dict]:
    rows = []
    for run, p in analysed:
        conf, pred = errors.predicted(p.test_logits)
        shares = errors.confident_mistakes(p.test_logits, p.test_labels)
        rows.append({"run": run.name, "loss": run.loss_label, "top1": float((pred == p.test_labels).double().mean()),
                     "ece": run.metrics["best"]["ece"], "mean confidence": f"{100 * float(conf.mean()):.2f}",
                     **{f"wrong, conf > {t:g}": f"{100 * v:.2f}" for t, v in shares.items()}})
    return rows


def confused_pairs_table(p: Predictions, k: int = 10) -> list[dict]:
    _, pred = errors.predicted(p.test_logits)
    rows = []
    for pair in errors.confused_pairs(pred, p.test_labels, len(p.classes), k):
        same = int(p.coarse_of[pair.a]) == int(p.coarse_of[pair.b])
        rows.append({"classes": f"{p.classes[pair.a]} ↔ {p.classes[pair.b]}", "a → b": pair.a_as_b,
                     "b → a": pair.b_as_a, "same superclass": p.coarse_classes[int(p.coarse_of[pair.a])]
                     if same else "no"})
    return rows


def class_accuracy(p: Predictions) -> torch.Tensor:
    _, pred = errors.predicted(p.test_logits)
    return errors.per_class_accuracy(pred, p.test_labels, len(p.classes))


def hard_classes_table(analysed, k: int = 10) -> list[dict]:
    """One row per rank: each run's k-th hardest and k-th easiest class with its accuracy (%)."""
    rows = [{} for _ in range(k)]
    for run, p in analysed:
        acc = class_accuracy(p)
        order = acc.argsort(stable=True)
        for i in range(k):
            hard, easy = int(order[i]), int(order[-1 - i])
            rows[i][f"{run.name}: hardest"] = f"{p.classes[hard]} {100 * acc[hard]:.0f}"
            rows[i][f"{run.name}: easiest"] = f"{p.classes[easy]} {100 * acc[easy]:.0f}"
    return rows


def ties_at_the_cut(analysed, k: int = 10) -> list[str]:
    """A line for each run whose k-th hardest (or easiest) class ties with classes left out of the
    table: a short run has many classes at 0 %, and which of them the table shows is arbitrary."""
    notes = []
    for run, p in analysed:
        acc = class_accuracy(p)
        order = acc.argsort(stable=True)
        for end, shown, at in (("hardest", order[:k], acc[order[k - 1]]), ("easiest", order[-k:], acc[order[-k]])):
            tied, listed = int((acc == at).sum()), int((acc[shown] == at).sum())
            if tied > listed:
                notes.append(f"{run.name}: {tied} classes tie at {100 * at:.0f} % where the {end} column ends; "
                             f"it lists {listed} of them.")
    return notes


def agreement_rows(analysed, k: int = 10) -> list[dict]:
    """Every pair of runs: Spearman's ρ of their per-class accuracies, and how many of their k
    hardest classes they share."""
    rows = []
    for i, (run_a, pa) in enumerate(analysed):
        for run_b, pb in analysed[i + 1:]:
            a, b = class_accuracy(pa), class_accuracy(pb)
            shared = set(a.argsort(stable=True)[:k].tolist()) & set(b.argsort(stable=True)[:k].tolist())
            rows.append({"A": run_a.name, "B": run_b.name, "Spearman ρ": f"{errors.rank_agreement(a, b):.2f}",
                         f"shared of the {k} hardest": len(shared)})
    return rows


def gallery_titles(p: Predictions) -> list[str]:
    """"true →\\npredicted 0.97" for each image of the file's gallery, in its order."""
    conf, pred = errors.predicted(p.test_logits)
    return [f"{p.classes[int(p.test_labels[i])]} →\n{p.classes[int(pred[i])]} {float(conf[i]):.2f}"
            for i in p.mistake_at.tolist()]
