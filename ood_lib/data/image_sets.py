r"""The image sets a model is scored on: named sets of uint8 images in the geometry of the model's
training data, each with its role and how much of the official split it holds.

The sets for a model trained on dataset $D$ (:func:`eval_sets`) are

- $D$-Train and $D$-Test (in distribution) and the paper's OOD partner of $D$ (SVHN for
  CIFAR-10, MNIST for Fashion-MNIST and notMNIST): :func:`paper_sets`;
- every other dataset's test split, converted to $D$'s geometry (grey 28x28 <-> RGB 32x32 by
  :func:`ood_lib.transforms.grey28_to_rgb32` / :func:`~ood_lib.transforms.rgb32_to_grey28`);
- two synthetic controls, *labelled as such*: the 256 constant images (every level 0..255)
  and uniform noise (:func:`control_sets`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

from ood_lib import catalogue, transforms
from ood_lib.data import store

# Images scored per set (the first n of the split; None = all that are here): the paper's test
# and OOD sets and the held-out split; the training split, which only the histograms, the
# train rows of the tables and the second-order moments use (each states its count), and the
# other OOD sets, of which cpu builds score fewer.
MAX_IMAGES: dict[str, int | None] = {"smoke": 200, "cpu": 10_000, "paper": None}
TRAIN_MAX_IMAGES: dict[str, int | None] = {"smoke": 200, "cpu": 2_000, "paper": None}
OTHER_MAX_IMAGES: dict[str, int | None] = {"smoke": 200, "cpu": 1_000, "paper": None}


@dataclass(frozen=True)
class EvalSet:
    name: str  # e.g. "svhn_test"
    label: str  # e.g. "SVHN-Test"
    role: str  # "train" | "val" | "test" | "ood" (the paper's partner) | "other" | "control"
    images: Tensor  # uint8 [N, C, H, W]
    coverage: str  # e.g. "7,136 of 26,032 (27.4%)"

    @property
    def n(self) -> int:
        return len(self.images)


def _convert(split: store.Split, channels: int) -> np.ndarray:
    if split.x.shape[-1] == channels:
        return split.x
    return transforms.grey28_to_rgb32(split.x) if channels == 3 else transforms.rgb32_to_grey28(split.x)


def from_split(split: store.Split, role: str, channels: int, cap: int | None) -> EvalSet:
    """The first ``cap`` images of ``split`` (all: ``None``) in the geometry of ``channels``
    (grey <-> RGB converted, see :mod:`ood_lib.transforms`), with their coverage."""
    used = split.subset(cap) if cap is not None and cap < split.n else split
    converted = used.x.shape[-1] != channels
    label = used.label + (f" (as {'32x32 RGB' if channels == 3 else '28x28 grey'})" if converted else "")
    coverage = (split.coverage_str if used.n == split.n else
                f"first {used.n:,} of {split.n:,} here (official {split.official_size:,})")
    return EvalSet(f"{used.dataset}_{used.split}", label, role,
                   transforms.to_nchw(_convert(used, channels)), coverage)


def paper_sets(train_dataset: str, profile: str, data_root: str | Path | None = None,
               cap: int | None = None) -> list[EvalSet]:
    """The paper's three sets for a model trained on ``train_dataset``: its train and test
    splits and the OOD partner's test split (roles ``train``, ``test``, ``ood``); the first
    ``cap`` images of each (default: the profile's :data:`TRAIN_MAX_IMAGES` of the training
    split, :data:`MAX_IMAGES` of the others)."""
    channels, _ = catalogue.geometry(train_dataset)
    train_cap = cap or TRAIN_MAX_IMAGES[profile]
    cap = cap or MAX_IMAGES[profile]
    return [
        from_split(store.load(train_dataset, "train", data_root), "train", channels, train_cap),
        from_split(store.load(train_dataset, "test", data_root), "test", channels, cap),
        from_split(store.load(catalogue.PAIRS[train_dataset], "test", data_root), "ood",
                    channels, cap),
    ]


def eval_sets(train_dataset: str, profile: str, data_root: str | Path | None = None) -> list[EvalSet]:
    """The sets scored under a model trained on ``train_dataset`` (see the module docstring)."""
    channels, _ = catalogue.geometry(train_dataset)
    cap = OTHER_MAX_IMAGES[profile]
    partner = catalogue.PAIRS[train_dataset]
    sets = paper_sets(train_dataset, profile, data_root)
    for other in catalogue.DATASETS:
        if other not in (train_dataset, partner):
            sets.append(from_split(store.load(other, "test", data_root), "other", channels, cap))
    return sets + list(control_sets(train_dataset, profile).values())


def control_sets(train_dataset: str, profile: str) -> dict[str, EvalSet]:
    """The two synthetic controls in the geometry of ``train_dataset``, labelled as synthetic:
    the 256 constant images and uniform noise (seed 0)."""
    channels, size = catalogue.geometry(train_dataset)
    shape = (size, size, channels)
    cap = MAX_IMAGES[profile]
    n_noise = 1_000 if cap is None else min(cap, 1_000)
    return {
        "constant": EvalSet(
            "constant", "Constant images (synthetic)", "control",
            transforms.to_nchw(transforms.constant_images(256, shape, np.arange(256))),
            "256 synthetic images, one per grey level"),
        "noise": EvalSet(
            "noise", "Uniform noise (synthetic)", "control",
            transforms.to_nchw(transforms.uniform_noise_images(n_noise, shape, seed=0)),
            f"{n_noise:,} synthetic images, i.i.d. uniform levels"),
    }
