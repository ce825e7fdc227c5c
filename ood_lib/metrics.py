r"""Detection metrics with the OOD set as the positive class.

A detector gives every input a score $s$; larger means "more OOD". With $n_+$ OOD and $n_-$
in-distribution scores:

- **AUROC** $= P(s_+ > s_-) + \tfrac12 P(s_+ = s_-)$, the Mann-Whitney statistic
  (0.5 = chance, 1 = perfect, below 0.5 = the detector ranks the *wrong* way: what happens
  to likelihood in the paper);
- **AUPR** the area under precision-recall (average precision, OOD positive), as
  scikit-learn's ``average_precision_score`` defines it;
- **FPR@95%TPR** the fraction of in-distribution inputs flagged when the threshold catches
  95% of the OOD inputs.

For likelihood models the score is bits/dim (high bits/dim = unlikely = flagged). A score of
$+\infty$ (a float32 overflow: "impossibly unlikely") is a valid score that ranks above every
finite one; NaN is an error.

:func:`detection_row` is every table's row: AUROC with a 95% percentile bootstrap interval
(:func:`bootstrap_auroc`: both sets resampled with replacement, independently), AUPR and FPR
at 95% TPR; :func:`roc_curve` gives the curve for plotting.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata
from sklearn import metrics as skm
from sklearn.metrics import average_precision_score


def _scores(in_dist: np.ndarray, ood: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.concatenate([np.asarray(in_dist, float), np.asarray(ood, float)])
    if s.size == 0 or len(in_dist) == 0 or len(ood) == 0:
        raise ValueError("need at least one in-distribution and one OOD score")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN (infinite scores are fine: they rank last or first)")
    return s, np.r_[np.zeros(len(in_dist)), np.ones(len(ood))]


def auroc(in_dist: np.ndarray, ood: np.ndarray) -> float:
    """Area under the ROC curve via ranks (ties count one half)."""
    s, y = _scores(in_dist, ood)
    ranks = rankdata(s)
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def aupr(in_dist: np.ndarray, ood: np.ndarray) -> float:
    """Average precision with OOD as positive, scikit-learn's definition (one threshold per
    distinct score, so tied scores share a precision), computed on ranks so that infinite
    scores keep their order."""
    s, y = _scores(in_dist, ood)
    return float(average_precision_score(y, rankdata(s)))


def fpr_at_tpr(in_dist: np.ndarray, ood: np.ndarray, tpr: float = 0.95) -> float:
    """Fraction of in-distribution scores >= the largest threshold that flags at least ``tpr``
    of the OOD ones (the first ROC point with TPR >= ``tpr``)."""
    _scores(in_dist, ood)
    ood_sorted = np.sort(np.asarray(ood, float))
    n_flagged = math.ceil(tpr * len(ood_sorted) - 1e-9)  # OOD inputs the threshold must catch
    threshold = ood_sorted[len(ood_sorted) - n_flagged]
    return float(np.mean(np.asarray(in_dist, float) >= threshold))


def auroc_of_counts(c_in: np.ndarray, c_ood: np.ndarray) -> np.ndarray:
    r"""AUROC of samples given as counts per distinct score value, values sorted ascending
    (``[..., V]``, e.g. bootstrap resamples): with $b_v$ the in-distribution scores below $v$,
    $\text{AUROC} = \sum_v c^+_v (b_v + c^-_v / 2) / (n_- n_+)$, one pass instead of a sort.
    Counts are integers, so the sum is exact and equals :func:`auroc` of the same scores."""
    below = np.cumsum(c_in, axis=-1) - c_in  # b_v
    return (c_ood * (below + 0.5 * c_in)).sum(axis=-1) / (c_in.sum(-1) * c_ood.sum(-1))


def paired_bootstrap_auroc_difference(
    test_a: np.ndarray, ood_a: np.ndarray, test_b: np.ndarray, ood_b: np.ndarray,
    n_boot: int = 1000, seed: int = 0,
) -> tuple[float, float, float]:
    r"""$\Delta = \text{AUROC}_a - \text{AUROC}_b$ of two detectors scored on the *same* images,
    and its 95% percentile interval from a paired bootstrap: each resample draws the test
    images and the OOD images with replacement once, and both detectors are scored on those
    same draws (``test_a[i]`` and ``test_b[i]`` are one image's scores under each detector).
    Pairing removes the sampling noise of the image sets that both AUROCs share."""
    a_in, a_out = np.asarray(test_a, float), np.asarray(ood_a, float)
    b_in, b_out = np.asarray(test_b, float), np.asarray(ood_b, float)
    if a_in.shape != b_in.shape or a_out.shape != b_out.shape:
        raise ValueError("paired detectors must score the same images: shapes "
                         f"{a_in.shape}/{b_in.shape} and {a_out.shape}/{b_out.shape} differ")
    point = auroc(a_in, a_out) - auroc(b_in, b_out)
    # each detector's scores as indices into its sorted distinct values
    coded = []
    for s_in, s_out in ((a_in, a_out), (b_in, b_out)):
        values, inverse = np.unique(np.r_[s_in, s_out], return_inverse=True)
        coded.append((inverse[: len(s_in)], inverse[len(s_in):], len(values)))
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for r in range(n_boot):
        i = rng.integers(0, len(a_in), len(a_in))  # one draw of test images, for both
        j = rng.integers(0, len(a_out), len(a_out))  # one draw of OOD images, for both
        a, b = (auroc_of_counts(np.bincount(u_in[i], minlength=n_u),
                                np.bincount(u_out[j], minlength=n_u))
                for u_in, u_out, n_u in coded)
        diffs[r] = a - b
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float(point), float(lo), float(hi)


# Bound on the elements of one bootstrap chunk (resamples x distinct scores): ~32 MB of int64.
_BOOT_CHUNK = 4_000_000


def bootstrap_auroc(in_dist: np.ndarray, ood: np.ndarray, n_boot: int = 200,
                    seed: int = 0) -> tuple[float, float, float]:
    r"""AUROC and its 95% percentile bootstrap interval: each resample draws $n_-$ in-distribution
    and $n_+$ OOD scores with replacement, independently. A resample is a count $c_v$ per
    distinct score value $v$, so its AUROC is one weighted pass over sorted values
    (:func:`auroc_of_counts`), vectorised over resamples."""
    point = auroc(in_dist, ood)  # validates (NaN, empty sets)
    a, b = np.asarray(in_dist, float), np.asarray(ood, float)
    values, inverse = np.unique(np.r_[a, b], return_inverse=True)
    u_in, u_ood = inverse[: len(a)], inverse[len(a):]
    n_u = len(values)
    rng = np.random.default_rng(seed)
    boot = np.empty(n_boot)
    chunk = max(1, _BOOT_CHUNK // max(n_u, len(a), len(b)))
    for start in range(0, n_boot, chunk):
        n_b = min(chunk, n_boot - start)
        offset = (np.arange(n_b) * n_u)[:, None]
        # c_in[r, v], c_ood[r, v]: draws of value v in resample r: [n_b, n_u]
        c_in = np.bincount((u_in[rng.integers(0, len(a), (n_b, len(a)))] + offset).ravel(),
                           minlength=n_b * n_u).reshape(n_b, n_u)
        c_ood = np.bincount((u_ood[rng.integers(0, len(b), (n_b, len(b)))] + offset).ravel(),
                            minlength=n_b * n_u).reshape(n_b, n_u)
        boot[start : start + n_b] = auroc_of_counts(c_in, c_ood)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return point, float(lo), float(hi)


def detection_row(in_dist: np.ndarray, ood: np.ndarray, n_boot: int = 200,
                  seed: int = 0) -> dict[str, float]:
    """AUROC with its bootstrap interval, AUPR and FPR at 95% TPR (OOD positive)."""
    point, lo, hi = bootstrap_auroc(in_dist, ood, n_boot=n_boot, seed=seed)
    return {"auroc": point, "auroc_lo": lo, "auroc_hi": hi, "aupr": aupr(in_dist, ood),
            "fpr95": fpr_at_tpr(in_dist, ood)}


def roc_curve(in_dist: np.ndarray, ood: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) of the ROC curve, via scikit-learn. scikit-learn rejects infinite scores;
    the curve depends only on the order of the scores, so it is given their dense ranks
    (ties kept), which places $+\\infty$ above every finite score as the metrics do."""
    auroc(in_dist, ood)  # validates (NaN, empty sets)
    a, b = np.asarray(in_dist, float), np.asarray(ood, float)
    labels = np.r_[np.zeros(len(a)), np.ones(len(b))]
    fpr, tpr, _ = skm.roc_curve(labels, rankdata(np.r_[a, b], method="dense"))
    return fpr, tpr
