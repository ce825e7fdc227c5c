r"""Detection metrics with the OOD set as the positive class.

A detector gives every input a score $s$; larger means "more OOD". With $n_+$ OOD and $n_-$
in-distribution scores:

- **AUROC** $= P(s_+ > s_-) + \tfrac12 P(s_+ = s_-)$, the Mann-Whitney statistic
  (0.5 = chance, 1 = perfect, below 0.5 = the detector ranks the *wrong* way: what happens
  to likelihood in the paper);
- **AUPR** the area under precision-recall (average precision, OOD positive);
- **FPR@95%TPR** the fraction of in-distribution inputs flagged when the threshold catches
  95% of the OOD inputs.

For likelihood models the score is bits/dim (high bits/dim = unlikely = flagged). A score of
$+\infty$ (a float32 overflow: "impossibly unlikely") is a valid score that ranks above every
finite one; NaN is an error.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


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
    """Average precision with OOD as positive: mean precision at each OOD input's rank."""
    s, y = _scores(in_dist, ood)
    order = np.argsort(-s, kind="stable")
    y = y[order]
    precision = np.cumsum(y) / np.arange(1, len(y) + 1)
    return float(precision[y == 1].mean())


def fpr_at_tpr(in_dist: np.ndarray, ood: np.ndarray, tpr: float = 0.95) -> float:
    """Fraction of in-distribution scores >= the threshold that flags ``tpr`` of the OOD ones."""
    _scores(in_dist, ood)
    threshold = np.quantile(np.asarray(ood, float), 1.0 - tpr, method="lower")
    return float(np.mean(np.asarray(in_dist, float) >= threshold))


def detection_report(in_dist: np.ndarray, ood: np.ndarray) -> dict[str, float]:
    """AUROC, AUPR and FPR@95%TPR in one dict."""
    return {"auroc": auroc(in_dist, ood), "aupr": aupr(in_dist, ood),
            "fpr95": fpr_at_tpr(in_dist, ood)}
