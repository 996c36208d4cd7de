import hashlib
import pickle
import io
import tarfile
import urllib.error
from pathlib import Path

import pytest
import numpy as np
import torch

from cifar_hw2 import data as D
from conftest import needs_real_data, write_archive


def test_loads_the_official_layout_into_uint8_tensors(tiny_data):
    train = D.load_cifar100("train", tiny_data, download=False)
    assert train.images.dtype == torch.uint8 and train.images.shape == (1200, 3, 32, 32)
    assert train.labels.dtype == torch.int64 and train.labels.max() == 99
    assert train.coarse_labels.max() == 19
    assert len(train.classes) == 100 and len(train.coarse_classes) == 20
    assert torch.bincount(train.labels).tolist() == [12] * 100
    assert len(D.load_cifar100("test", tiny_data, download=False)) == 400


def test_rows_are_channel_major(tmp_path):
    root = write_archive(tmp_path, 1, 1)
    import pickle
    raw = pickle.load(open(root / "cifar-100-python" / "train", "rb"), encoding="latin1")
    split = D.load_cifar100("train", root, download=False)
    row = torch.as_tensor(raw["data"][0])
    assert torch.equal(split.images[0, 0].flatten(), row[:1024])      # red plane first
    assert torch.equal(split.images[0, 2].flatten(), row[2048:])


def test_root_argument_then_env_var_then_the_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("CIFAR_HW2_DATA", str(tmp_path))
    assert D.data_root() == tmp_path
    assert D.data_root("elsewhere") == Path("elsewhere")
    monkeypatch.delenv("CIFAR_HW2_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert D.data_root() == tmp_path / "xdg" / "cifar_hw2" / "data"


def test_missing_folder_offline_gives_a_clear_error(monkeypatch, tmp_path):
    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(D.urllib.request, "urlopen", offline)
    with pytest.raises(D.DataError) as e:
        D.load_cifar100("train", tmp_path / "nowhere")
    msg = str(e.value)
    assert str(tmp_path / "nowhere" / "cifar-100-python") in msg and D.URL in msg
    # a folder given explicitly overrides $CIFAR_HW2_DATA: the message must not suggest the variable
    assert "--data DIR" in msg and "CIFAR_HW2_DATA" not in msg
    assert not (tmp_path / "nowhere" / "cifar-100-python").exists()   # nothing half-made
    monkeypatch.setenv("CIFAR_HW2_DATA", str(tmp_path / "env"))
    with pytest.raises(D.DataError, match=r"point CIFAR_HW2_DATA \(now .*env\) at a folder"):
        D.load_cifar100("train")
    monkeypatch.delenv("CIFAR_HW2_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)             # the working folder plays no part
    with pytest.raises(D.DataError, match="pass --data DIR .* or set CIFAR_HW2_DATA") as e:
        D.load_cifar100("train")
    assert str(tmp_path / "cache" / "cifar_hw2" / "data" / "cifar-100-python") in str(e.value)


def test_one_default_data_folder_for_the_cli_and_the_notebooks(monkeypatch, tmp_path):
    monkeypatch.delenv("CIFAR_HW2_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    expected = tmp_path / ".cache" / "cifar_hw2" / "data"
    for cwd in (tmp_path, tmp_path / "notebooks"):           # the CLI's and a notebook kernel's folder
        cwd.mkdir(exist_ok=True)
        monkeypatch.chdir(cwd)
        assert D.data_root() == expected and not D.is_present()
    write_archive(expected)
    assert D.is_present() and len(D.load_cifar100("test", download=False)) == 400


def test_download_false_does_not_download(tmp_path):
    with pytest.raises(D.DataError, match="download=False"):
        D.load_cifar100("train", tmp_path, download=False)


def _archive_bytes(tmp_path) -> bytes:
    src = write_archive(tmp_path / "src", 2, 1)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src / "cifar-100-python", arcname="cifar-100-python")
    return buf.getvalue()


def test_download_checks_the_archive_md5_and_extracts(monkeypatch, tmp_path, capsys):
    blob = _archive_bytes(tmp_path)
    monkeypatch.setattr(D.urllib.request, "urlopen", lambda *a, **k: io.BytesIO(blob))
    monkeypatch.setattr(D, "ARCHIVE_MD5", hashlib.md5(blob).hexdigest())
    split = D.load_cifar100("train", tmp_path / "dl")
    assert len(split) == 200
    assert not [p for p in (tmp_path / "dl").iterdir() if p.name.startswith(".download")]
    # --data named a folder that did not exist: a typo would download 169 MB there, so the line says so
    assert "into " + str(tmp_path / "dl") + " (a new folder: a typo? Ctrl-C stops) ..." in capsys.readouterr().out
    D.load_cifar100("test", tmp_path / "dl")       # there now: nothing to download
    (tmp_path / "made").mkdir()
    monkeypatch.setattr(D, "default_data_root", lambda: tmp_path / "default")
    monkeypatch.delenv(D.ENV_VAR, raising=False)
    D.load_cifar100("train", tmp_path / "made")
    D.load_cifar100("train")                        # the default folder, made on first use: no question
    assert "a new folder" not in capsys.readouterr().out


def test_download_with_wrong_md5_leaves_nothing(monkeypatch, tmp_path):
    blob = _archive_bytes(tmp_path)
    monkeypatch.setattr(D.urllib.request, "urlopen", lambda *a, **k: io.BytesIO(blob))
    with pytest.raises(D.DataError, match="md5"):
        D.load_cifar100("train", tmp_path / "dl")
    assert not (tmp_path / "dl").exists()          # the folder it created is gone again
    (tmp_path / "kept").mkdir()
    with pytest.raises(D.DataError, match="md5"):
        D.load_cifar100("train", tmp_path / "kept")
    assert list((tmp_path / "kept").iterdir()) == []   # a folder that was there stays, empty


def test_truncated_or_corrupt_files_give_a_clear_error(tmp_path):
    root = write_archive(tmp_path, 2, 1)
    train = root / "cifar-100-python" / "train"
    train.write_bytes(train.read_bytes()[:5000])
    with pytest.raises(D.DataError, match="truncated or not a CIFAR-100 pickle"):
        D.load_cifar100("train", root, download=False)
    train.write_bytes(b"not a pickle at all")
    with pytest.raises(D.DataError, match="truncated or not a CIFAR-100 pickle"):
        D.load_cifar100("train", root, download=False)


def test_content_is_checked_not_bytes(tmp_path):
    import pickle
    root = write_archive(tmp_path, 2, 1)
    path = root / "cifar-100-python" / "train"
    raw = pickle.load(open(path, "rb"), encoding="latin1")
    raw["fine_labels"][0] = 100
    pickle.dump(raw, open(path, "wb"), protocol=2)
    with pytest.raises(D.DataError, match="labels out of range"):
        D.load_cifar100("train", root, download=False)
    raw["fine_labels"][0] = (raw["fine_labels"][0] + 1) % 100
    raw["fine_labels"] = raw["fine_labels"][:-1]
    raw["data"] = raw["data"][:-1]
    raw["coarse_labels"] = raw["coarse_labels"][:-1]
    pickle.dump(raw, open(path, "wb"), protocol=2)
    with pytest.raises(D.DataError, match="class counts"):
        D.load_cifar100("train", root, download=False)
    raw["data"] = raw["data"][:, :100]
    pickle.dump(raw, open(path, "wb"), protocol=2)
    with pytest.raises(D.DataError, match=r"expected uint8 \[N, 3072\]"):
        D.load_cifar100("train", root, download=False)
    empty = {**raw, "data": raw["data"][:0, :0].reshape(0, 3072), "fine_labels": [], "coarse_labels": []}
    pickle.dump(empty, open(path, "wb"), protocol=4)
    with pytest.raises(D.DataError, match="train split: it holds no images; the official split has 50000"):
        D.load_cifar100("train", root, download=False)
    meta_path = root / "cifar-100-python" / "meta"
    meta = pickle.load(open(meta_path, "rb"), encoding="latin1")
    meta["fine_label_names"][0] = 7
    pickle.dump(meta, open(meta_path, "wb"), protocol=2)
    with pytest.raises(D.DataError, match=f"{meta_path} is not CIFAR-100's meta file: .* expected 100 and 20 strings"):
        D.load_cifar100("test", root, download=False)


def test_unknown_split(tiny_data):
    with pytest.raises(ValueError, match="valid splits"):
        D.load_cifar100("valid", tiny_data)


def test_stratified_subset_and_validation_split(tiny_data):
    train = D.load_cifar100("train", tiny_data, download=False)
    sub = D.stratified_subset(train, 3, seed=1)
    assert torch.bincount(sub.labels).tolist() == [3] * 100
    assert torch.equal(sub.images, D.stratified_subset(train, 3, seed=1).images)  # seeded
    assert not torch.equal(sub.images, D.stratified_subset(train, 3, seed=2).images)
    tr, va = D.train_val_split(train, val_per_class=2, seed=0)
    assert len(tr) == 1000 and len(va) == 200
    assert torch.bincount(va.labels).tolist() == [2] * 100
    # disjoint: no validation image is also a training image (the tiny archive's rows are unique)
    train_rows = {bytes(im.flatten().tolist()) for im in tr.images}
    assert not any(bytes(im.flatten().tolist()) in train_rows for im in va.images)
    tr2, va2 = D.train_val_split(train, val_per_class=2, seed=0, train_per_class=5)
    assert torch.bincount(tr2.labels).tolist() == [5] * 100 and torch.equal(va2.images, va.images)
    with pytest.raises(ValueError, match="only 10 images"):
        D.train_val_split(train, val_per_class=2, train_per_class=11)
    with pytest.raises(ValueError, match="positive"):
        D.stratified_subset(train, 0)


def test_dataset_applies_the_transform_and_seeds_batches(tiny_data):
    from cifar_hw2.augment import train_transform
    train = D.load_cifar100("train", tiny_data, download=False)
    ds = D.CifarDataset(train, train_transform())
    x, y = ds[0]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32) and y == int(train.labels[0])
    a = ds.__getitems__([(i, 123) for i in range(8)])
    b = ds.__getitems__([(i, 123) for i in range(8)])
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b))
    state = torch.get_rng_state()
    ds.__getitems__([(0, 5)])
    assert torch.equal(state, torch.get_rng_state())   # the caller's RNG is untouched


@needs_real_data
def test_real_cifar100():
    train = D.load_cifar100("train", download=False)
    test = D.load_cifar100("test", download=False)
    assert len(train) == 50_000 and len(test) == 10_000
    assert torch.bincount(train.labels).tolist() == [500] * 100
    assert torch.bincount(test.labels).tolist() == [100] * 100
    mean = train.images.double().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor([0.5071, 0.4865, 0.4409], dtype=torch.float64), atol=1e-4)
    assert train.classes[0] == "apple" and train.classes[-1] == "worm"
    assert test.labels[:10].tolist() == [49, 33, 72, 51, 71, 92, 15, 14, 23, 0]


# ---- untrusted pickles: nothing in a data file runs (docs/security.md)

class _Payload:
    """Unpickling this runs `call(*args)`: what a crafted file in a --data folder would do."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def _payloads(marker: Path):
    import builtins
    import os
    import subprocess
    return {"os.system": _Payload(os.system, f"touch {marker}"),
            "builtins.exec": _Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
            "subprocess.call": _Payload(subprocess.call, ["touch", str(marker)])}


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "subprocess.call"])
@pytest.mark.parametrize("name, protocol", [("meta", 2), ("train", pickle.DEFAULT_PROTOCOL)])
def test_a_pickle_that_would_run_code_is_refused_before_anything_runs(kind, name, protocol, tmp_path):
    root = write_archive(tmp_path / "data", 1, 1)
    marker = tmp_path / "payload-ran"
    path = root / "cifar-100-python" / name
    good = pickle.load(open(path, "rb"), encoding="latin1")
    key = "fine_label_names" if name == "meta" else "fine_labels"
    with open(path, "wb") as f:
        pickle.dump({**good, key: _payloads(marker)[kind]}, f, protocol=protocol)
    with pytest.raises(D.DataError) as e:
        D.load_cifar100("train", root, download=False)
    assert not marker.exists(), "the payload ran"
    # the global as the file names it (os.system is posix.system; protocol 2 writes Python 2's module names)
    named = {"os.system": "posix.system", "builtins.exec": "__builtin__.exec" if protocol == 2 else "builtins.exec",
             "subprocess.call": "commands.call" if protocol == 2 else "subprocess.call"}[kind]
    assert f"{path} is refused: it asks to load {named}, which a CIFAR-100 pickle never holds" in str(e.value)
    assert "nothing in it was run" in str(e.value) and "\n" not in str(e.value)


def test_the_data_command_refuses_a_crafted_meta_in_one_line(tmp_path, capsys):
    from cifar_hw2.cli import main
    root = write_archive(tmp_path / "data", 1, 1)
    marker = tmp_path / "payload-ran"
    with open(root / "cifar-100-python" / "meta", "wb") as f:
        pickle.dump(_payloads(marker)["os.system"], f, protocol=2)
    assert main(["data", "--data", str(root)]) == 2
    err = capsys.readouterr().err
    assert not marker.exists() and len(err.strip().splitlines()) == 1 and "posix.system" in err, err


@pytest.mark.parametrize("spelling", ["numpy.core.multiarray", "numpy._core.multiarray"])
def test_numpy_arrays_load_in_both_spellings_of_their_pickles(spelling, tmp_path):
    """The official archive (numpy 1) names numpy.core.multiarray._reconstruct, numpy 2 writes
    numpy._core.multiarray: both load, to the same pixels. Protocol 2 names a global as
    "c<module>\\n<name>\\n", so one spelling is rewritten into the other in the bytes."""
    root = write_archive(tmp_path / "data", 1, 1)
    path = root / "cifar-100-python" / "train"
    before = D.load_cifar100("train", root, download=False)
    blob = path.read_bytes()
    other = b"numpy._core.multiarray" if spelling == "numpy.core.multiarray" else b"numpy.core.multiarray"
    path.write_bytes(blob.replace(b"c" + other + b"\n", b"c" + spelling.encode() + b"\n"))
    assert (b"c" + spelling.encode() + b"\n_reconstruct\n") in path.read_bytes()
    after = D.load_cifar100("train", root, download=False)
    assert torch.equal(before.images, after.images) and torch.equal(before.labels, after.labels)


def test_bytes_keys_and_names_load_as_the_official_py2_files_do(tmp_path):
    """to_official.py's files (and the dataset page's encoding="bytes" readers) hold bytes keys and names."""
    root = write_archive(tmp_path / "data", 1, 1)
    folder = root / "cifar-100-python"
    for name in ("train", "meta"):
        raw = pickle.load(open(folder / name, "rb"), encoding="latin1")
        raw = {k.encode(): ([x.encode() for x in v] if k.endswith("_names") else v) for k, v in raw.items()}
        pickle.dump(raw, open(folder / name, "wb"), protocol=2)
    split = D.load_cifar100("train", root, download=False)
    assert split.classes[:2] == ["class_0", "class_1"] and len(split) == 100


@pytest.mark.parametrize("data, why", [("pixels", "data is a str, expected a uint8 array"),
                                       (np.array([object()] * 3072, dtype=object).reshape(1, 3072),
                                        "data is object (1, 3072), expected uint8")])
def test_data_that_is_not_a_uint8_array_is_one_clear_error(data, why, tmp_path):
    root = write_archive(tmp_path / "data", 1, 1)
    path = root / "cifar-100-python" / "train"
    raw = pickle.load(open(path, "rb"), encoding="latin1")
    pickle.dump({**raw, "data": data}, open(path, "wb"), protocol=2)
    with pytest.raises(D.DataError) as e:
        D.load_cifar100("train", root, download=False)
    assert why in str(e.value) or "refused" in str(e.value), str(e.value)


def test_a_data_folder_one_level_off_is_named_before_any_download(monkeypatch, tmp_path):
    """--data pointed at cifar-100-python/ itself, the archive extracted into cifar-100-python/, the
    folder above the right one, or a file: one line that says which folder to give, and no download."""
    def no_download(*a, **k):
        raise AssertionError("tried to download")
    monkeypatch.setattr(D.urllib.request, "urlopen", no_download)
    root = write_archive(tmp_path / "data", 1, 1)
    inner = root / "cifar-100-python"
    with pytest.raises(D.DataError) as e:
        D.load_cifar100("train", inner)
    assert str(e.value) == (f"{inner} is the cifar-100-python/ folder itself; give the folder that holds it: "
                            f"--data {root} (data= in a notebook, or CIFAR_HW2_DATA).")
    nested = tmp_path / "nested"
    (nested / "cifar-100-python").mkdir(parents=True)
    inner.rename(nested / "cifar-100-python" / "cifar-100-python")
    with pytest.raises(D.DataError, match=r"holds another cifar-100-python/ \(the archive was extracted into it\)"):
        D.load_cifar100("train", nested)
    # the folder above the right one (~/.cache/cifar_hw2 for ~/.cache/cifar_hw2/data), and a file
    (nested / "cifar-100-python" / "cifar-100-python").rename(root / "cifar-100-python")
    with pytest.raises(D.DataError) as e:
        D.load_cifar100("train", tmp_path)
    assert str(e.value) == (f"{tmp_path} holds no cifar-100-python/, but {root} does: give --data {root} "
                            f"(data= in a notebook, or CIFAR_HW2_DATA).")
    with pytest.raises(D.DataError, match=r"train is a file; --data \(data= in a notebook, or CIFAR_HW2_DATA\) names"):
        D.load_cifar100("train", root / "cifar-100-python" / "train")
    archive = tmp_path / "cifar-100-python.tar.gz"     # downloaded by hand and named as the data
    archive.write_bytes(b"not read")
    with pytest.raises(D.DataError) as e:
        D.load_cifar100("train", archive)
    assert str(e.value) == (f"{archive} is an archive; --data (data= in a notebook, or CIFAR_HW2_DATA) names a "
                            f"folder. Extract it first, e.g. tar xf {archive} -C {tmp_path} (it holds "
                            f"cifar-100-python/), then give --data {tmp_path}.")
    assert archive.read_bytes() == b"not read"
    assert not list(tmp_path.glob("**/.download-*"))
    spaced = tmp_path / "my data" / "cifar-100-python.tgz"      # the command in the line runs as printed
    spaced.parent.mkdir()
    spaced.write_bytes(b"not read")
    with pytest.raises(D.DataError, match=f"tar xf '{spaced}' -C '{spaced.parent}' .*give --data '{spaced.parent}'"):
        D.load_cifar100("train", spaced)


def test_the_offline_hint_says_where_to_extract_and_a_failed_download_leaves_no_parents(monkeypatch, tmp_path):
    def offline(*a, **k):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(D.urllib.request, "urlopen", offline)
    typo = tmp_path / "a" / "b" / "c"
    with pytest.raises(D.DataError) as e:
        D.load_cifar100("train", typo)
    assert f"extract it into {typo} (the archive holds cifar-100-python/): mkdir -p {typo} && tar xzf " \
           f"cifar-100-python.tar.gz -C {typo}" in str(e.value)
    assert list(tmp_path.iterdir()) == []          # a, a/b and a/b/c were made for the download; all gone
