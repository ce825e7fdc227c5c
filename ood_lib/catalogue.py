"""The catalogue: every name the book uses for a dataset, a model family, a codec or a profile.

A leaf (no torch, no other ``ood_lib`` module): the book runner and the Sphinx extension read
the profiles here without loading the library. Each name is defined once, here; the modules
that load data, build models or print tables look it up.

- datasets: their keys, the splits kept, their display names, their image geometry, the
  size of each complete split and the held-out training indices;
- the paper's in-distribution -> OOD pairs;
- model families and codecs: display names;
- profiles: ``smoke`` (CI), ``cpu`` (the shipped models) and ``paper`` (a GPU), and the
  variable that lets a build train a missing model.
"""

from __future__ import annotations

PROFILES: tuple[str, ...] = ("smoke", "cpu", "paper")

#: Set to "1" (by ``python -m book_runner --train-missing``) to let a cpu/paper build train a
#: model that has no checkpoint (:func:`ood_lib.zoo.registry.training_allowed`).
TRAIN_MISSING_ENV = "OOD_TRAIN_MISSING"

DATASETS: tuple[str, ...] = ("cifar10", "svhn", "mnist", "fashion_mnist", "notmnist")
SPLITS: tuple[str, ...] = ("train", "val", "test")

DISPLAY_NAMES: dict[str, str] = {
    "cifar10": "CIFAR10",
    "svhn": "SVHN",
    "mnist": "MNIST",
    "fashion_mnist": "FashionMNIST",
    "notmnist": "NotMNIST",
}

#: Image shape (H, W, C) of each dataset.
IMAGE_SHAPES: dict[str, tuple[int, int, int]] = {
    "cifar10": (32, 32, 3),
    "svhn": (32, 32, 3),
    "mnist": (28, 28, 1),
    "fashion_mnist": (28, 28, 1),
    "notmnist": (28, 28, 1),
}

#: Number of images in each complete split (notMNIST: our fixed split of the 18,724 readable
#: images of notMNIST_small, see :mod:`ood_lib.data`).
OFFICIAL_SIZES: dict[tuple[str, str], int] = {
    ("cifar10", "train"): 45_000,  # the official 50,000 less the held-out 5,000
    ("cifar10", "val"): 5_000,
    ("cifar10", "test"): 10_000,
    ("svhn", "train"): 73_257,
    ("svhn", "test"): 26_032,
    ("mnist", "train"): 60_000,
    ("mnist", "test"): 10_000,
    ("fashion_mnist", "train"): 55_000,  # the official 60,000 less the held-out 5,000
    ("fashion_mnist", "val"): 5_000,
    ("fashion_mnist", "test"): 10_000,
    ("notmnist", "train"): 14_962,
    ("notmnist", "val"): 1_881,  # the even positions of the test split
    ("notmnist", "test"): 3_762,
}

#: The held-out validation split: official *training* indices ``[start, stop)`` that no model
#: trains on. Everything fitted on in-distribution data (entropy estimates, KDEs, SVMs,
#: hyperparameters, thresholds) is fitted on these images. notMNIST has no spare training
#: images: its ``val`` split is the even positions of its test split, and a fitted method
#: is evaluated on the odd positions (:func:`ood_lib.data.store.fit_evaluation_split`).
HELD_OUT: dict[str, tuple[int, int]] = {"cifar10": (45_000, 50_000), "fashion_mnist": (55_000, 60_000)}

#: In-distribution training sets and the OOD test set each is paired with in the paper.
PAIRS: dict[str, str] = {"fashion_mnist": "mnist", "notmnist": "mnist", "cifar10": "svhn"}

FAMILY_NAMES: dict[str, str] = {"glow": "Glow", "glow_cv": "CV-Glow", "pixelcnn": "PixelCNN",
                                "vae": "VAE"}

CODEC_NAMES: dict[str, str] = {"png": "PNG", "webp": "WebP", "jpeg2000": "JPEG 2000",
                               "jpegxl": "JPEG XL"}


def geometry(dataset: str) -> tuple[int, int]:
    """``(channels, size)`` of a dataset's images."""
    size, _, channels = IMAGE_SHAPES[dataset]
    return channels, size


def image_kind(dataset: str) -> str:
    """``"rgb"`` or ``"grey"``: model sizes are set per profile and image kind."""
    return "rgb" if geometry(dataset)[0] == 3 else "grey"


def check(profile: str, dataset: str) -> None:
    """Raise ``ValueError`` naming the choices for an unknown profile or dataset."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    if dataset not in IMAGE_SHAPES:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {tuple(IMAGE_SHAPES)}")
