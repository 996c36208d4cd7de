"""One run folder read back for the report: its config, history and metrics, checked as untrusted
files (a run folder may come from anywhere). A file that is missing, garbled or of the wrong shape
is a ValueError naming it; report.find_runs leaves that run out and says why.

    run = load_run("runs/b4-flsd53")             Run(path, config, history, metrics, grid)
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from .reference import MODEL_LABEL


@dataclass
class Run:
    path: Path
    config: dict       # the TrainConfig fields
    history: list[dict]
    metrics: dict
    grid: dict | None = None   # grid.json, when the grid made this folder: the Table 1 row it stands for

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def loss_label(self) -> str:
        loss = self.config["loss"]
        if loss == "focal":
            g = self.config.get("gamma", 2.0)
            return f"FL γ={g:g}" + (" (= CE, homework 'FL')" if g == 0 else "")
        return {"ce": "CE", "flsd53": "FLSD-53", "flsd53_homework": "FLSD-53 (homework rule)",
                "mc": "MC", "mc_homework": "MC (homework, 219 groups)",
                "mc_homework_scaled": "MC (homework's 219 groups, at this width)"}.get(loss, loss)

    @property
    def model_label(self) -> str:
        return MODEL_LABEL.get(self.config["model"], self.config["model"])

    @property
    def label(self) -> str:
        return f"{self.model_label} · {self.loss_label} · bs {self.config['batch_size']}"


def load_run(folder: str | Path) -> Run:
    folder = Path(folder)

    def read(name: str, parse):
        try:
            return parse(folder / name)
        except FileNotFoundError:
            raise ValueError(f"{folder} is not a complete run folder: {name} is missing") from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{folder / name} is garbled ({type(e).__name__}: {e})") from None

    def history_rows(path):
        with open(path) as f:
            return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]

    metrics = read("metrics.json", lambda p: json.loads(p.read_text()))
    config = read("config.json", lambda p: json.loads(p.read_text())["config"])
    history = read("history.csv", history_rows)
    if not (isinstance(metrics, dict) and isinstance(metrics.get("best"), dict) and isinstance(metrics.get("final"), dict)):
        raise ValueError(f"{folder / 'metrics.json'} is garbled (no best and final metrics)")
    shown = [metrics["best"].get(k) for k in ("epoch", "top1", "top5", "nll", "ece", "temperature", "ece_ts",
                                              "val_top1")] + [metrics["final"].get("top1"), metrics.get("epochs_done")]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in shown):
        raise ValueError(f"{folder / 'metrics.json'} is garbled (a metric of its best or final epoch, or its "
                         f"epochs_done, is missing or not a number)")
    if not isinstance(config, dict):
        raise ValueError(f"{folder / 'config.json'} is garbled (its config is not a dictionary)")
    odd = [k for k, kind in (("model", str), ("loss", str), ("batch_size", int), ("seed", (int, type(None))))
           if not isinstance(config.get(k, 0 if k == "seed" else None), kind)]
    if odd or any(not isinstance(row.get(k), float) or not math.isfinite(row[k])
                  for row in history for k in ("epoch", "seconds", "test_top1")):
        raise ValueError(f"{folder} is garbled: " + (f"config.json's {', '.join(odd)} is missing or of the wrong "
                         f"kind" if odd else "history.csv's epoch, seconds or test_top1 is not a finite number"))
    try:                    # grid.json: written by the grid (grid.ROW_FILE); optional, not trusted
        grid = json.loads((folder / "grid.json").read_text())
    except (OSError, ValueError):
        grid = None
    ok = isinstance(grid, dict) and isinstance(grid.get("table1", ""), (str, type(None)))
    return Run(folder, config, history, metrics, grid if ok else None)
