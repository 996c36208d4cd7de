"""The grid's rows: the report's Table 1 as the homework ran it, plus the rows its code could not
run (the papers' focal loss and FLSD-53, and MC on Swin-B), and `--only`'s selection of them.
Each row says how it runs: notebook 04's papermill parameters, or `train`'s flags (torchrun rows)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..training.config import QUICK_STAND_IN
from .reference import HOMEWORK_LOSS, MODEL_LABEL, REPORT_TABLE1, TABLE1_BY_KEY, find_table1_row

SHORT = {"efficientnet_b4": "b4", "swin_b": "swin", "small_cnn": "cnn"}
PRESET = {"efficientnet_b4": "paper-b4", "swin_b": "paper-swin"}


@dataclass(frozen=True)
class GridRow:
    key: str
    model: str
    batch_size: int
    epochs: int
    lr: float
    loss: str                          # registry name
    gamma: float | None = None
    source: str = "table1"             # table1: as the homework ran it; extra: rows it could not run
    report_label: str | None = None    # CE | MC | FL | FLSD53 (table1 rows)
    # ReportRow.key of the Table 1 row whose accuracy the report shows beside this row: a table1
    # row's own; for an extra row, the row with its model, batch and label (None: there is none).
    table1: str | None = None

    def loss_run(self, quick: bool) -> str:
        """The loss this row trains: in quick mode a loss that cannot run on small_cnn is replaced."""
        return QUICK_STAND_IN[self.loss][0] if quick and self.loss in QUICK_STAND_IN else self.loss

    def stands_for(self, quick: bool) -> str:
        """What the row stands for, in words: its Table 1 row (and, in quick mode, that it is a stand-in)."""
        ref = TABLE1_BY_KEY.get(self.table1) if self.table1 else None
        what = (f"Table 1 {MODEL_LABEL[ref.model]} · {ref.loss} · bs {ref.batch_size}, "
                f"{100 * ref.accuracy:.2f} %") if ref else "no Table 1 row"
        if not quick:
            return what
        note = f"quick stand-in (small CNN) for {what}" if ref else f"quick stand-in; {what}"
        if self.loss in QUICK_STAND_IN:
            note += f"; loss {self.loss_run(True)}: {QUICK_STAND_IN[self.loss][1]}"
        return note

    def parameters(self, out: Path, data: str | None) -> dict:
        """papermill parameters of notebook 04."""
        p = {"preset": PRESET[self.model], "model": self.model, "loss": self.loss, "epochs": self.epochs,
             "batch_size": self.batch_size, "lr": self.lr, "out": str(out), "resume": True}
        if self.gamma is not None:
            p["gamma"] = self.gamma
        if data:
            p["data"] = data
        return p

    def train_args(self, out: Path, data: str | None) -> list[str]:
        """The same run as `python -m cifar_hw2 train` flags (for torchrun rows)."""
        args = ["--preset", PRESET[self.model], "--model", self.model, "--loss", self.loss,
                "--epochs", str(self.epochs), "--batch-size", str(self.batch_size), "--lr", str(self.lr),
                "--out", str(out), "--resume", "--progress", "epoch"]
        if self.gamma is not None:
            args += ["--gamma", str(self.gamma)]
        if data:
            args += ["--data", data]
        return args


def grid_rows() -> list[GridRow]:
    rows = []
    for r in REPORT_TABLE1:
        loss, extra = HOMEWORK_LOSS[r.loss]
        rows.append(GridRow(f"{SHORT[r.model]}-bs{r.batch_size}-{r.loss.lower()}-homework", r.model, r.batch_size,
                            r.epochs, r.lr, loss, extra.get("gamma"), "table1", r.loss, r.key))
    # What the homework meant but did not run: the papers' definitions, and MC on Swin-B.
    for model, lr in (("efficientnet_b4", 1e-3), ("swin_b", 3e-5)):
        s = SHORT[model]
        for key, loss, gamma in ((f"{s}-bs64-focal-gamma2", "focal", 2.0), (f"{s}-bs64-flsd53", "flsd53", None),
                                 (f"{s}-bs64-mc", "mc", None)):
            ref = find_table1_row(model, loss, 64)
            rows.append(GridRow(key, model, 64, 200, lr, loss, gamma, "extra", None, ref.key if ref else None))
    return rows


def select(rows: list[GridRow], only: list[str]) -> list[GridRow]:
    """Keep rows that match `key=value` conditions (values compared as text): conditions on one key
    are alternatives (`key=a key=b`: both rows), conditions on different keys must all hold."""
    fields = set(GridRow.__dataclass_fields__)
    wanted: dict[str, set[str]] = {}
    for cond in only:
        if "=" not in cond:
            raise ValueError(f"--only takes key=value, got {cond!r}; keys: {', '.join(sorted(fields))}")
        k, v = cond.split("=", 1)
        if k not in fields:
            raise ValueError(f"--only: unknown key {k!r}; valid keys: {', '.join(sorted(fields))}")
        wanted.setdefault(k, set()).add(v)
    for k, values in wanted.items():
        unknown = values - {str(getattr(r, k)) for r in rows}
        if unknown:
            raise ValueError(f"no grid row has {k}={', '.join(sorted(unknown))}; "
                             f"its values: {', '.join(sorted({str(getattr(r, k)) for r in rows}))}")
    kept = [r for r in rows if all(str(getattr(r, k)) in values for k, values in wanted.items())]
    if not kept:
        said = " and ".join(f"{k}={'|'.join(sorted(v))}" for k, v in wanted.items())
        raise ValueError(f"no grid row matches {said} (different keys must all match)")
    return kept
