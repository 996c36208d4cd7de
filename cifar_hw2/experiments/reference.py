"""The homework report's Table 1 as data, which of our losses answers to which of its labels, and
Mukhoti et al.'s CIFAR-100 calibration numbers that the GPU reference is set beside.

Source: the homework's report (its Table 1; the report is not part of this repository) and what its
code really ran (the README's table). Accuracies and ECE are fractions, like everything the library
returns.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReportRow:
    model: str          # registry name in cifar_hw2.models
    batch_size: int
    epochs: int
    upsampling: int     # the side the 32 px input was upsampled to
    loss: str           # the label in the report: CE | MC | FL | FLSD53
    lr: float
    accuracy: float     # reported test accuracy, best epoch chosen on the test set

    @property
    def key(self) -> str:
        """The row's identity: a grid row records it, and the report finds the row by it."""
        return f"{self.model}-{self.loss.lower()}-bs{self.batch_size}"


REPORT_TABLE1 = (
    ReportRow("efficientnet_b4", 32, 200, 224, "CE", 1e-3, 0.8857),
    ReportRow("efficientnet_b4", 64, 200, 224, "CE", 1e-3, 0.8934),
    ReportRow("efficientnet_b4", 32, 200, 224, "MC", 1e-3, 0.8837),
    ReportRow("efficientnet_b4", 64, 200, 224, "MC", 1e-3, 0.8873),
    ReportRow("efficientnet_b4", 32, 200, 224, "FL", 1e-3, 0.8824),
    ReportRow("efficientnet_b4", 64, 200, 224, "FL", 1e-3, 0.8935),
    ReportRow("efficientnet_b4", 32, 200, 224, "FLSD53", 1e-3, 0.8890),
    ReportRow("efficientnet_b4", 64, 200, 224, "FLSD53", 1e-3, 0.8952),
    ReportRow("swin_b", 64, 200, 384, "FL", 3e-5, 0.9356),
    ReportRow("swin_b", 64, 200, 384, "FLSD53", 3e-5, 0.9360),
)

# What each report label ran in the homework's code, as (registry loss, extra config).
# Its "FL" was a focal loss with γ = 0: cross-entropy.
HOMEWORK_LOSS = {
    "CE": ("ce", {}),
    "MC": ("mc_homework", {}),
    "FL": ("focal", {"gamma": 0.0}),
    "FLSD53": ("flsd53_homework", {}),
}

MODEL_LABEL = {"efficientnet_b4": "EfficientNet-B4", "swin_b": "Swin-B", "small_cnn": "small CNN", "resnet9": "ResNet-9"}

# Each of our losses answers to one label of the report; the run's own label says which variant ran.
REPORT_LABEL = {"ce": "CE", "focal": "FL", "flsd53": "FLSD53", "flsd53_homework": "FLSD53",
                "mc": "MC", "mc_homework": "MC", "mc_homework_scaled": "MC"}


TABLE1_BY_KEY = {row.key: row for row in REPORT_TABLE1}


def find_table1_row(model: str, loss: str, batch_size: int) -> ReportRow | None:
    """The Table 1 row with this model, batch size and our loss's label, if the report has one."""
    label = REPORT_LABEL.get(loss)
    for row in REPORT_TABLE1:
        if (row.model, row.loss, row.batch_size) == (model, label, batch_size):
            return row
    return None


@dataclass(frozen=True)
class PaperCalibration:
    """One network of Mukhoti et al. 2020 on CIFAR-100: test ECE (15 bins) before and after
    temperature scaling, where quoted (their protocol: T on a grid, by validation ECE)."""
    model: str
    loss: str                   # CE | FLSD-53
    ece: float                  # fraction
    ece_ts: float | None = None
    temperature: float | None = None


# Source: Mukhoti et al. 2020, "Calibrating Deep Neural Networks using Focal Loss", their CIFAR-100
# results (networks trained from scratch for 350 epochs). The after-scaling values are quoted here for
# ResNet-50 and WRN-26-10 only, and T for ResNet-50 only.
MUKHOTI_CIFAR100 = (
    PaperCalibration("ResNet-50", "CE", 0.1752, 0.0342, 2.1),
    PaperCalibration("ResNet-50", "FLSD-53", 0.0450, 0.0200, 1.1),
    PaperCalibration("ResNet-110", "CE", 0.1905),
    PaperCalibration("ResNet-110", "FLSD-53", 0.0856),
    PaperCalibration("WRN-26-10", "CE", 0.1533, 0.0288),
    PaperCalibration("WRN-26-10", "FLSD-53", 0.0303, 0.0164),
    PaperCalibration("DenseNet-121", "CE", 0.2098),
    PaperCalibration("DenseNet-121", "FLSD-53", 0.0373),
)


def paper_calibration_rows() -> list[dict]:
    """MUKHOTI_CIFAR100 as table rows, in percent ("–" where this table does not copy the paper's value)."""
    def pct(v):
        return "–" if v is None else f"{100 * v:.2f}"
    return [{"network (Mukhoti et al.)": r.model, "loss": r.loss, "ECE (%)": pct(r.ece),
             "ECE after T (%)": pct(r.ece_ts), "T": "–" if r.temperature is None else f"{r.temperature:g}"}
            for r in MUKHOTI_CIFAR100]
