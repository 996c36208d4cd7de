"""Collect run folders and compare them with the report's Table 1.

    runs = find_runs("runs")                     every folder below with a metrics.json
    rows = comparison_table(runs)                one dict per run, report accuracy alongside
    write_report("runs")                         report.md, report.csv and the figures, in that folder

Accuracy columns are fractions in the CSV and percent in the Markdown.
"""
from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

from ..metrics import Reliability
from ..training.checkpoint import atomic_write_text
from ..training.paths import shown_path
from .reference import MODEL_LABEL, REPORT_TABLE1, TABLE1_BY_KEY, ReportRow, find_table1_row
from .runs import Run, load_run


def find_runs(root: str | Path, unreadable: list[str] | None = None) -> list[Run]:
    """Every run folder below root (sorted by path): every folder with a metrics.json. One that cannot
    be read (a garbled or missing file) is left out, and what is wrong with it is appended to
    `unreadable` when given."""
    root = Path(root)
    if not root.exists():
        return []
    runs = []
    for metrics in sorted(root.rglob("metrics.json")):
        try:
            run = load_run(metrics.parent)
        except ValueError as e:         # names the file
            why = str(e)
        else:
            try:                        # all the report reads of a run (its tables and figures): files without it are left out
                comparison_table([run]), reliability_of(run, scaled=True), float(run.metrics["best"]["val_top1"])
                runs.append(run)
                continue
            except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
                why = f"{metrics.parent} does not hold what a run's files hold ({type(e).__name__}: {e})"
        if unreadable is not None:
            unreadable.append(why)
    return runs


def report_row_for(run: Run) -> ReportRow | None:
    """The Table 1 row a run is compared with: the one its grid row names (grid.json), else the
    one with the run's model, batch size and loss label."""
    if run.grid is not None and "table1" in run.grid:
        return TABLE1_BY_KEY.get(run.grid["table1"]) if run.grid["table1"] else None
    return find_table1_row(run.config["model"], run.config["loss"], run.config["batch_size"])


def is_stand_in(run: Run, ref: ReportRow | None) -> bool:
    """A run that trained another model than its Table 1 row (a quick grid row on small_cnn)."""
    return ref is not None and ref.model != run.config["model"]


def table1_label(run: Run, ref: ReportRow | None) -> str | None:
    if ref is None:
        return None
    label = f"{MODEL_LABEL[ref.model]} · {ref.loss} · bs {ref.batch_size}"
    return f"{label} (quick stand-in)" if is_stand_in(run, ref) else label


def comparison_table(runs: list[Run]) -> list[dict]:
    """One row per run: our best-by-val and final test accuracy beside the report's, and calibration."""
    out = []
    for run in runs:
        best, final, bins = run.metrics["best"], run.metrics["final"], reliability_of(run)
        ref = report_row_for(run)
        out.append({
            "run": run.name, "model": run.config["model"], "loss": run.loss_label,
            "batch_size": run.config["batch_size"], "epochs": run.metrics["epochs_done"],
            "table1_row": table1_label(run, ref), "report_top1": ref.accuracy if ref else None,
            "best_top1": best["top1"], "final_top1": final["top1"],
            # A small model's few epochs against the report's 200-epoch B4/Swin-B: no difference to show.
            "diff_vs_report": (best["top1"] - ref.accuracy) if ref and not is_stand_in(run, ref) else None,
            "best_epoch": best["epoch"], "top5": best["top5"], "nll": best["nll"], "ece": best["ece"],
            "confidence": bins.mean_confidence, "ece_floor": bins.calibrated_ece(),
            "temperature": best["temperature"], "ece_ts": best["ece_ts"],
            "temperature_ece": best.get("temperature_ece"), "ece_ts_ece": best.get("ece_ts_ece"),
            "seed": run.config.get("seed"), "hours": sum(r["seconds"] for r in run.history) / 3600,
        })
    return out


# The comparison split in two, so each table fits a notebook's width.
ACCURACY_COLUMNS = ("run", "model", "loss", "batch_size", "seed", "epochs", "best_epoch", "table1_row",
                    "report_top1", "best_top1", "final_top1", "diff_vs_report", "top5", "hours")
CALIBRATION_COLUMNS = ("run", "loss", "best_top1", "confidence", "nll", "ece", "ece_floor", "temperature",
                       "ece_ts", "temperature_ece", "ece_ts_ece")


def accuracy_table(runs: list[Run]) -> list[dict]:
    return [{k: row[k] for k in ACCURACY_COLUMNS} for row in comparison_table(runs)]


def calibration_table(runs: list[Run]) -> list[dict]:
    return [{k: row[k] for k in CALIBRATION_COLUMNS} for row in comparison_table(runs)]


TEMPERATURE_NOTE = (
    "ECE in %, 15 equal-width bins, on the test split at the best-by-validation epoch. `confidence` "
    "is the mean top-1 probability there, before scaling: above `best_top1` the run is over-confident "
    "on average, below it under-confident. `ece_floor` is the ECE that a perfectly calibrated model "
    "with the same reliability bins would show on this many test images, in expectation: ECE is biased "
    "upwards by sampling noise (`Reliability.calibrated_ece`). An ECE within a few tenths of a point of "
    "it is what a calibrated model gives; one well above it is miscalibration. Both "
    "temperatures are fitted on the validation split, never on test: `temperature` minimises the "
    "validation NLL (Guo et al. 2017) and `ece_ts` is the test ECE after dividing the logits by it; "
    "`temperature_ece` is the grid value (0.1, 0.2, …, 10) with the lowest validation ECE, the "
    "protocol of Mukhoti et al. 2020's code, and `ece_ts_ece` the test ECE after it. Compare "
    "`ece_ts_ece` with the papers' ECE-after-scaling columns. The NLL fit searches T in 0.05–20 and "
    "the grid spans 0.1–10: a T at either end is the search's bound, not a fitted value.")


def table1_rows() -> list[dict]:
    return [{"model": MODEL_LABEL[r.model], "batch size": r.batch_size, "epochs": r.epochs,
             "upsampling": r.upsampling, "loss": r.loss, "lr": f"{r.lr:g}", "accuracy (%)": f"{100 * r.accuracy:.2f}"}
            for r in REPORT_TABLE1]


def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)\n"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(k, r[k]) for k in keys) + " |")
    return "\n".join(lines) + "\n"


# Keys whose values are fractions shown in percent, with 2 decimals (accuracy and ECE), in every
# table of the report: the per-run tables (_fmt) and the seed tables (_mean_sd).
PERCENT = frozenset({"top1", "report_top1", "best_top1", "final_top1", "top5", "confidence", "ece", "ece_floor",
                     "ece_ts", "ece_ts_ece"})


def _fmt(key: str, v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if key in PERCENT:
            return f"{100 * v:.2f}"
        if key == "diff_vs_report":
            return f"{100 * v:+.2f}"
        if key == "hours":
            return f"{v:.2f}"
        return f"{v:.3f}"
    return str(v)


def reliability_of(run: Run, which: str = "best", scaled: bool = False) -> Reliability:
    return Reliability.from_dict(run.metrics["reliability"][which]["after_ts" if scaled else "before"])


# ---------------------------------------------------------------------------------------------
# Figures 7 and 8, and reliability diagrams

def figure7(runs: list[Run]):
    """Test accuracy per epoch by loss, for the model with the most runs (report Figure 7): one
    colour per loss, seeds of one setting as their mean with a band (plots.seed_curves)."""
    from ..plots import seed_curves, sns_palette
    from .spread import seed_groups
    models = [r.config["model"] for r in runs]
    model = max(set(models), key=models.count)
    groups = seed_groups([r for r in runs if r.config["model"] == model])
    losses = list(dict.fromkeys(g.runs[0].loss_label for g in groups))
    colors = dict(zip(losses, sns_palette(len(losses))))
    curves, styles, used = {}, {}, {}
    for g in groups:
        first = g.runs[0]
        label = _unique(f"{first.loss_label} · bs {first.config['batch_size']}", curves)
        curves[label] = [r.history for r in g.runs]
        # a second setting of one loss (another batch size, say): same colour, another line style
        used[first.loss_label] = used.get(first.loss_label, -1) + 1
        styles[label] = (colors[first.loss_label], ("-", "--", ":", "-.")[used[first.loss_label] % 4])
    return seed_curves(curves, title=f"Test accuracy by loss — {MODEL_LABEL.get(model, model)}", styles=styles)


def _unique(label: str, taken) -> str:
    """`label`, or with a number appended where settings that differ elsewhere share it."""
    n, out = 2, label
    while out in taken:
        out, n = f"{label} ({n})", n + 1
    return out


def ece_figure(runs: list[Run]):
    """ECE before and after temperature scaling (both fits), per setting, mean over its seeds:
    the comparison the calibration papers make."""
    from ..plots import ece_before_after
    from .spread import seed_groups
    several_models = len({r.config["model"] for r in runs}) > 1
    groups = {}
    for g in seed_groups(runs):
        first = g.runs[0]
        label = f"{first.model_label} · " * several_models + f"{first.loss_label} · bs {first.config['batch_size']}"
        groups[_unique(label, groups)] = {"before": g.values("ece"), "after T (NLL fit)": g.values("ece_ts"),
                                          "after T (ECE grid)": g.values("ece_ts_ece")}
    return ece_before_after(groups, title="Test ECE before and after temperature scaling (T fitted on validation)")


def figure8(runs: list[Run]):
    """Test accuracy per epoch by model: each model's best run (report Figure 8)."""
    from ..plots import training_curves
    best = {}
    for r in runs:
        m = r.config["model"]
        if m not in best or r.metrics["best"]["val_top1"] > best[m].metrics["best"]["val_top1"]:
            best[m] = r
    return training_curves({f"{r.model_label} · {r.loss_label}": r.history for r in best.values()},
                           title="Test accuracy by model (best run of each)")


def reliability_figure(runs: list[Run], scaled: bool = False):
    """One reliability diagram per run, titled "loss · seed N"; `scaled`: after T of the NLL fit."""
    from ..plots import reliability_grid
    suffix = "\n(after T, NLL fit)" if scaled else ""
    labels = _distinct([f"{r.loss_label} · seed {r.config.get('seed')}" for r in runs], runs)
    return reliability_grid({f"{label}{suffix}": reliability_of(r, scaled=scaled) for label, r in zip(labels, runs)})


def _distinct(labels: list[str], runs: list[Run]) -> list[str]:
    """Labels as given where unique; a repeated one gets the run's folder name, so that no run
    silently replaces another in a figure's legend."""
    return [f"{label} · {run.name}" if labels.count(label) > 1 else label for label, run in zip(labels, runs)]


def _title_of(md: Path) -> str | None:
    """The title of an earlier report.md, so that writing the report again without --title keeps
    it (the shipped results/*/report.md carry theirs)."""
    try:
        first = md.read_text(encoding="utf-8").split("\n", 1)[0]
    except (OSError, UnicodeDecodeError):
        return None
    return (first[2:].strip() or None) if first.startswith("# ") else None


def write_report(root: str | Path, title: str | None = None, out: str | Path | None = None) -> dict[str, Path]:
    """report.md, report.csv and figure PNGs for the runs under `root`, written in `out` (default:
    `root`). Returns their paths. Without `title`, an earlier report.md's title is kept (out's, else
    root's: a shipped report made again elsewhere keeps its title)."""
    import matplotlib.pyplot as plt
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder; give the folder that holds the run folders, "
                         f"e.g. --runs runs or --runs results/cpu-reference")
    unreadable: list[str] = []
    runs = find_runs(root, unreadable)
    # Runs begun that have not finished an epoch (config.json, no metrics.json yet): said, not dropped unseen.
    unfinished = sorted(str(c.parent) for c in root.rglob("config.json") if not (c.parent / "metrics.json").exists())
    waiting = f"not finished an epoch yet (no metrics.json): {', '.join(unfinished)}" if unfinished else ""
    if not runs and unreadable:
        raise ValueError(f"no readable run under {root}: " + "; ".join(unreadable))
    if not runs:
        raise ValueError(f"no run under {root} has finished an epoch: {waiting}" if unfinished else
                         f"no run folders (with metrics.json) under {root}; train one first, e.g. "
                         f"python -m cifar_hw2 train --preset quick --out {root / 'demo'}")
    if unreadable:   # reported, not silently left out
        print("warning: left out of the report: " + "; ".join(unreadable), file=sys.stderr, flush=True)
    if unfinished:
        print(f"note: left out of the report, {waiting}", file=sys.stderr, flush=True)
    rows = comparison_table(runs)
    stand_ins = sum(is_stand_in(r, report_row_for(r)) for r in runs)
    out = Path(out) if out is not None else root
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:        # a file there or above it, no permission
        raise ValueError(f"--out {out} cannot be a folder for report.md, report.csv and the figures "
                         f"({type(e).__name__}: {e.strerror or e})") from None
    paths = {"csv": out / "report.csv", "md": out / "report.md"}
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(paths["csv"], buf.getvalue())

    # Figure 8 compares models: with one model it would be a single line, so it is left out, and
    # an earlier report's fig8 with it (it would show runs that this report does not).
    models = sorted({r.config["model"] for r in runs})
    fig8 = {"fig8": ("fig8_accuracy_by_model.png", figure8(runs))} if len(models) > 1 else {}
    figures = {"fig7": ("fig7_accuracy_by_loss.png", figure7(runs)), **fig8,
               "reliability": ("reliability.png", reliability_figure(runs)),
               "reliability_ts": ("reliability_after_ts.png", reliability_figure(runs, scaled=True)),
               "ece": ("ece_before_after_ts.png", ece_figure(runs))}
    for key, (name, fig) in figures.items():
        fig.savefig(out / name)
        plt.close(fig)
        paths[key] = out / name

    title = title or _title_of(paths["md"]) or _title_of(root / "report.md") or f"Runs under {root}"
    md = [f"# {title}\n", "## Accuracy\n",
          "Accuracy in %. `best_top1` is the test accuracy at the epoch with the best "
          "validation accuracy; `final_top1` at the last epoch; `report_top1` is the homework's "
          "Table 1 (its epoch was chosen on the test set).\n",
          *([f"Left out (cannot be read): {'; '.join(unreadable)}.\n"] if unreadable else []),
          *([f"Left out, {waiting}.\n"] if unfinished else []),
          *([f"{stand_ins} of these runs are **quick stand-ins** (`table1_row` ends in \"quick stand-in\"): "
             "they trained the small CNN for a few epochs on a subset (CIFAR_HW2_QUICK=1) in place "
             "of the Table 1 row named. `report_top1` beside them is that row's number from the "
             "report, shown to say which row they stand for; it is not comparable, so `diff_vs_report` "
             "is left empty.\n"] if stand_ins else []),
          markdown_table(accuracy_table(runs)),
          "\n## Calibration\n", TEMPERATURE_NOTE + "\n", markdown_table(calibration_table(runs)),
          *seed_sections(runs),
          "\n![Figure 7](fig7_accuracy_by_loss.png)\n\n"
          + ("![Figure 8](fig8_accuracy_by_model.png)\n" if fig8 else
             f"Figure 8 (test accuracy by model) is left out: every run here is {models[0]}.\n"),
          "\n## Reliability (test, best epoch)\n\n![ECE before and after T](ece_before_after_ts.png)\n\n"
          "![before](reliability.png)\n\n![after](reliability_after_ts.png)\n"]
    atomic_write_text(paths["md"], "\n".join(md))
    if not fig8:          # only now: until report.md is replaced, the earlier one links it
        (out / "fig8_accuracy_by_model.png").unlink(missing_ok=True)
    return paths


# ---------------------------------------------------------------------------------------------
# Seeds: mean ± sd, and which differences exceed the spread (spread.py)

def _mean_sd(key: str, ms) -> str:
    mean, sd = ms
    if mean is None:
        return "–"
    scale, digits = (100, 2) if key in PERCENT else (1, 3)
    return f"{scale * mean:.{digits}f}" + (f" ± {scale * sd:.{digits}f}" if sd is not None else "")


# The seed summary in two parts, for a notebook: one table of all METRICS is ~1,090 px wide.
SEED_SPLIT = (("top1", "top5", "nll"), ("ece", "ece_ts", "ece_ts_ece", "temperature", "temperature_ece"))


def seed_sections(runs: list[Run], split: bool = False) -> list[str]:
    """Markdown for settings run with several seeds; nothing when every setting has one. With
    `split`, the summary is two narrower tables (accuracy, calibration), as notebook 05 shows it."""
    from .spread import METRICS, difference_rows, seed_groups, summary_rows
    groups = seed_groups(runs)
    repeats = [f"{shown_path(b.path)} repeats {shown_path(a.path)} (same setting, seed {a.config.get('seed', 0)})"
               for g in groups for a, b in g.repeats]
    note = ["Counted once: " + "; ".join(repeats) + ".\n"] if repeats else []
    if all(len(g.runs) < 2 for g in groups):
        return ["\n".join(note)] if note else []
    summary = [{"setting": row["setting"], "n": row["n"], "seeds": row["seeds"],
                **{k: _mean_sd(k, row[k]) for k in METRICS}} for row in summary_rows(groups)]
    parts = SEED_SPLIT if split else (METRICS,)
    lines = ["\n## Seeds: mean ± sd\n",
             "Best-by-validation epoch; mean ± sample sd over the seeds (accuracy and ECE in %).\n", *note,
             "\n".join(markdown_table([{k: row[k] for k in ("setting", "n", "seeds", *keys)} for row in summary])
                       for keys in parts)]
    diffs = difference_rows(groups)
    if diffs:
        lines += ["## Differences between settings, against the seed spread\n",
                  "Δ = mean(A) − mean(B), in points. It *exceeds the spread* when |Δ| > 2·SE, "
                  "SE = √(s_A²/n_A + s_B²/n_B). With 3 seeds this is a rough screen, not a test.\n",
                  markdown_table([{"A": d["a"], "B": d["b"], "metric": d["metric"], "Δ": f"{100 * d['delta']:+.2f}",
                                   "2·SE": f"{100 * d['two_se']:.2f}",
                                   "exceeds the spread?": "yes" if d["exceeds_spread"] else "no"} for d in diffs])]
    return ["\n".join(lines)]
