"""Online mode: the complete sets downloaded (torchvision, the original notMNIST_small) and written
in the offline layout, registered in the root's manifest with their sha256."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ood_lib.data.files import DataError, DataFormatError, MissingDataError, file_stem, write_npz

NOTMNIST_URL = "http://yaroslavvb.com/upload/notMNIST/notMNIST_small.tar.gz"


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
