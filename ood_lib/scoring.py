r"""Scoring image sets under a trained model: the numbers behind the paper's Figures 1, 2, 4.

An :class:`EvalSet` is a named set of uint8 images in the geometry of the model's training
data, with a plain statement of where it came from and how much of the official split it
holds. The sets for a model trained on dataset $D$ are

- $D$-Train and $D$-Test (in distribution),
- the paper's OOD partner of $D$ (SVHN for CIFAR-10, MNIST for Fashion-MNIST and notMNIST),
- every other dataset's test split, converted to $D$'s geometry (grey 28x28 <-> RGB 32x32 by
  :func:`ood_lib.transforms.grey28_to_rgb32` / :func:`~ood_lib.transforms.rgb32_to_grey28`),
- two synthetic controls, *labelled as such*: the 256 constant images (every level 0..255)
  and uniform noise.

:func:`score` evaluates a set once per model and caches the per-image arrays (``log_px``,
``log_pz``, ``log_det``, ``bpd``) in the profile's results folder, keyed by the model's
registry key, so later chapters (decomposition, remedies, scorecard) reuse them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from torch import Tensor

from ood_lib import data, paper, profiles, results, transforms
from ood_lib.likelihood import evaluate
from ood_lib.metrics import auroc
from ood_lib.registry import TrainedModel

# Images scored per set (the first n of the split; None = all that are here).
MAX_IMAGES: dict[str, int | None] = {"smoke": 200, "cpu": 10_000, "paper": None}


@dataclass(frozen=True)
class EvalSet:
    name: str  # e.g. "svhn_test"
    label: str  # e.g. "SVHN-Test"
    role: str  # "train" | "test" | "ood" (the paper's partner) | "other OOD ..." | "control"
    images: Tensor  # uint8 [N, C, H, W]
    coverage: str  # e.g. "7,136 of 26,032 (27.4%)"

    @property
    def n(self) -> int:
        return len(self.images)


def _convert(split: data.Split, channels: int) -> np.ndarray:
    if split.x.shape[-1] == channels:
        return split.x
    return transforms.grey28_to_rgb32(split.x) if channels == 3 else transforms.rgb32_to_grey28(split.x)


def _from_split(split: data.Split, role: str, channels: int, cap: int | None) -> EvalSet:
    used = split.subset(cap) if cap is not None and cap < split.n else split
    converted = used.x.shape[-1] != channels
    label = used.label + (f" (as {'32x32 RGB' if channels == 3 else '28x28 grey'})" if converted else "")
    coverage = (split.coverage_str if used.n == split.n else
                f"first {used.n:,} of {split.n:,} here (official {split.official_size:,})")
    return EvalSet(f"{used.dataset}_{used.split}", label, role,
                   transforms.to_nchw(_convert(used, channels)), coverage)


def eval_sets(train_dataset: str, profile: str, data_root: str | Path | None = None) -> list[EvalSet]:
    """The sets scored under a model trained on ``train_dataset`` (see the module docstring)."""
    channels, size = profiles.IMAGE_GEOMETRY[train_dataset]
    cap = MAX_IMAGES[profile]
    partner = profiles.PAIRS[train_dataset]
    sets = [
        _from_split(data.load(train_dataset, "train", data_root), "train", channels, cap),
        _from_split(data.load(train_dataset, "test", data_root), "test", channels, cap),
        _from_split(data.load(partner, "test", data_root), "ood", channels, cap),
    ]
    for other in data.DATASETS:
        if other not in (train_dataset, partner):
            converted = profiles.IMAGE_GEOMETRY[other][0] != channels
            role = "other OOD (converted)" if converted else "other OOD"
            sets.append(_from_split(data.load(other, "test", data_root), role, channels, cap))
    shape = (size, size, channels)
    n_noise = 1_000 if cap is None else min(cap, 1_000)
    sets += [
        EvalSet("constant", "Constant images (synthetic)", "control",
                transforms.to_nchw(transforms.constant_images(256, shape, np.arange(256))),
                "256 synthetic images, one per grey level"),
        EvalSet("noise", "Uniform noise (synthetic)", "control",
                transforms.to_nchw(transforms.uniform_noise_images(n_noise, shape, seed=0)),
                f"{n_noise:,} synthetic images, i.i.d. uniform levels"),
    ]
    return sets


def score(trained: TrainedModel, eval_set: EvalSet, profile: str, progress: bool = True) -> dict[str, np.ndarray]:
    """Per-image ``log_px``, ``log_pz``, ``log_det`` (nats) and ``bpd`` of a set, cached."""
    name = f"scores-{trained.key}-{eval_set.name}"
    try:
        cached = results.load_arrays(profile, name)
        if len(cached["bpd"]) == eval_set.n:
            return cached
    except results.MissingResultError:
        pass
    scores = evaluate(trained.model, eval_set.images,
                      n_bits=trained.spec.train_config.n_bits,
                      progress=eval_set.label if progress else False)
    results.save_arrays(profile, name, **scores)
    return scores


def bpd_table(trained: TrainedModel, sets: list[EvalSet], scores: dict[str, dict]) -> pd.DataFrame:
    """The Figure 1 table: mean bits/dim per set, the paper's value where it has one, and
    the AUROC of bits/dim as an OOD score against the in-distribution test set (0.5 = chance;
    below 0.5 = the OOD set looks *more* likely)."""
    test = next(s for s in sets if s.role == "test")
    rows = []
    for s in sets:
        bpd = scores[s.name]["bpd"]
        rows.append({
            "evaluated on": s.label,
            "role": s.role,
            "images used": s.coverage,
            "mean bpd": bpd.mean(),
            "median bpd": np.median(bpd),
            "std bpd": bpd.std(),
            "paper bpd": paper.GLOW_BPD.get((trained.spec.dataset, s.name), np.nan)
            if trained.spec.model == "glow" else np.nan,
            "AUROC vs test": np.nan if s.role in ("train", "test")
            else auroc(scores[test.name]["bpd"], bpd),
        })
    return pd.DataFrame(rows)
