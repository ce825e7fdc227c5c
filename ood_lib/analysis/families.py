r"""Not just flows: the phenomenon under PixelCNN and a VAE (the paper's Figure 3).

Both families model the *integer* image directly (a discrete likelihood, no dequantization
constant; :mod:`ood_lib.models.base`), so their bits/dim sit on the same scale as a flow's
$-\log_2 p(\tilde x)/D + 8$ and one table compares all three. PixelCNN's $\log P(x)$ is exact;
the VAE's is the importance-weighted lower bound $\mathcal L_k$ (Burda et al., 2016) with the
model's ``k_eval`` samples. The bound's slack is not the same for every input: the encoder
$q(z \mid x)$ was fitted to training images and may fit OOD inputs worse, which would make
$\mathcal L_k$ looser on OOD data; :func:`k_sweep` measures how the estimate moves with $k$ on
both sets.

**How strongly a family prefers the OOD set** (:func:`preference_strength`): with bits/dim as
the OOD score, $\text{strength} = 0.5 - \text{AUROC}$ ($> 0$: the OOD set looks *more*
likely; 0.5 at most). Two families are compared on the same images by the paired bootstrap of
:func:`ood_lib.metrics.paired_bootstrap_auroc_difference`; a difference whose 95% interval holds
0 is not resolved by these sets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ood_lib import catalogue, records, scoring
from ood_lib.metrics import auroc, bootstrap_auroc, paired_bootstrap_auroc_difference
from ood_lib.zoo.registry import TrainedModel


def family_scores(pairs: Mapping[tuple[str, str], scoring.ScoredPair]) -> list[records.FamilyScore]:
    """Mean bits/dim per (family, training set) on train, test and OOD (infinite values left
    out) and the AUROC of bits/dim as an OOD score."""
    rows = []
    for (model, dataset), pair in pairs.items():
        mean = {r: scoring.finite_mean(pair.scores[r]["bpd"])[0] for r in ("train", "test", "ood")}
        rows.append(records.FamilyScore(
            family=model, trained_on=dataset, train_bpd=mean["train"], test_bpd=mean["test"],
            ood_bpd=mean["ood"],
            auroc=auroc(pair.scores["test"]["bpd"], pair.scores["ood"]["bpd"])))
    return rows


def bpd_table(pairs: Mapping[tuple[str, str], scoring.ScoredPair]) -> pd.DataFrame:
    """:func:`family_scores` as a display table, with the OOD - test gap and the images used."""
    table = records.frame(family_scores(pairs))
    table["family"] = table["family"].map(catalogue.FAMILY_NAMES)
    table["trained on"] = table.pop("trained_on").map(catalogue.DISPLAY_NAMES)
    table.insert(2, "OOD set", [p.sets["ood"].label for p in pairs.values()])
    table = table.rename(columns={"train_bpd": "train bpd", "test_bpd": "test bpd",
                                  "ood_bpd": "OOD bpd", "auroc": "AUROC"})
    table.insert(6, "OOD − test", table["OOD bpd"] - table["test bpd"])
    table["images (train / test / OOD)"] = [" / ".join(
        f"{len(p.scores[r]['bpd']):,}" for r in ("train", "test", "ood")) for p in pairs.values()]
    return table


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


def preference_strength(pairs: Mapping[str, scoring.ScoredPair], reference: str,
                        n_boot: int = 1000, seed: int = 0
                        ) -> tuple[list[records.Strength], list[records.StrengthDifference]]:
    """Per family (``pairs``: registry model name -> its scored pair, all on the same test and
    OOD images): the strength $0.5 - $ AUROC of bits/dim with its 95% bootstrap interval and
    the test bits/dim; and, for every other family, the paired-bootstrap difference
    ``strength(reference) - strength(other)`` with its interval and whether it is resolved
    (the interval excludes 0)."""
    strengths, diffs = [], []
    for model, pair in pairs.items():
        test, ood = pair.scores["test"]["bpd"], pair.scores["ood"]["bpd"]
        point, lo, hi = bootstrap_auroc(test, ood, n_boot=n_boot, seed=seed)
        strengths.append(records.Strength(family=model, strength=0.5 - point, lo=0.5 - hi,
                                          hi=0.5 - lo, test_bpd=scoring.finite_mean(test)[0]))
    ref = pairs[reference]
    for model, pair in pairs.items():
        if model == reference:
            continue
        # strength_ref - strength_other = AUROC_other - AUROC_ref
        d, lo, hi = paired_bootstrap_auroc_difference(
            pair.scores["test"]["bpd"], pair.scores["ood"]["bpd"],
            ref.scores["test"]["bpd"], ref.scores["ood"]["bpd"], n_boot=n_boot, seed=seed)
        diffs.append(records.StrengthDifference(reference=reference, other=model, difference=d,
                                                lo=lo, hi=hi, resolved=bool(lo > 0 or hi < 0)))
    return strengths, diffs
