"""The homework report's Table 1 and the papers' reference numbers, as data.

Source: ../shared/reference/ (the report's text and what its code really ran). Accuracies and ECE
are fractions, like everything the library returns.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


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
        return f"{self.model}-{self.loss.lower()}-bs{self.batch_size}"

    def to_dict(self) -> dict:
        return {**asdict(self), "key": self.key}


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

# Mukhoti et al. 2020, CIFAR-100, ECE (15 bins) before / after temperature scaling, and T.
PAPER_ECE = {
    ("ResNet-50", "CE"): (0.1752, 0.0342, 2.1),
    ("ResNet-50", "FLSD-53"): (0.0450, 0.0200, 1.1),
    ("WRN-26-10", "CE"): (0.1533, 0.0288, None),
    ("WRN-26-10", "FLSD-53"): (0.0303, 0.0164, None),
}

# Fine-tuning results on CIFAR-100 for context (top-1).
FINE_TUNING_CEILINGS = {"ViT-L/16 (ImageNet-21k)": 0.9325, "BiT-L": 0.9351, "EfficientNet-B7": 0.917}
