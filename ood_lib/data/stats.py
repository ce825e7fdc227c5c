"""What is here and what it looks like: coverage tables of the stored splits, per-pixel moments
and per-channel statistics of a split (on the [0, 1] scale)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ood_lib.catalogue import DATASETS, DISPLAY_NAMES, HELD_OUT, OFFICIAL_SIZES, SPLITS
from ood_lib.data.store import Split, available, load


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
    (H, W, C), accumulated in float64 ``chunk`` images at a time. These describe the data;
    the second-order analysis needs the full covariance in the model's input units, which
    :func:`ood_lib.analysis.second_order.moments` computes (another quantity, other units).
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
