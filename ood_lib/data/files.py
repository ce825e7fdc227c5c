"""The data root and its files: where the root is, the file names, the manifest and its sha256
checks, the ``.npz`` layout, notMNIST's fixed split rule and the errors of reading them."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ood_lib.catalogue import DATASETS, DISPLAY_NAMES, IMAGE_SHAPES, OFFICIAL_SIZES, SPLITS
from ood_lib.paths import PROJECT_ROOT

MODES: tuple[str, ...] = ("auto", "offline", "online")
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


def read_npz(path: Path, dataset: str, expected_n: int | None) -> dict[str, np.ndarray]:
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
