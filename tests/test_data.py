"""ood_lib.data: the offline copies load as documented, every bad file is a clear error, the
notMNIST split is fixed, and online mode's conversions work on small files in the download
formats (written here; synthetic images, no network)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ood_lib import catalogue
from ood_lib.data import download, files, stats, store
from ood_lib.data.files import (
    ChecksumError,
    DataError,
    DataFormatError,
    MissingDataError,
    UnknownDatasetError,
)
from ood_lib.data.store import Split
from tests.conftest import tiny_arrays

OFFLINE_PAIRS = [(d, s) for d in catalogue.DATASETS for s in catalogue.SPLITS
                 if (d, s) in catalogue.OFFICIAL_SIZES and (d, s) != ("svhn", "train")]


@pytest.fixture(scope="module")
def splits(data_root: Path) -> dict[tuple[str, str], Split]:
    """Every split of the offline copy, loaded once."""
    return {pair: store.load(*pair, data_root=data_root) for pair in store.available(data_root)}


# --------------------------------------------------------------------------- the offline copy


def test_offline_copy_has_every_split_but_svhn_train(data_root: Path) -> None:
    assert store.available(data_root) == OFFLINE_PAIRS


@pytest.mark.parametrize("pair", OFFLINE_PAIRS, ids="-".join)
def test_split_has_documented_layout(splits: dict, pair: tuple[str, str]) -> None:
    sp = splits[pair]
    h, w, c = catalogue.IMAGE_SHAPES[pair[0]]
    assert sp.x.dtype == np.uint8 and sp.x.shape == (sp.n, h, w, c)
    assert sp.y.dtype == np.int64 and sp.y.shape == (sp.n,)
    assert sp.index.dtype == np.int64 and sp.index.shape == (sp.n,)
    assert set(np.unique(sp.y)) == set(range(10))
    # notMNIST: positions in the sorted names; train and val: official training indices
    positions = (18_724 if pair[0] == "notmnist" else catalogue.HELD_OUT[pair[0]][1]
                 if pair[0] in catalogue.HELD_OUT and pair[1] in ("train", "val") else sp.official_size)
    assert 0 <= sp.index.min() and sp.index.max() < positions
    assert len(np.unique(sp.index)) == sp.n
    assert sp.official_size == catalogue.OFFICIAL_SIZES[pair]
    assert sp.source.startswith("offline copy ") and sp.source.endswith(".npz")
    t = sp.tensor()
    assert t.dtype == torch.uint8 and t.shape == (sp.n, c, h, w)
    assert torch.equal(t[0], torch.from_numpy(sp.x[0]).permute(2, 0, 1))
    image, label = sp.torch_dataset()[sp.n - 1]
    assert torch.equal(image, t[-1]) and int(label) == int(sp.y[-1])


@pytest.mark.parametrize(
    "pair, text",
    [
        (("cifar10", "test"), "1,000 of 10,000 (10.0%)"),
        (("svhn", "test"), "7,136 of 26,032 (27.4%)"),
        (("mnist", "train"), "10,000 of 60,000 (16.7%)"),
        (("mnist", "test"), "10,000 of 10,000 (100.0%)"),
        (("cifar10", "train"), "45,000 of 45,000 (100.0%)"),
        (("cifar10", "val"), "5,000 of 5,000 (100.0%)"),
        (("fashion_mnist", "train"), "55,000 of 55,000 (100.0%)"),
        (("notmnist", "val"), "1,881 of 1,881 (100.0%)"),
        (("fashion_mnist", "test"), "10,000 of 10,000 (100.0%)"),
    ],
)
def test_documented_coverage(splits: dict, pair: tuple[str, str], text: str) -> None:
    assert splits[pair].coverage_str == text


def test_labels_and_subset(splits: dict) -> None:
    sp = splits[("cifar10", "test")]
    assert sp.label == "CIFAR10-Test"
    assert splits[("fashion_mnist", "train")].label == "FashionMNIST-Train"
    sub = sp.subset(10)
    assert sub.n == 10 and sub.official_size == 10_000 and sub.coverage_str == "10 of 10,000 (0.1%)"
    assert np.array_equal(sub.x, sp.x[:10]) and np.array_equal(sub.index, sp.index[:10])
    assert sp.subset(2_000).n == 1_000  # asking for more than is here gives everything
    with pytest.raises(ValueError, match=">= 0"):
        sp.subset(-1)


def test_svhn_test_indices_are_the_documented_ranges(splits: dict) -> None:
    ranges = [(0, 0), (9, 15), (99, 163), (999, 1641), (9999, 16418)]
    expected = np.concatenate([np.arange(a, b + 1) for a, b in ranges])
    assert np.array_equal(np.sort(splits[("svhn", "test")].index), expected)


def test_cifar10_train_channel_stats_match_the_known_values(splits: dict) -> None:
    train, val = splits[("cifar10", "train")], splits[("cifar10", "val")]
    whole = Split("cifar10", "train", np.concatenate([train.x, val.x]),
                  np.concatenate([train.y, val.y]), np.concatenate([train.index, val.index]),
                  50_000, train.source)
    channel = stats.channel_stats(whole)
    # The widely used CIFAR-10 training-set normalisation constants (all 50,000 images).
    assert np.allclose(channel["channel_mean"], [0.4914, 0.4822, 0.4465], atol=5e-4)
    assert np.allclose(channel["channel_std"], [0.2470, 0.2435, 0.2616], atol=5e-4)
    assert channel["n"] == 50_000 and channel["label"] == "CIFAR10-Train"


def test_svhn_train_is_reported_missing(data_root: Path, no_network: None) -> None:
    with pytest.raises(MissingDataError, match=r"SVHN train \(svhn_train.npz\) is not in the "
                       r"offline copy at .*OOD_DATA_ROOT.*OOD_DATA=online"):
        store.load("svhn", "train", data_root)


@pytest.mark.slow
def test_coverage_table(data_root: Path) -> None:
    table = stats.coverage_table(data_root).set_index(["dataset", "split"])
    assert len(table) == 13  # 5 datasets x train/test, and 3 held-out splits
    assert table.loc[("SVHN", "train"), "images here"] == 0
    assert table.loc[("SVHN", "test"), "images here"] == 7_136
    assert table.loc[("SVHN", "test"), "official size"] == 26_032
    assert table.loc[("CIFAR10", "test"), "coverage"] == pytest.approx(0.1)


def test_offline_manifest_describes_the_files(data_root: Path) -> None:
    manifest = files.read_manifest(data_root)
    assert {files.file_stem(*p) for p in OFFLINE_PAIRS} == set(manifest)
    assert files.file_stem("cifar10", "val") == "cifar10_train"  # held-out images live there
    assert all(entry.get("source") for entry in manifest.values())


# --------------------------------------------------------------------------- notMNIST split


def test_notmnist_split_is_disjoint_complete_and_fixed(splits: dict, data_root: Path) -> None:
    train, test = splits[("notmnist", "train")], splits[("notmnist", "test")]
    assert (train.n, test.n) == (14_962, 3_762)
    assert not set(train.index) & set(test.index)
    assert np.array_equal(np.sort(np.concatenate([train.index, test.index])), np.arange(18_724))
    again = store.load("notmnist", "test", data_root)
    assert np.array_equal(again.index, test.index) and np.array_equal(again.x, test.x)
    with np.load(data_root / "notmnist_small.npz") as f:
        names = f["name"]
    mask = files.notmnist_test_mask(names)
    assert np.array_equal(np.flatnonzero(mask), test.index)
    assert mask[0] == (hashlib.sha256(names[0].encode()).digest()[0] < 51)
    assert 0.19 < mask.mean() < 0.21


def test_notmnist_rule_depends_only_on_the_name() -> None:
    names = ["A/MDEtMDEtMDAudHRm.png", "B/x.png", "J/y.png"]
    reversed_mask = files.notmnist_test_mask(names[::-1])[::-1]
    assert np.array_equal(files.notmnist_test_mask(names), reversed_mask)


# --------------------------------------------------------------------------- statistics


def test_channel_stats_on_known_images() -> None:
    x = np.zeros((4, 2, 2, 3), dtype=np.uint8)
    x[1::2] = 255  # images alternate black, white
    x[..., 2] = 51  # blue constant 0.2
    sp = Split("cifar10", "test", x, np.zeros(4, np.int64), np.arange(4), 10_000, "synthetic")
    channel = stats.channel_stats(sp, chunk=3)
    assert np.allclose(channel["channel_mean"], [0.5, 0.5, 0.2])
    assert np.allclose(channel["channel_std"], [0.5, 0.5, 0.0])
    # per-pixel unbiased variance: 1/3 for the 8 red/green dimensions, 0 for the 4 blue ones
    assert channel["pixel_variance_mean"] == pytest.approx((8 * 1 / 3) / 12)


def test_pixel_moments_match_numpy() -> None:
    x = tiny_arrays(n=7, shape=(4, 3, 3))["x"]
    sp = Split("svhn", "test", x, np.zeros(7, np.int64), np.arange(7), 26_032, "synthetic")
    mean, var = stats.pixel_moments(sp, chunk=2)
    assert np.allclose(mean, x.mean(axis=0) / 255) and np.allclose(var, np.var(x / 255, 0, ddof=1))
    with pytest.raises(ValueError, match="at least 2 images"):
        stats.pixel_moments(sp.subset(1))


# --------------------------------------------------------------------------- errors


def test_unknown_names() -> None:
    with pytest.raises(UnknownDatasetError, match="unknown dataset 'imagenet'; expected one of "
                       "cifar10, svhn, mnist, fashion_mnist, notmnist") as err:
        store.load("imagenet", "test")
    assert isinstance(err.value, KeyError) and not str(err.value).startswith("'")
    with pytest.raises(UnknownDatasetError, match="unknown split 'valid'; expected one of train"):
        store.load("mnist", "valid")


def test_checksum_mismatch(tmp_root: Callable[..., Path]) -> None:
    root = tmp_root(sha256="0" * 64)
    path = root / "mnist_test.npz"
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ChecksumError, match=f"sha256 mismatch for {path}: manifest.json expects "
                       f"{'0' * 64}, the file has {actual}"):
        store.load("mnist", "test", root)


def test_checksum_missing_from_manifest(tmp_root: Callable[..., Path]) -> None:
    root = tmp_root()
    manifest = json.loads((root / "manifest.json").read_text())
    del manifest["mnist_test"]["sha256"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ChecksumError, match="no sha256 for mnist_test"):
        store.load("mnist", "test", root)


def mark_modified(path: Path) -> None:
    """Move a file's mtime on by a millisecond: to a per-process cache, a new version."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_checksum_is_verified_once_per_file_version(
    tmp_root: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_root()
    calls = []
    real = files.sha256_file
    monkeypatch.setattr(files, "sha256_file", lambda p: calls.append(p) or real(p))
    store.load("mnist", "test", root)
    store.load("mnist", "test", root)
    assert len(calls) == 1
    mark_modified(root / "mnist_test.npz")  # check again
    store.load("mnist", "test", root)
    assert len(calls) == 2


def test_a_split_is_read_once_per_file_version_and_handed_out_as_copies(
    tmp_root: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_root()
    calls = []
    real = store.read_npz
    monkeypatch.setattr(store, "read_npz", lambda *a: calls.append(a) or real(*a))
    first = store.load("mnist", "test", root)
    first.x[:] = 0  # the caller's own arrays: the next load is not affected
    second = store.load("mnist", "test", root)
    assert len(calls) == 1
    assert second.x.any() and not np.shares_memory(first.x, second.x)
    np.testing.assert_array_equal(second.x, real(root / "mnist_test.npz", "mnist", None)["x"])
    mark_modified(root / "mnist_test.npz")  # read again
    store.load("mnist", "test", root)
    assert len(calls) == 2


def test_missing_file_and_manifest(tmp_root: Callable[..., Path], tmp_path: Path) -> None:
    root = tmp_root()
    (root / "mnist_test.npz").unlink()
    with pytest.raises(MissingDataError, match="mnist_test.npz.*listed in manifest.json but "
                       "absent at .*OOD_DATA_ROOT"):
        store.load("mnist", "test", root)
    with pytest.raises(MissingDataError, match="not in the offline copy"):
        store.load("fashion_mnist", "test", root)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MissingDataError, match=f"no manifest.json in the data root {empty}"):
        store.load("mnist", "test", empty)


def test_wrong_shape(tmp_root: Callable[..., Path]) -> None:
    root = tmp_root(**tiny_arrays(shape=(32, 32, 3)))
    with pytest.raises(DataFormatError, match=r"x has shape \(5, 32, 32, 3\), expected "
                       r"\(N, 28, 28, 1\) for mnist"):
        store.load("mnist", "test", root)


def test_wrong_dtype(tmp_root: Callable[..., Path]) -> None:
    arrays = tiny_arrays()
    root = tmp_root(**{**arrays, "x": arrays["x"].astype(np.float32)})
    with pytest.raises(DataFormatError, match="x has dtype float32, expected uint8"):
        store.load("mnist", "test", root)


def test_nan_labels(tmp_root: Callable[..., Path]) -> None:
    y = np.full(5, np.nan)
    root = tmp_root(**{**tiny_arrays(), "y": y})
    with pytest.raises(DataFormatError, match="y has dtype float64, expected int64"):
        store.load("mnist", "test", root)


def test_labels_out_of_range(tmp_root: Callable[..., Path]) -> None:
    root = tmp_root(**{**tiny_arrays(), "y": np.array([0, 1, 2, 3, 10])})
    with pytest.raises(DataFormatError, match=r"labels y span 0..10, expected 0..9"):
        store.load("mnist", "test", root)


def test_missing_array(tmp_root: Callable[..., Path]) -> None:
    root = tmp_root(x=tiny_arrays()["x"])
    with pytest.raises(DataFormatError, match=r"lacks array\(s\) y, index \(has x\)"):
        store.load("mnist", "test", root)


def test_length_mismatch(tmp_root: Callable[..., Path]) -> None:
    root = tmp_root(**{**tiny_arrays(), "index": np.arange(4)})
    with pytest.raises(DataFormatError, match=r"index has shape \(4,\), expected \(5,\)"):
        store.load("mnist", "test", root)


def _rewrite(root: Path, stem: str, content: bytes) -> None:
    (root / f"{stem}.npz").write_bytes(content)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest[stem]["sha256"] = hashlib.sha256(content).hexdigest()
    (root / "manifest.json").write_text(json.dumps(manifest))


def test_not_an_npz(tmp_root: Callable[..., Path]) -> None:
    root = tmp_root()
    _rewrite(root, "mnist_test", b"this is not a zip archive at all")
    with pytest.raises(DataFormatError, match="mnist_test.npz is not a readable .npz"):
        store.load("mnist", "test", root)


def test_single_npy_array(tmp_root: Callable[..., Path], tmp_path: Path) -> None:
    root = tmp_root()
    np.save(tmp_path / "x.npy", tiny_arrays()["x"])
    _rewrite(root, "mnist_test", (tmp_path / "x.npy").read_bytes())
    with pytest.raises(DataFormatError, match="holds a single array"):
        store.load("mnist", "test", root)


def test_manifest_count_mismatch(tmp_root: Callable[..., Path]) -> None:
    root = tmp_root()
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["mnist_test"]["n"] = 6
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataFormatError, match="holds 5 images, manifest.json says 6"):
        store.load("mnist", "test", root)


def test_bad_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OOD_DATA", "sometimes")
    with pytest.raises(DataError, match="OOD_DATA='sometimes' is not a data mode"):
        store.load("mnist", "test", tmp_path)


# --------------------------------------------------------------------------- roots and modes


def test_root_resolution_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("OOD_DATA_ROOT", "OOD_DATA", "OOD_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(files, "PROJECT_ROOT", tmp_path / "project")
    monkeypatch.setenv("OOD_CACHE", str(tmp_path / "cache"))
    assert files.resolve_data_root() == tmp_path / "cache"  # no shared copy yet
    shared = tmp_path / "shared" / "data"
    shared.mkdir(parents=True)
    (shared / "manifest.json").write_text("{}")
    assert files.resolve_data_root() == shared
    monkeypatch.setenv("OOD_DATA", "online")
    assert files.resolve_data_root() == tmp_path / "cache"  # online never picks the shared copy
    monkeypatch.setenv("OOD_DATA_ROOT", str(tmp_path / "env"))
    assert files.resolve_data_root() == tmp_path / "env"
    assert files.resolve_data_root(tmp_path / "arg") == tmp_path / "arg"


def test_auto_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OOD_DATA", raising=False)
    assert files.data_mode(tmp_path) == "online"  # no manifest
    (tmp_path / "manifest.json").write_text(json.dumps({"a": {"origin": "online"}}))
    assert files.data_mode(tmp_path) == "online"  # a download cache keeps downloading
    (tmp_path / "manifest.json").write_text(json.dumps({"a": {"sha256": "..."}}))
    assert files.data_mode(tmp_path) == "offline"
    monkeypatch.setenv("OOD_DATA", "online")
    assert files.data_mode(tmp_path) == "online"


# --------------------------------------------------------------------------- online conversions


def test_from_torchvision_arrays_layouts() -> None:
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    targets = [1, 2, 3]
    for data_, layout in [(nhwc, "NHWC"), (nhwc.transpose(0, 3, 1, 2), "NCHW")]:
        out = download.from_torchvision_arrays(data_, targets, layout)
        assert np.array_equal(out["x"], nhwc) and out["y"].dtype == np.int64
        assert out["y"].tolist() == targets and out["index"].tolist() == [0, 1, 2]
    grey = torch.from_numpy(rng.integers(0, 256, (3, 28, 28), dtype=np.uint8))
    out = download.from_torchvision_arrays(grey, torch.tensor(targets), "NHW")
    assert out["x"].shape == (3, 28, 28, 1) and np.array_equal(out["x"][..., 0], grey.numpy())
    with pytest.raises(DataFormatError, match="does not match layout 'NHW'"):
        download.from_torchvision_arrays(nhwc, targets, "NHW")
    with pytest.raises(DataFormatError, match="3 images but 2 labels"):
        download.from_torchvision_arrays(nhwc, [0, 1], "NHWC")


def _write_cifar_batches(folder: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A fake cifar-10-batches-py: 2 images per batch, rows are R, G, B planes of 32x32."""
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, 2).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rows, "labels": labels}, f)
        batches[name] = rows
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return batches


def test_cifar_pickle_batches_convert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    import torchvision.datasets.cifar as cifar

    batches = _write_cifar_batches(tmp_path / "raw" / "cifar-10-batches-py",
                                   np.random.default_rng(0))
    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)  # no real md5s here
    ds = download.torchvision_split("cifar10", "test", tmp_path / "raw", download=False)
    out = download.from_torchvision_arrays(ds.data, ds.targets, "NHWC")
    rows = batches["test_batch"]
    assert out["x"].shape == (2, 32, 32, 3)
    assert np.array_equal(out["x"][1, :, :, 0].ravel(), rows[1, :1024])  # red plane
    assert np.array_equal(out["x"][1, :, :, 2].ravel(), rows[1, 2048:])  # blue plane
    train = download.torchvision_split("cifar10", "train", tmp_path / "raw", download=False)
    assert len(train.data) == 10


def _write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """MNIST idx files (big-endian magic 0x0803 for images, 0x0801 for labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
        struct.pack(">4i", 0x0803, n, h, w) + images.tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
        struct.pack(">2i", 0x0801, n) + labels.astype(np.uint8).tobytes())


def _write_mnist_raw(raw: Path, cls_name: str, n: int = 7) -> dict[str, tuple]:
    rng = np.random.default_rng(1)
    written = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n)
        _write_idx(raw / cls_name / "raw", prefix, images, labels)
        written[split] = (images, labels)
    return written


@pytest.mark.parametrize("name, cls_name", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_idx_files_convert(
    tmp_path: Path, no_network: None, name: str, cls_name: str
) -> None:
    written = _write_mnist_raw(tmp_path / "raw", cls_name)
    ds = download.torchvision_split(name, "test", tmp_path / "raw", download=False)
    out = download.from_torchvision_arrays(ds.data, ds.targets, "NHW")
    images, labels = written["test"]
    assert np.array_equal(out["x"][..., 0], images) and np.array_equal(out["y"], labels)


def test_svhn_mat_converts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sio = pytest.importorskip("scipy.io")
    import torchvision.datasets.svhn as svhn

    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)  # .mat layout: H, W, C, N
    sio.savemat(tmp_path / "test_32x32.mat", {"X": x, "y": np.array([[10], [1], [2], [10]])})
    monkeypatch.setattr(svhn, "check_integrity", lambda *a, **k: True)
    ds = download.torchvision_split("svhn", "test", tmp_path, download=False)
    out = download.from_torchvision_arrays(ds.data, ds.labels, "NCHW")
    assert np.array_equal(out["x"], x.transpose(3, 0, 1, 2)) and out["y"].tolist() == [0, 1, 2, 0]


def _write_notmnist_folder(folder: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    images = {}
    for letter in "ABJ":
        (folder / letter).mkdir(parents=True)
        for i in range(6):
            name = f"{letter}/font{i:02d}.png"
            images[name] = rng.integers(0, 256, (28, 28), dtype=np.uint8)
            Image.fromarray(images[name], mode="L").save(folder / name)
    (folder / "A" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # skipped
    return images


def test_notmnist_folder_converts(tmp_path: Path) -> None:
    images = _write_notmnist_folder(tmp_path / "notMNIST_small")
    out = download.from_notmnist_folder(tmp_path / "notMNIST_small")
    assert out["name"].tolist() == sorted(images)
    assert out["x"].shape == (18, 28, 28, 1) and out["x"].dtype == np.uint8
    assert all(np.array_equal(out["x"][i, ..., 0], images[s]) for i, s in enumerate(out["name"]))
    assert out["y"].tolist() == [0] * 6 + [1] * 6 + [9] * 6
    assert out["index"].tolist() == list(range(18))
    with pytest.raises(MissingDataError, match="no letter folders A..J"):
        download.from_notmnist_folder(tmp_path)


def test_online_mode_converts_caches_and_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.delenv("OOD_DATA_ROOT", raising=False)
    monkeypatch.setenv("OOD_DATA", "online")
    monkeypatch.setenv("OOD_CACHE", str(cache))
    written = _write_mnist_raw(cache / "raw", "MNIST")  # "already downloaded": no network
    images = _write_notmnist_folder(cache / "raw" / "notMNIST_small")

    sp = store.load("mnist", "test")
    assert np.array_equal(sp.x[..., 0], written["test"][0])
    assert sp.official_size == 10_000 and sp.coverage_str == "7 of 10,000 (0.1%)"
    assert sp.source.startswith("torchvision.datasets.MNIST download (cached at ")
    entry = files.read_manifest(cache)["mnist_test"]
    assert entry["origin"] == "online" and entry["n"] == 7
    assert entry["sha256"] == hashlib.sha256((cache / "mnist_test.npz").read_bytes()).hexdigest()

    test, train = store.load("notmnist", "test"), store.load("notmnist", "train")
    mask = files.notmnist_test_mask(sorted(images))
    assert (test.n, train.n) == (mask.sum(), (~mask).sum())
    assert np.array_equal(test.index, np.flatnonzero(mask))

    monkeypatch.setenv("OOD_DATA", "auto")  # the cache's manifest is an online one
    assert files.data_mode(cache) == "online"
    assert store.available(cache) == [(d, s) for d in catalogue.DATASETS for s in catalogue.SPLITS
                                     if (d, s) in catalogue.OFFICIAL_SIZES]
    assert np.array_equal(store.load("mnist", "test", cache).x, sp.x)
