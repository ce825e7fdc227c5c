"""The datasets of the study: where they come from, how they are checked, how much of each is here.

Nalisnick et al. (2019) train flows and VAEs on CIFAR-10 and Fashion-MNIST and evaluate them on
SVHN, MNIST and notMNIST. Every split is handed to the rest of the book as one :class:`Split`:
``x`` uint8 images of shape ``(N, H, W, C)`` (channels last, raw levels 0..255), ``y`` int64
labels 0..9 and ``index`` int64, the position of each image in its official split (-1 unknown).

Two modes meet in one loader
----------------------------
*Offline* (the default where a ``manifest.json`` is found): a data root holds ``.npz`` copies
named ``<dataset>_<split>.npz`` (``notmnist_small.npz`` for both notMNIST splits) and a
``manifest.json`` giving each file's sha256. The network is never touched. A file is checked
against its sha256 once per process (the check is cached by path, mtime and size); a split
without a file raises :class:`MissingDataError`. Offline copies may be partial (CIFAR-10 test:
the first 1,000 of 10,000 images; SVHN test: 7,136 of 26,032; MNIST train: 10,000 of 60,000);
``Split.coverage`` says how much of the official split is present, and the book reports it.

*Online* (``OOD_DATA=online``, or no manifest at the root): the complete sets are downloaded with
torchvision (CIFAR10, SVHN, MNIST, FashionMNIST) and the original ``notMNIST_small.tar.gz``,
converted by :func:`from_torchvision_arrays` / :func:`from_notmnist_folder` into the same
``.npz`` layout, and registered in a ``manifest.json`` with their sha256 (``"origin":
"online"``), so that both modes then read files through the same checked path.

The data root is chosen by :func:`resolve_data_root`: an explicit argument, else
``$OOD_DATA_ROOT``, else ``<project>/../shared/data`` when it holds a ``manifest.json`` (not in
online mode), else the download cache ``$OOD_CACHE`` (default ``<project>/data_cache``). An
explicit root (the argument or ``$OOD_DATA_ROOT``) that does not exist is an error naming it
(:func:`checked_data_root`), never a download into it: only the download cache is created.

The held-out split
------------------
Official CIFAR-10 training images 45,000-49,999 and Fashion-MNIST training images 55,000-59,999
form the ``val`` split (loadable by name: ``load_named("cifar10_val")``); ``train`` is the rest,
and no model trains on ``val``. Whatever is *fitted* on in-distribution data is fitted on
``val`` and checked by :func:`check_fit_split`, which refuses a test split, training images and
a ``val`` split that the given model trained on. notMNIST's ``val`` is the even positions of its
test split; a fitted method is scored on the odd positions (:func:`fit_evaluation_split`).

notMNIST's fixed split
----------------------
notMNIST_small (letters A-J rendered in many fonts, 28x28 grey) has no official train/test
split. We define one by file name, so that it is the same online and offline and does not
depend on file order: an image with file name ``s`` (``"<letter>/<file>.png"``, e.g.
``"A/MDEtMDEtMDAudHRm.png"``) is a *test* image iff

    sha256(utf8(s))[0] < 51,

i.e. the first byte of the hash falls in the lowest 51/256 = 19.9% of its range. Of the 18,724
readable images, 3,762 are test and 14,962 train. ``index`` is the position of the file name in
the sorted list of all readable names. notMNIST_small holds ~490 duplicate images under
different names, so a few identical images may sit on both sides of the split.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ood_lib.catalogue import (
    DATASETS,
    DISPLAY_NAMES,
    HELD_OUT,
    IMAGE_SHAPES,
    OFFICIAL_SIZES,
    SPLITS,
)
from ood_lib.paths import PROJECT_ROOT

MODES: tuple[str, ...] = ("auto", "offline", "online")

NOTMNIST_URL = "http://yaroslavvb.com/upload/notMNIST/notMNIST_small.tar.gz"
NOTMNIST_TEST_THRESHOLD = 51  # test iff the first byte of sha256(file name) is below this
NUM_CLASSES = 10


class DataError(Exception):
    """Base class of every data problem; messages say what was expected and where."""


class UnknownDatasetError(DataError, KeyError):
    """A dataset or split name that the book does not know."""

    __str__ = Exception.__str__  # KeyError would quote the whole message


class MissingDataError(DataError, FileNotFoundError):
    """A data file (or the manifest) is not where the data root says it should be."""


class ChecksumError(DataError):
    """A file's sha256 differs from the one in ``manifest.json`` (or the manifest lacks it)."""


class DataFormatError(DataError, ValueError):
    """A file that is not an ``.npz`` of the documented arrays, shapes and dtypes."""


@dataclass(frozen=True, eq=False)
class Split:
    """One split of one dataset, as far as it is present on this machine."""

    dataset: str
    split: str
    x: np.ndarray  # uint8 (N, H, W, C), channels last
    y: np.ndarray  # int64 (N,)
    index: np.ndarray  # int64 (N,): position in the official split, -1 unknown
    official_size: int
    source: str

    @property
    def n(self) -> int:
        """Number of images here."""
        return int(self.x.shape[0])

    @property
    def coverage(self) -> float:
        """Fraction of the official split that is here."""
        return self.n / self.official_size

    @property
    def coverage_str(self) -> str:
        """E.g. ``"1,000 of 10,000 (10.0%)"``."""
        return f"{self.n:,} of {self.official_size:,} ({100 * self.coverage:.1f}%)"

    @property
    def label(self) -> str:
        """The paper's name for the split, e.g. ``"CIFAR10-Test"``."""
        return f"{DISPLAY_NAMES[self.dataset]}-{self.split.capitalize()}"

    def tensor(self) -> torch.Tensor:
        """The images as a uint8 tensor of shape (N, C, H, W)."""
        return torch.from_numpy(np.ascontiguousarray(self.x.transpose(0, 3, 1, 2)))

    def torch_dataset(self) -> torch.utils.data.TensorDataset:
        """A torch dataset of ``(image uint8 (C, H, W), label)`` pairs, for DataLoaders."""
        return torch.utils.data.TensorDataset(self.tensor(), torch.from_numpy(self.y))

    def subset(self, n: int) -> Split:
        """The first ``n`` images (all of them if there are fewer); ``official_size`` is kept."""
        if n < 0:
            raise ValueError(f"subset size must be >= 0, got {n}")
        return Split(
            self.dataset, self.split, self.x[:n], self.y[:n], self.index[:n],
            self.official_size, self.source,
        )

    def __repr__(self) -> str:
        return f"Split({self.label}: {self.coverage_str}, x {tuple(self.x.shape)}, {self.source})"


# --------------------------------------------------------------------------- names and roots


def check_names(name: str, split: str) -> None:
    """Raise :class:`UnknownDatasetError` unless ``name``/``split`` are known."""
    if name not in DATASETS:
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}"
        )
    if split not in SPLITS:
        raise UnknownDatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if split == "val" and (name, split) not in OFFICIAL_SIZES:
        raise UnknownDatasetError(
            f"{DISPLAY_NAMES[name]} has no held-out split: only "
            f"{', '.join(d for d, s in OFFICIAL_SIZES if s == 'val')} have one")


def file_stem(name: str, split: str) -> str:
    """Stem of the ``.npz`` file holding a split (both notMNIST splits share one file)."""
    check_names(name, split)
    if name == "notmnist":
        return "notmnist_small"
    return f"{name}_train" if split == "val" else f"{name}_{split}"


def cache_root() -> Path:
    """Folder where online mode downloads and converts the complete sets."""
    return Path(os.environ.get("OOD_CACHE", PROJECT_ROOT / "data_cache")).expanduser()


def _env_mode() -> str:
    mode = os.environ.get("OOD_DATA", "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise DataError(f"OOD_DATA={mode!r} is not a data mode; expected one of {MODES}")
    return mode


def resolve_data_root(data_root: str | Path | None = None) -> Path:
    """The data root: argument > ``$OOD_DATA_ROOT`` > ``../shared/data`` > download cache.

    ``<project>/../shared/data`` is used only when it holds a ``manifest.json`` and the mode
    (``$OOD_DATA``) is not ``online``.
    """
    if data_root is not None:
        return Path(data_root).expanduser()
    env = os.environ.get("OOD_DATA_ROOT")
    if env:
        return Path(env).expanduser()
    shared = PROJECT_ROOT.parent / "shared" / "data"
    if _env_mode() != "online" and (shared / "manifest.json").is_file():
        return shared
    return cache_root()


def checked_data_root(data_root: str | Path | None = None) -> Path:
    """:func:`resolve_data_root`, refusing an explicit root that does not exist.

    A root named by the ``data_root`` argument (``--data-root`` of the book runner) or by
    ``$OOD_DATA_ROOT`` must be an existing folder: a typo there must be an error naming the
    path, never a silent switch to online mode that downloads the datasets into it. Only the
    download cache (``$OOD_CACHE``, default ``<project>/data_cache``) is created on demand.
    """
    root = resolve_data_root(data_root)
    if data_root is not None:
        origin = "the data_root parameter (--data-root)"
    elif os.environ.get("OOD_DATA_ROOT"):
        origin = "OOD_DATA_ROOT"
    else:
        return root
    if not root.is_dir() and root.resolve() != cache_root().resolve():
        what = "is not a folder" if root.exists() else "does not exist"
        raise MissingDataError(
            f"the data root {root} given by {origin} {what}. Point it at a folder holding "
            "the offline copies and their manifest.json, or leave it unset to use "
            "../shared/data or the download cache (OOD_DATA=online downloads there)."
        )
    return root


def data_mode(root: Path) -> str:
    """``"offline"`` or ``"online"`` for a resolved root.

    ``$OOD_DATA`` decides when set to ``offline`` or ``online``; under ``auto`` (the default) a
    root is offline when it has a ``manifest.json`` that was not written by online mode.
    """
    mode = _env_mode()
    if mode != "auto":
        return mode
    if not (root / "manifest.json").is_file():
        return "online"
    entries = read_manifest(root).values()
    return "online" if all(e.get("origin") == "online" for e in entries) else "offline"


def read_manifest(data_root: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The root's ``manifest.json``: one entry per file stem (sha256, n, shape, source, ...)."""
    root = checked_data_root(data_root)
    path = root / "manifest.json"
    if not path.is_file():
        raise MissingDataError(
            f"no manifest.json in the data root {root}; expected the offline copies and their "
            "manifest there. Point OOD_DATA_ROOT at a folder of the .npz copies, or run online "
            "with OOD_DATA=online to download the complete sets."
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or not all(isinstance(v, dict) for v in manifest.values()):
        raise DataFormatError(f"{path} must map file stems to objects, got {type(manifest)}")
    return manifest


# --------------------------------------------------------------------------- checksums

_VERIFIED: set[tuple[str, int, int, str]] = set()


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_checksum(path: Path, expected: str) -> None:
    """Raise :class:`ChecksumError` unless ``sha256(path) == expected``; cached per process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size, expected)
    if key in _VERIFIED:
        return
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(
            f"sha256 mismatch for {path}: manifest.json expects {expected}, the file has "
            f"{actual}. The file is corrupt or not the one the manifest describes; restore it "
            "(or, online, delete it to download it again)."
        )
    _VERIFIED.add(key)


# --------------------------------------------------------------------------- notMNIST split


def notmnist_test_mask(names: Iterable[str]) -> np.ndarray:
    """Boolean mask of notMNIST test images: ``sha256(utf8(name))[0] < 51``."""
    return np.array(
        [hashlib.sha256(str(s).encode()).digest()[0] < NOTMNIST_TEST_THRESHOLD for s in names],
        dtype=bool,
    )


# --------------------------------------------------------------------------- reading a file


def _read_npz(path: Path, dataset: str, expected_n: int | None) -> dict[str, np.ndarray]:
    """Read and validate the arrays of one ``.npz`` file."""
    required = ["x", "y", "index"] + (["name"] if dataset == "notmnist" else [])
    layout = f"a NumPy .npz with arrays {', '.join(required)}"
    readable = (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError)
    try:
        f = np.load(path, allow_pickle=False)
    except readable as exc:
        raise DataFormatError(f"{path} is not a readable .npz ({exc}); expected {layout}") from exc
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise DataFormatError(f"{path} holds a single array; expected {layout}")
    with f:
        missing = [k for k in required if k not in f.files]
        if missing:
            raise DataFormatError(
                f"{path} lacks array(s) {', '.join(missing)} (has {', '.join(f.files)}); "
                f"expected {layout}"
            )
        try:
            arrays = {k: f[k] for k in required}
        except readable as exc:
            raise DataFormatError(f"{path}: an array could not be read ({exc})") from exc

    x, y, index = arrays["x"], arrays["y"], arrays["index"]
    shape = IMAGE_SHAPES[dataset]
    if x.dtype != np.uint8:
        raise DataFormatError(f"{path}: x has dtype {x.dtype}, expected uint8 (levels 0..255)")
    if x.ndim != 4 or x.shape[1:] != shape:
        raise DataFormatError(
            f"{path}: x has shape {x.shape}, expected (N, {shape[0]}, {shape[1]}, {shape[2]}) "
            f"for {dataset} (channels last)"
        )
    n = x.shape[0]
    if expected_n is not None and n != expected_n:
        raise DataFormatError(f"{path}: x holds {n} images, manifest.json says {expected_n}")
    for key in required[1:]:
        a = arrays[key]
        if a.shape != (n,):
            raise DataFormatError(f"{path}: {key} has shape {a.shape}, expected ({n},)")
    for key, a in (("y", y), ("index", index)):
        if a.dtype != np.int64:
            raise DataFormatError(f"{path}: {key} has dtype {a.dtype}, expected int64")
    if n and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise DataFormatError(
            f"{path}: labels y span {y.min()}..{y.max()}, expected 0..{NUM_CLASSES - 1}"
        )
    if n and index.min() < -1:
        raise DataFormatError(f"{path}: index has {index.min()}, expected >= -1")
    if dataset == "notmnist" and arrays["name"].dtype.kind != "U":
        raise DataFormatError(f"{path}: name has dtype {arrays['name'].dtype}, expected str")
    return arrays


def _missing_file(name: str, split: str, path: Path, root: Path, listed: bool) -> MissingDataError:
    where = "listed in manifest.json but absent" if listed else "not in the offline copy"
    return MissingDataError(
        f"{DISPLAY_NAMES[name]} {split} ({path.name}) is {where} at {root}. Point OOD_DATA_ROOT "
        f"at a folder holding {path.name} and its manifest.json entry, or run online with "
        "OOD_DATA=online to download the complete set."
    )


def load(name: str, split: str, data_root: str | Path | None = None) -> Split:
    """Load one split, checked against the manifest (downloading it first in online mode)."""
    stem = file_stem(name, split)
    root = checked_data_root(data_root)
    mode = data_mode(root)
    path = root / f"{stem}.npz"
    if mode == "online" and not path.is_file():
        download(name, split, root)
    manifest = read_manifest(root)
    entry = manifest.get(stem)
    if entry is None or not path.is_file():
        raise _missing_file(name, split, path, root, listed=entry is not None)
    if "sha256" not in entry:
        raise ChecksumError(f"manifest.json in {root} has no sha256 for {stem}; cannot verify")
    verify_checksum(path, entry["sha256"])
    arrays = _read_npz(path, name, entry.get("n"))
    x, y, index = arrays["x"], arrays["y"], arrays["index"]
    if name == "notmnist":
        keep = notmnist_test_mask(arrays["name"])
        if split == "train":
            keep = ~keep
        elif split == "val":  # the even positions of the test split
            keep = np.flatnonzero(keep)[0::2]
        x, y, index = x[keep], y[keep], index[keep]
    elif name in HELD_OUT and split in ("train", "val"):
        start, stop = HELD_OUT[name]
        held = (index >= start) & (index < stop)
        keep = held if split == "val" else ~held
        x, y, index = x[keep], y[keep], index[keep]
    if entry.get("origin") == "online":
        source = f"{entry.get('downloader', 'download')} (cached at {path})"
    else:
        source = f"offline copy {path}"
    return Split(name, split, x, y, index, OFFICIAL_SIZES[(name, split)], source)


def load_named(name: str, data_root: str | Path | None = None) -> Split:
    """A split by its book name, ``"<dataset>_<split>"``, e.g. ``"cifar10_val"``."""
    dataset, _, split = name.rpartition("_")
    if not dataset:
        raise UnknownDatasetError(f"{name!r} is not '<dataset>_<split>', e.g. 'cifar10_val'")
    return load(dataset, split, data_root)


class FitDataError(DataError, ValueError):
    """Images that a fit must not see: a test split, or images the model trained on."""


def check_fit_split(split: Split, trained_index_range: tuple[int, int] | None = None) -> Split:
    """Return ``split`` if a quantity may be fitted on it, else raise :class:`FitDataError`.

    Fits (entropy estimates, KDEs, SVMs, hyperparameters, thresholds) take the held-out ``val``
    split only; ``trained_index_range`` is ``[start, stop)`` of the official training indices
    the model trained on (``record["train_data"]["index_range"]``; ``None`` for a model whose
    record predates the held-out split, i.e. trained on the whole training split), and a
    ``val`` split inside it is refused too.
    """
    if split.split != "val":
        raise FitDataError(
            f"{split.label}: fits use the held-out split only ({split.dataset}_val), never "
            f"{'a test split' if split.split == 'test' else 'training images'}")
    if split.dataset in HELD_OUT:
        start, stop = trained_index_range or (0, OFFICIAL_SIZES[(split.dataset, "train")]
                                              + OFFICIAL_SIZES[(split.dataset, "val")])
        if ((split.index >= start) & (split.index < stop)).any():
            raise FitDataError(
                f"{split.label}: the model trained on official training images "
                f"{start:,}-{stop - 1:,}, which include held-out images; retrain it on the "
                f"reduced split before fitting anything on {split.dataset}_val")
    return split


def fit_evaluation_split(split: Split) -> Split:
    """The part of a test split a fitted method is scored on: all of it, except for notMNIST,
    whose even positions are its ``val`` split (the odd positions are returned)."""
    if split.split != "test":
        raise ValueError(f"{split.label} is not a test split")
    if split.dataset != "notmnist":
        return split
    odd = slice(1, None, 2)
    return Split(split.dataset, "test", split.x[odd], split.y[odd], split.index[odd],
                 split.official_size - OFFICIAL_SIZES[("notmnist", "val")], split.source)


def available(data_root: str | Path | None = None) -> list[tuple[str, str]]:
    """The (dataset, split) pairs that :func:`load` can give here.

    Online: every pair (downloads on demand). Offline: pairs whose file is present and listed
    in the manifest (checksums are verified on load, not here).
    """
    root = checked_data_root(data_root)
    pairs = [(d, s) for d in DATASETS for s in SPLITS if (d, s) in OFFICIAL_SIZES]
    if data_mode(root) == "online":
        return pairs
    manifest = read_manifest(root)
    return [
        (d, s) for d, s in pairs
        if file_stem(d, s) in manifest and (root / f"{file_stem(d, s)}.npz").is_file()
    ]


def coverage_table(
    data_root: str | Path | None = None, splits: Mapping[tuple[str, str], Split] | None = None
) -> pd.DataFrame:
    """One row per dataset/split: images here, official size, coverage and source.

    ``splits`` are already loaded splits to describe; by default every available split is
    loaded (and so verified). Splits that are not here get 0 images.
    """
    if splits is None:
        splits = {pair: load(*pair, data_root) for pair in available(data_root)}
    rows = []
    for d in DATASETS:
        for s in SPLITS:
            if (d, s) not in OFFICIAL_SIZES:
                continue
            official = OFFICIAL_SIZES[(d, s)]
            sp = splits.get((d, s))
            n = sp.n if sp is not None else 0
            rows.append({
                "dataset": DISPLAY_NAMES[d], "split": s, "images here": n,
                "official size": official, "coverage": n / official,
                "source": sp.source if sp is not None else "not in this data root",
            })
    return pd.DataFrame(rows)


def held_out_table(data_root: str | Path | None = None) -> pd.DataFrame:
    """One row per dataset with a held-out split: which images it holds, how many, and the
    training images left beside it (loaded, so the counts are this machine's)."""
    rows = []
    for name in (d for d in DATASETS if (d, "val") in OFFICIAL_SIZES):
        val, train = load(name, "val", data_root), load(name, "train", data_root)
        if name in HELD_OUT:
            start, stop = HELD_OUT[name]
            what = f"official training images {start:,}-{stop - 1:,}"
        else:
            what = "the even positions of its test split (no spare training images)"
        rows.append({"dataset": DISPLAY_NAMES[name], "held-out split": what,
                     "held-out images": val.n, "training images": train.n,
                     "indices overlap": bool(np.intersect1d(val.index, train.index).size)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- statistics


def pixel_moments(split: Split, chunk: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    r"""Per-dimension mean and unbiased variance across images, on the [0, 1] scale.

    With image $i$ scaled to $x_i \in [0, 1]^{H \times W \times C}$ (stored level / 255),
    returns $\bar x[h,w,c] = \frac1N \sum_i x_i[h,w,c]$ and
    $\sigma^2[h,w,c] = \frac{1}{N-1} \sum_i (x_i[h,w,c] - \bar x[h,w,c])^2$, both of shape
    (H, W, C), accumulated in float64 ``chunk`` images at a time.
    """
    n = split.n
    if n < 2:
        raise ValueError(f"{split.label}: need at least 2 images for variances, got {n}")
    s1 = np.zeros(split.x.shape[1:], dtype=np.float64)
    s2 = np.zeros_like(s1)
    for i in range(0, n, chunk):
        block = split.x[i:i + chunk].astype(np.float64) / 255.0
        s1 += block.sum(axis=0)
        s2 += np.square(block).sum(axis=0)
    mean = s1 / n
    var = np.maximum(s2 - n * np.square(mean), 0.0) / (n - 1)
    return mean, var


def channel_stats(split: Split, chunk: int = 5000) -> dict[str, Any]:
    r"""Per-channel mean/std and mean per-pixel variance, on the [0, 1] scale.

    - ``channel_mean[c]``, ``channel_std[c]``: mean and standard deviation of channel ``c``
      pooled over all images and pixel positions (the usual normalisation constants);
    - ``pixel_variance_mean`` $= \frac{1}{D} \sum_{d=1}^{D} \sigma^2_d
      = \operatorname{Tr}(\Sigma)/D$, the variance across images of each of the $D = HWC$
      dimensions (see :func:`pixel_moments`) averaged over dimensions: the quantity through
      which Section 5 of the paper ties the likelihood gap between two datasets to the data.
    """
    mean, var = pixel_moments(split, chunk)
    n = split.n
    channel_mean = mean.mean(axis=(0, 1))
    # pooled second moment E[x^2] of each channel, from the per-dimension moments
    second = (var * (n - 1) / n + np.square(mean)).mean(axis=(0, 1))
    channel_std = np.sqrt(np.maximum(second - np.square(channel_mean), 0.0))
    return {
        "dataset": split.dataset,
        "split": split.split,
        "label": split.label,
        "n": n,
        "channel_mean": channel_mean.tolist(),
        "channel_std": channel_std.tolist(),
        "pixel_variance_mean": float(var.mean()),
    }


# --------------------------------------------------------------------------- online mode


def from_torchvision_arrays(
    data: np.ndarray | torch.Tensor, targets: Any, layout: str
) -> dict[str, np.ndarray]:
    """Convert a torchvision dataset's ``data``/``targets`` into the ``.npz`` arrays.

    ``layout`` is how ``data`` is stored: ``"NHWC"`` (CIFAR10), ``"NCHW"`` (SVHN) or ``"NHW"``
    (MNIST, FashionMNIST). Returns ``x`` uint8 (N, H, W, C), ``y`` int64 and
    ``index = arange(N)`` (complete sets keep their official order).
    """
    x = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if x.dtype != np.uint8:
        raise DataFormatError(f"torchvision data has dtype {x.dtype}, expected uint8")
    if layout == "NCHW" and x.ndim == 4:
        x = x.transpose(0, 2, 3, 1)
    elif layout == "NHW" and x.ndim == 3:
        x = x[..., None]
    elif not (layout == "NHWC" and x.ndim == 4):
        raise DataFormatError(
            f"torchvision data of shape {x.shape} does not match layout {layout!r}; "
            "expected NHWC (4-D), NCHW (4-D) or NHW (3-D)"
        )
    y = (targets.numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets))
    y = y.astype(np.int64).reshape(-1)
    if y.shape[0] != x.shape[0]:
        raise DataFormatError(f"{x.shape[0]} images but {y.shape[0]} labels")
    return {"x": np.ascontiguousarray(x), "y": y, "index": np.arange(len(y), dtype=np.int64)}


def from_notmnist_folder(path: str | Path) -> dict[str, np.ndarray]:
    """Read an extracted ``notMNIST_small`` folder (``A/ .. J/`` of 28x28 PNGs).

    Unreadable files (the archive holds two corrupt PNGs) are skipped. Images are ordered by
    file name ``"<letter>/<file>"``; ``index`` is the position in that order, ``y`` the letter
    (A=0 .. J=9) and ``name`` the file name, from which the split is drawn.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    letters = "ABCDEFGHIJ"
    files = sorted(
        f"{d.name}/{f.name}"
        for d in root.iterdir() if d.is_dir() and d.name in letters
        for f in d.iterdir() if f.is_file()
    )
    if not files:
        raise MissingDataError(f"no letter folders A..J with images under {root}")
    names, images = [], []
    for name in files:
        try:
            with Image.open(root / name) as img:
                a = np.asarray(img if img.mode == "L" else img.convert("L"), dtype=np.uint8)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
            continue
        if a.shape == (28, 28):
            names.append(name)
            images.append(a)
    return {
        "x": np.stack(images)[..., None],
        "y": np.array([letters.index(s[0]) for s in names], dtype=np.int64),
        "index": np.arange(len(names), dtype=np.int64),
        "name": np.array(names),
    }


_TORCHVISION = {  # dataset -> (class name, storage layout of .data)
    "cifar10": ("CIFAR10", "NHWC"),
    "svhn": ("SVHN", "NCHW"),
    "mnist": ("MNIST", "NHW"),
    "fashion_mnist": ("FashionMNIST", "NHW"),
}


def torchvision_split(name: str, split: str, raw_dir: Path, download: bool = True) -> Any:
    """The torchvision dataset object of one split, stored under ``raw_dir``."""
    import torchvision.datasets as tvd

    cls_name, _ = _TORCHVISION[name]
    cls = getattr(tvd, cls_name)
    try:
        if name == "svhn":
            return cls(str(raw_dir), split=split, download=download)
        return cls(str(raw_dir), train=split == "train", download=download)
    except ImportError as exc:  # SVHN's .mat files need scipy
        raise DataError(f"reading {cls_name} needs {exc.name}: pip install {exc.name}") from exc
    except RuntimeError as exc:
        raise MissingDataError(
            f"{cls_name} {split} could not be read from {raw_dir}: {exc}"
        ) from exc


def write_npz(root: Path, stem: str, arrays: dict[str, np.ndarray], **entry: Any) -> Path:
    """Save arrays as ``<root>/<stem>.npz`` and record its sha256 in ``<root>/manifest.json``."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{stem}.npz"
    tmp = root / f".{stem}.tmp.npz"
    np.savez(tmp, **arrays)
    tmp.replace(path)
    manifest_path = root / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest[stem] = {
        "file": path.name,
        "n": int(arrays["x"].shape[0]),
        "shape": list(arrays["x"].shape[1:]),
        "dtype": "uint8",
        "arrays": sorted(arrays),
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "lossless": True,
        **entry,
    }
    tmp_manifest = root / ".manifest.tmp.json"
    tmp_manifest.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    tmp_manifest.replace(manifest_path)
    return path


def download(name: str, split: str, root: Path) -> Path:
    """Online mode: fetch a complete split, convert it and register it under ``root``."""
    stem = file_stem(name, split)
    raw_dir = root / "raw"
    if name == "notmnist":
        from torchvision.datasets.utils import download_and_extract_archive

        folder = raw_dir / "notMNIST_small"
        if not folder.is_dir():
            download_and_extract_archive(NOTMNIST_URL, str(raw_dir))
        arrays = from_notmnist_folder(folder)
        downloader = f"notMNIST_small.tar.gz download from {NOTMNIST_URL}"
    else:
        # the held-out split is part of the official training split's file
        ds = torchvision_split(name, "train" if split == "val" else split, raw_dir, download=True)
        cls_name, layout = _TORCHVISION[name]
        targets = ds.labels if name == "svhn" else ds.targets
        arrays = from_torchvision_arrays(ds.data, targets, layout)
        downloader = f"torchvision.datasets.{cls_name} download"
    n = int(arrays["x"].shape[0])
    return write_npz(
        root, stem, arrays, origin="online", downloader=downloader, source=downloader,
        coverage=f"all {n:,} images",
    )
