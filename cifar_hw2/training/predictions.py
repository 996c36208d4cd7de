"""predictions.npz: a run's validation and test logits with their labels, beside its metrics.

The trainer writes it whenever validation accuracy improves, from the logits it has just evaluated,
so it holds the best epoch's predictions (the epoch metrics.json calls "best") and reproduces that
entry's top-1, NLL and ECE exactly. `evaluate` writes one for the checkpoint and split it evaluated.
The report and notebook 05 read these files instead of running a model again (errors.py).

Contents (numpy arrays; no pickled objects, so loading one runs nothing from the file):
    test_logits [N, 100] float32 and test_labels [N] int64, the same with val_ for the validation
    split when present; classes [100] and coarse_classes [20] (names), coarse_of [100] (each fine
    class's superclass); epoch (0-d int); and, so that a gallery needs no dataset, the images of the
    GALLERY most confident test mistakes: mistake_images [k, 3, 32, 32] uint8 and mistake_at [k]
    (their positions in the test split).
The test logits of a 10,000-image split are 4 MB of float32; compressed, the file is about 5 MB.
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import most_confident_mistakes
from .checkpoint import atomic_write_bytes

FILENAME = "predictions.npz"
GALLERY = 24


class PredictionsError(ValueError):
    """A predictions file that is missing, damaged, or not one of ours."""


@dataclass
class Predictions:
    test_logits: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]
    coarse_classes: list[str]
    coarse_of: torch.Tensor
    epoch: int
    mistake_images: torch.Tensor
    mistake_at: torch.Tensor
    val_logits: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None


def coarse_of_classes(labels: torch.Tensor, coarse_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[K] the superclass of each fine class, read off a split's (fine, coarse) label pairs."""
    out = torch.full((num_classes,), -1, dtype=torch.int64)
    out[labels.long()] = coarse_labels.long()
    return out


def write_predictions(path: Path, test_logits: torch.Tensor, test_split, epoch: int,
                      val_logits: torch.Tensor | None = None, val_split=None) -> None:
    """Write predictions.npz atomically. `*_split` are data.CifarSplit (labels, names, superclasses);
    the logits are saved as float32, what the fp32 evaluation computes."""
    test_logits = test_logits.float().cpu()
    at = torch.tensor([i for i, _, _ in most_confident_mistakes(test_logits, test_split.labels, GALLERY)],
                      dtype=torch.int64)
    arrays = {"test_logits": test_logits.numpy(), "test_labels": test_split.labels.numpy(),
              "mistake_images": test_split.images[at].numpy(), "mistake_at": at.numpy(),
              "classes": np.array(test_split.classes),
              "coarse_classes": np.array(test_split.coarse_classes),
              "coarse_of": coarse_of_classes(test_split.labels, test_split.coarse_labels,
                                             len(test_split.classes)).numpy(),
              "epoch": np.array(epoch)}
    if val_logits is not None:
        arrays.update(val_logits=val_logits.float().cpu().numpy(), val_labels=val_split.labels.numpy())
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_predictions(path: Path) -> Predictions:
    """Read a predictions file; numpy only, allow_pickle=False: nothing in the file runs."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            a = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise PredictionsError(f"{path}: no predictions file (runs made before predictions were saved have none)")
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise PredictionsError(f"{path}: not a readable predictions file ({e})") from None
    need = {"test_logits", "test_labels", "classes", "coarse_classes", "coarse_of", "epoch", "mistake_images",
            "mistake_at"}
    if not need <= set(a):
        raise PredictionsError(f"{path}: missing {', '.join(sorted(need - set(a)))}")
    t = lambda k: torch.from_numpy(a[k]) if k in a else None   # noqa: E731
    return Predictions(t("test_logits"), t("test_labels"), [str(c) for c in a["classes"]],
                       [str(c) for c in a["coarse_classes"]], t("coarse_of"), int(a["epoch"]),
                       t("mistake_images"), t("mistake_at"), t("val_logits"), t("val_labels"))
