r"""Not just flows: the phenomenon under PixelCNN and a VAE (the paper's Figure 3).

Both families model the *integer* image directly (a discrete likelihood, no dequantization
constant; :mod:`ood_lib.models.base`), so their bits/dim sit on the same scale as a flow's
$-\log_2 p(\tilde x)/D + 8$ and one table compares all three. PixelCNN's $\log P(x)$ is exact;
the VAE's is the importance-weighted lower bound $\mathcal L_k$ (Burda et al., 2016) with the
model's ``k_eval`` samples. The bound's slack is not the same for every input: the encoder
$q(z \mid x)$ was fitted to training images and fits OOD inputs worse, so $\mathcal L_k$ is looser
on OOD data and biases the VAE's OOD bits/dim *upward* (towards looking less likely).
:func:`k_sweep` shows how the estimate moves with $k$ on both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ood_lib import data, scoring
from ood_lib.metrics import auroc
from ood_lib.registry import TrainedModel

FAMILY_NAMES = {"glow": "Glow", "glow_cv": "CV-Glow", "pixelcnn": "PixelCNN", "vae": "VAE"}


def bpd_table(pairs: Mapping[tuple[str, str], scoring.ScoredPair]) -> pd.DataFrame:
    """Mean bits/dim per (family, training set) on train, test and OOD, the OOD - test gap,
    the AUROC of bits/dim as an OOD score, and the images used."""
    rows = []
    for (model, dataset), pair in pairs.items():
        mean = {r: scoring.finite_mean(pair.scores[r]["bpd"])[0] for r in ("train", "test", "ood")}
        rows.append({
            "family": FAMILY_NAMES[model], "trained on": data.DISPLAY_NAMES[dataset],
            "OOD set": pair.sets["ood"].label,
            "train bpd": mean["train"], "test bpd": mean["test"], "OOD bpd": mean["ood"],
            "OOD − test": mean["ood"] - mean["test"],
            "AUROC": auroc(pair.scores["test"]["bpd"], pair.scores["ood"]["bpd"]),
            "images (train / test / OOD)": " / ".join(
                f"{len(pair.scores[r]['bpd']):,}" for r in ("train", "test", "ood")),
        })
    return pd.DataFrame(rows)


def k_sweep(trained: TrainedModel, images: Mapping[str, np.ndarray], ks: Sequence[int],
            profile: str) -> pd.DataFrame:
    """Mean importance-weighted bound L_k (nats per image) and its bits/dim for each k, on
    nested samples, per set (``images``: label -> uint8 ``[N, C, H, W]``); cached by content."""
    rows = []
    for label, x in images.items():
        curve = scoring.cached(
            profile, f"iw-curve-{trained.key}-{scoring.images_sha256(x)[:12]}",
            scoring.cache_key(trained, x, ks=",".join(map(str, ks))),
            lambda x=x: {"L": trained.model.iw_curve(x, ks).detach().cpu().numpy()})["L"]
        n_dims = int(np.prod(x.shape[1:]))
        for j, k in enumerate(ks):
            rows.append({"set": label, "k": k, "images": len(x), "mean L_k (nats)": curve[:, j].mean(),
                         "bpd": float(trained.model.bits_per_dim(curve[:, j].mean(), n_dims))})
    return pd.DataFrame(rows)
