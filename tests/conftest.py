import pickle
from pathlib import Path

import numpy as np
import pytest

from cifar_hw2.data import data_root

# The real CIFAR-100, where the package looks for it ($CIFAR_HW2_DATA, else ~/.cache/cifar_hw2/data).
# Tests never download it: without it, the root conftest skips these tests (and the notebooks that
# read data) with one line that says how to get it, and .ci/run fails on any such skip.
REAL_DATA = str(data_root())
needs_real_data = pytest.mark.needs_real_data


def write_archive(root: Path, train_per_class: int = 12, test_per_class: int = 4, seed: int = 0) -> Path:
    """Write a small, balanced CIFAR-100 archive in the official layout (Python-2-style pickles)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for split, k in (("train", train_per_class), ("test", test_per_class)):
        fine = np.repeat(np.arange(100), k)
        rng.shuffle(fine)
        # Class-dependent colour, so a model can learn something from these in a test.
        base = (fine[:, None] * 37 % 256).astype(np.int64)
        data = np.clip(base + rng.integers(-40, 40, (len(fine), 3072)), 0, 255).astype(np.uint8)
        entry = {"data": data, "fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist(),
                 "filenames": [f"img_{i}.png" for i in range(len(fine))], "batch_label": split}
        with open(folder / split, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class_{i}" for i in range(100)],
                     "coarse_label_names": [f"super_{i}" for i in range(20)]}, f, protocol=2)
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return write_archive(tmp_path_factory.mktemp("cifar"))
