"""CIFAR-100 as uint8 tensors: find or download the official archive, check it, split it.

The official archive (https://www.cs.toronto.edu/~kriz/cifar.html) unpacks to
`cifar-100-python/{train,test,meta}`: Python-2 pickles whose `data` is uint8 [N, 3072]
(1024 red, 1024 green, 1024 blue values per row). We read them straight into tensors
[N, 3, 32, 32] and keep the whole split in memory (150 MB for train), as airbench does: no PIL,
no per-image file access, and the same tensors can later move to the GPU.

We check the md5 of the *archive* we download, never of extracted files: copies rebuilt
elsewhere (a course server, `../shared/data/cifar100/to_official.py`) hold the same pixels and
labels in other bytes. Extracted files are checked by content instead (shapes, ranges, counts).

The pickles are untrusted (a --data folder, $CIFAR_HW2_DATA, a shared cache): they are read with a
restricted unpickler that builds only dicts, lists, strings, bytes, numbers and numpy arrays and
refuses any other global before anything runs (docs/security.md).
"""
from __future__ import annotations

import hashlib
import os
import pickle
import shlex
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
DOWNLOAD_SIZE = "169 MB"      # the archive at URL: 169,001,437 bytes
ARCHIVE_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"  # published with the archive
FOLDER = "cifar-100-python"
ENV_VAR = "CIFAR_HW2_DATA"
SPLIT_SIZES = {"train": 50_000, "test": 10_000}
NUM_CLASSES, NUM_COARSE = 100, 20


class DataError(RuntimeError):
    """The dataset is missing, cannot be downloaded, or is not CIFAR-100."""


@dataclass
class CifarSplit:
    """One split held in memory. images: uint8 [N, 3, 32, 32]; labels: int64 [N]."""

    images: torch.Tensor
    labels: torch.Tensor          # fine labels 0..99
    coarse_labels: torch.Tensor   # superclasses 0..19
    classes: list[str]            # fine label names, index = label
    coarse_classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor) -> "CifarSplit":
        return CifarSplit(self.images[indices], self.labels[indices], self.coarse_labels[indices],
                          self.classes, self.coarse_classes)


def default_data_root() -> Path:
    """The one default folder, whatever the working folder: ~/.cache/cifar_hw2/data (or
    $XDG_CACHE_HOME/cifar_hw2/data). A relative ./data would give a notebook kernel (working folder
    notebooks/) and the CLI (the repository root) two 169 MB copies."""
    cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(cache).expanduser() / "cifar_hw2" / "data"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder that holds (or will hold) `cifar-100-python/`: argument, else $CIFAR_HW2_DATA,
    else `default_data_root()`."""
    return Path(root or os.environ.get(ENV_VAR) or default_data_root()).expanduser()


def _holds_the_files(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ("train", "test", "meta"))


def is_present(root: str | os.PathLike | None = None) -> bool:
    """Whether the three files of `cifar-100-python/` are there (without reading or downloading)."""
    return _holds_the_files(data_root(root) / FOLDER)


def where_to_point(root: str | os.PathLike | None = None) -> str:
    """How to name another data folder, for the way this one was chosen: only what applies
    (an explicit folder overrides $CIFAR_HW2_DATA, so suggesting the variable would mislead)."""
    if root:
        return f"give a folder that holds {FOLDER}/ instead (--data DIR, or data= in a notebook)"
    if os.environ.get(ENV_VAR):
        return f"point {ENV_VAR} (now {os.environ[ENV_VAR]}) at a folder that holds {FOLDER}/"
    return f"pass --data DIR (data= in a notebook) or set {ENV_VAR} to a folder that holds {FOLDER}/"


def load_cifar100(split: str = "train", root: str | os.PathLike | None = None,
                  download: bool = True) -> CifarSplit:
    """Load the train or test split of CIFAR-100, downloading the archive on first use."""
    if split not in SPLIT_SIZES:
        raise ValueError(f"unknown split {split!r}; valid splits: {sorted(SPLIT_SIZES)}")
    folder = data_root(root) / FOLDER
    if not (folder / split).is_file() or not (folder / "meta").is_file():
        misplaced = wrong_folder(folder.parent)
        if misplaced:
            raise DataError(misplaced)
        if not download:
            raise DataError(f"CIFAR-100 not found in {folder} (download=False); {where_to_point(root)}.")
        download_cifar100(folder.parent, hint=where_to_point(root))
    raw = _read_pickle(folder / split)
    meta = _read_pickle(folder / "meta")
    return _to_split(raw, meta, split, folder)


def wrong_folder(root: Path) -> str | None:
    """The ways to name the data from the wrong place, said before anything downloads: `root` is a
    file, cifar-100-python/ itself, the folder above the right one, or the archive was extracted
    into cifar-100-python/."""
    if root.exists() and not root.is_dir():
        if root.name.endswith((".tar.gz", ".tgz", ".tar")):
            return (f"{root} is an archive; --data (data= in a notebook, or {ENV_VAR}) names a folder. Extract "
                    f"it first, e.g. tar xf {shlex.quote(str(root))} -C {shlex.quote(str(root.parent))} (it holds "
                    f"{FOLDER}/), then give --data {shlex.quote(str(root.parent))}.")
        return f"{root} is a file; --data (data= in a notebook, or {ENV_VAR}) names the folder that holds {FOLDER}/."
    if _holds_the_files(root):
        return (f"{root} is the {FOLDER}/ folder itself; give the folder that holds it: "
                f"--data {root.parent} (data= in a notebook, or {ENV_VAR}).")
    if _holds_the_files(root / FOLDER / FOLDER):
        return (f"{root / FOLDER} holds another {FOLDER}/ (the archive was extracted into it); "
                f"move {root / FOLDER / FOLDER} up one level, or give --data {root / FOLDER}.")
    try:   # an unreadable folder on the way is no reason to stop here: the caller says what is missing
        below = sorted(p for p in root.iterdir() if p.is_dir() and _holds_the_files(p / FOLDER)) if root.is_dir() else []
    except OSError:
        below = []
    if below:
        return (f"{root} holds no {FOLDER}/, but {below[0]} does: give --data {below[0]} "
                f"(data= in a notebook, or {ENV_VAR}).")
    return None


def download_cifar100(root: Path, hint: str | None = None) -> Path:
    """Fetch the official archive into `root`, check its md5, extract `cifar-100-python/`. A `root`
    other than the default folder that does not exist yet (a mistyped --data?) is said so in the
    download line.

    Nothing is left half-written: the archive goes to a temp file and is extracted into a temp
    folder that is renamed into place only when complete.
    """
    root = Path(root)
    folder = root / FOLDER
    hint = (f"Looked in {folder}. Download {URL} yourself and extract it into {root} (the archive "
            f"holds {FOLDER}/): mkdir -p {shlex.quote(str(root))} && tar xzf cifar-100-python.tar.gz -C "
            f"{shlex.quote(str(root))}; or {hint or where_to_point(root)}.")
    made = [p for p in (root, *root.parents) if not p.exists()]   # the folders this call creates
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
            archive = Path(tmp) / "cifar-100-python.tar.gz"
            new = " (a new folder: a typo? Ctrl-C stops)" if made and root != default_data_root() else ""
            print(f"Downloading CIFAR-100 ({DOWNLOAD_SIZE}) from {URL} into {root}{new} ...", flush=True)
            with urllib.request.urlopen(URL, timeout=30) as response, open(archive, "wb") as f:
                shutil.copyfileobj(response, f)
            md5 = hashlib.md5(archive.read_bytes()).hexdigest()
            if md5 != ARCHIVE_MD5:
                raise DataError(f"downloaded archive has md5 {md5}, expected {ARCHIVE_MD5}. {hint}")
            with tarfile.open(archive) as tar:
                # The "data" filter refuses absolute paths and links out of the folder (PEP 706).
                safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(tmp, **safe)
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(Path(tmp) / FOLDER, folder)
    except (OSError, tarfile.TarError, DataError) as e:  # URLError is an OSError; offline lands here
        for p in made:                  # leave no empty folder behind, parents included
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        if isinstance(e, DataError):
            raise
        raise DataError(f"CIFAR-100 is not available and could not be downloaded "
                        f"({type(e).__name__}: {e}). {hint}") from None
    return folder


def _start_over(folder: Path) -> str:
    """The way out of a damaged or foreign cifar-100-python/ folder, for every error about one."""
    return f"Delete {folder} to download it again, or use another folder that holds a good copy."


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """bytes as Python 3 pickles them at protocol 2 (`_codecs.encode(text, "latin1")`); no other codec."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode with {type(text).__name__}, {encoding!r}")
    return text.encode("latin1")


# The globals a CIFAR-100 pickle names, and nothing else. numpy pickles an array as
# _reconstruct(ndarray, ...) + dtype + ndarray.__setstate__; `_reconstruct` is taken from numpy's own
# pickling (np.ndarray.__reduce__), not imported from its private module, and both of its spellings
# are accepted: numpy.core.multiarray (the official archive, numpy 1) and numpy._core.multiarray
# (numpy 2, e.g. to_official.py's files). _codecs.encode is how Python 3 writes bytes at protocol 2.
_RECONSTRUCT = np.zeros(0).__reduce__()[0]
ALLOWED_GLOBALS = {("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
                   ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
                   ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                   ("_codecs", "encode"): _latin1_encode}


class _Refused(pickle.UnpicklingError):
    """The pickle names a global a CIFAR-100 file never needs (the name in args[0])."""


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that resolves only ALLOWED_GLOBALS (the pickle docs' "Restricting Globals"):
    a pickle's code runs only through the callables it resolves, so nothing else can run."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise _Refused(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise _Refused(f"a persistent id ({type(pid).__name__})")


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="latin1").load()  # Python-2 str keys come back as str
    except FileNotFoundError:
        raise DataError(f"{path} is missing: the {FOLDER}/ folder is incomplete. "
                        f"{_start_over(path.parent)}") from None
    except _Refused as e:
        raise DataError(f"{path} is refused: it asks to load {e.args[0]}, which a CIFAR-100 pickle never "
                        f"holds (only dicts, lists, strings, numbers and numpy arrays); nothing in it was "
                        f"run. {_start_over(path.parent)}") from None
    except Exception as e:  # truncated or foreign files raise many pickle/EOF error types
        raise DataError(f"{path} is truncated or not a CIFAR-100 pickle ({type(e).__name__}: {e}). "
                        f"{_start_over(path.parent)}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} does not hold a CIFAR-100 dictionary (got {type(obj).__name__}).")
    # Pickles written from Python 3 bytes (not Python-2 str) load with bytes keys and names.
    text = lambda v: v.decode("latin1") if isinstance(v, bytes) else v
    names = ("fine_label_names", "coarse_label_names")
    out = {}
    for k, v in obj.items():
        k = text(k)
        if k in names:
            if not isinstance(v, (list, tuple)):
                raise DataError(f"{path}: {k} is a {type(v).__name__}, expected a list of names. "
                                f"{_start_over(path.parent)}")
            v = [text(x) for x in v]
        out[k] = v
    return out


def _to_split(raw: dict, meta: dict, split: str, folder: Path) -> CifarSplit:
    def bad(why: str) -> DataError:
        return DataError(f"{folder / split} is not the CIFAR-100 {split} split: {why}. "
                         f"{_start_over(folder)}")

    for key in ("data", "fine_labels", "coarse_labels"):
        if key not in raw:
            raise bad(f"key {key!r} is missing")
    if not isinstance(raw["data"], np.ndarray):
        raise bad(f"data is a {type(raw['data']).__name__}, expected a uint8 array [N, 3072]")
    if raw["data"].dtype != np.uint8:
        raise bad(f"data is {raw['data'].dtype} {raw['data'].shape}, expected uint8 [N, 3072]")
    data = torch.as_tensor(raw["data"])
    if data.dtype != torch.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise bad(f"data is {data.dtype} {tuple(data.shape)}, expected uint8 [N, 3072]")
    n = data.shape[0]
    try:
        fine = torch.as_tensor(raw["fine_labels"], dtype=torch.int64)
        coarse = torch.as_tensor(raw["coarse_labels"], dtype=torch.int64)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise bad("fine_labels and coarse_labels must be lists of integers") from None
    if fine.ndim != 1 or coarse.ndim != 1:
        raise bad("fine_labels and coarse_labels must be lists of integers")
    if len(fine) != n or len(coarse) != n:
        raise bad(f"{len(fine)} fine and {len(coarse)} coarse labels for {n} images")
    if n == 0:
        raise bad(f"it holds no images; the official split has {SPLIT_SIZES[split]}")
    if fine.min() < 0 or fine.max() >= NUM_CLASSES or coarse.min() < 0 or coarse.max() >= NUM_COARSE:
        raise bad("labels out of range (fine must be 0..99, coarse 0..19)")
    # The official splits hold 500 / 100 images of every class. A smaller archive in the same
    # layout (tests write one) is accepted if it is balanced too; anything else is not CIFAR-100.
    per_class = torch.bincount(fine, minlength=NUM_CLASSES)
    if not bool((per_class == per_class[0]).all()):
        raise bad(f"{n} images with class counts {int(per_class.min())}..{int(per_class.max())}; "
                  f"expected the same count for every class ({SPLIT_SIZES[split] // NUM_CLASSES} "
                  f"in the official split)")
    classes = list(meta.get("fine_label_names", []))
    coarse_classes = list(meta.get("coarse_label_names", []))
    if len(classes) != NUM_CLASSES or len(coarse_classes) != NUM_COARSE or not all(
            isinstance(name, str) for name in classes + coarse_classes):
        raise DataError(f"{folder / 'meta'} is not CIFAR-100's meta file: it has {len(classes)} fine and "
                        f"{len(coarse_classes)} coarse class names, expected 100 and 20 strings. "
                        f"{_start_over(folder)}")
    images = data.reshape(n, 3, 32, 32)  # rows are channel-major, so this is already CHW
    return CifarSplit(images, fine, coarse, classes, coarse_classes)


# ---------------------------------------------------------------------------------------------
# Subsets and the validation split. Both are stratified and seeded, so a run can be reproduced.

def stratified_indices(labels: torch.Tensor, per_class: int, seed: int = 0,
                       exclude: torch.Tensor | None = None) -> torch.Tensor:
    """`per_class` random indices of each class (sorted), drawn with a seeded generator."""
    if per_class <= 0:
        raise ValueError(f"per_class must be a positive integer, got {per_class}")
    g = torch.Generator().manual_seed(seed)
    allowed = torch.ones(len(labels), dtype=torch.bool)
    if exclude is not None:
        allowed[exclude] = False
    chosen = []
    for c in labels.unique().tolist():
        pool = torch.nonzero((labels == c) & allowed).flatten()
        if len(pool) < per_class:
            raise ValueError(f"class {c} has only {len(pool)} images, asked for {per_class} per class")
        chosen.append(pool[torch.randperm(len(pool), generator=g)[:per_class]])
    return torch.cat(chosen).sort().values


def stratified_subset(split: CifarSplit, per_class: int, seed: int = 0) -> CifarSplit:
    """k images per class, for quick runs."""
    return split.subset(stratified_indices(split.labels, per_class, seed))


def train_val_split(train: CifarSplit, val_per_class: int = 50, seed: int = 0,
                    train_per_class: int | None = None) -> tuple[CifarSplit, CifarSplit]:
    """Carve a stratified validation split out of train (default 50 × 100 = 5,000 images).

    Model selection uses it, so the test set is only ever reported, never used to choose.
    `train_per_class` then optionally subsamples what remains (quick runs).
    """
    val_idx = stratified_indices(train.labels, val_per_class, seed)
    if train_per_class is None:
        keep = torch.ones(len(train), dtype=torch.bool)
        keep[val_idx] = False
        train_idx = torch.nonzero(keep).flatten()
    else:
        train_idx = stratified_indices(train.labels, train_per_class, seed + 1, exclude=val_idx)
    return train.subset(train_idx), train.subset(val_idx)


class CifarDataset(Dataset):
    """Items are (transform(image), label) with image uint8 [3, 32, 32].

    The loader may also hand a whole batch of (index, seed) pairs to `__getitems__`: the batch is
    then augmented under its own seed, so augmentations do not depend on the number of workers
    or on whether a run was resumed (see `training.loader.SeededBatchSampler`).
    """

    def __init__(self, split: CifarSplit, transform=None):
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        image = self.split.images[i]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.split.labels[i])

    def __getitems__(self, items: list) -> list:
        if not items or not isinstance(items[0], tuple):
            return [self[i] for i in items]
        seed = items[0][1]
        # fork_rng keeps the caller's RNG untouched when this runs in the main process (0 workers).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return [self[i] for i, _ in items]
