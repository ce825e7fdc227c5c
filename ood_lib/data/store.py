"""The datasets as the book loads them: one checked :class:`Split` per (dataset, split), loaded
from the data root (downloaded first in online mode), and which images a fit may see."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ood_lib.catalogue import DATASETS, DISPLAY_NAMES, HELD_OUT, OFFICIAL_SIZES, SPLITS
from ood_lib.data.download import download
from ood_lib.data.files import (
    ChecksumError,
    DataError,
    MissingDataError,
    UnknownDatasetError,
    checked_data_root,
    data_mode,
    file_stem,
    notmnist_test_mask,
    read_manifest,
    read_npz,
    verify_checksum,
)


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


def _missing_file(name: str, split: str, path: Path, root: Path, listed: bool) -> MissingDataError:
    where = "listed in manifest.json but absent" if listed else "not in the offline copy"
    return MissingDataError(
        f"{DISPLAY_NAMES[name]} {split} ({path.name}) is {where} at {root}. Point OOD_DATA_ROOT "
        f"at a folder holding {path.name} and its manifest.json entry, or run online with "
        "OOD_DATA=online to download the complete set."
    )


# Splits read in this process, keyed by (dataset, split, file, its mtime and size): a chapter asks
# for the same split many times (each model's training split, each scored set), and reading one
# means inflating a compressed .npz (about 1 s for CIFAR-10's training split). A changed file
# has a new key and is read (and checked) again.
_LOADED: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray, str]] = {}


def load(name: str, split: str, data_root: str | Path | None = None) -> Split:
    """Load one split, checked against the manifest (downloading it first in online mode).
    The arrays are the caller's own: copies of the ones this process read before, if any."""
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
    st = path.stat()
    key = (name, split, str(path.resolve()), st.st_mtime_ns, st.st_size, entry["sha256"])
    if key not in _LOADED:
        _LOADED[key] = _read_split(name, split, path, entry)
    x, y, index, source = _LOADED[key]
    return Split(name, split, x.copy(), y.copy(), index.copy(), OFFICIAL_SIZES[(name, split)],
                 source)


def _read_split(name: str, split: str, path: Path,
                entry: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """``(x, y, index, source)`` of one split, read from its checked file ``path``."""
    arrays = read_npz(path, name, entry.get("n"))
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
    return x, y, index, source


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
