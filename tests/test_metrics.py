"""Detection metrics against brute force and closed-form cases."""

from __future__ import annotations

import numpy as np
import pytest

from ood_lib.metrics import aupr, auroc, auroc_of_counts, detection_row, fpr_at_tpr


def test_auroc_matches_brute_force_pair_count() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 20, 50).astype(float), rng.integers(5, 25, 40).astype(float)
    pairs = (b[:, None] > a[None, :]).mean() + 0.5 * (b[:, None] == a[None, :]).mean()
    assert auroc(a, b) == pytest.approx(pairs, abs=1e-12)


def test_perfect_reversed_and_chance() -> None:
    low, high = np.arange(10.0), np.arange(10.0) + 100
    assert auroc(low, high) == 1.0 and auroc(high, low) == 0.0
    assert auroc(np.ones(5), np.ones(7)) == 0.5
    assert aupr(low, high) == pytest.approx(1.0, abs=1e-12)
    assert fpr_at_tpr(low, high) == 0.0 and fpr_at_tpr(high, low) == 1.0


def test_aupr_by_hand() -> None:
    # ranking (desc): ood(3), in(2), ood(1): precision at OOD hits = 1, 2/3
    assert aupr(np.array([2.0]), np.array([3.0, 1.0])) == pytest.approx((1 + 2 / 3) / 2)


def test_report_keys_and_bad_input() -> None:
    assert set(detection_row(np.zeros(3), np.ones(3))) == {"auroc", "auroc_lo", "auroc_hi", "aupr",
                                                           "fpr95"}
    with pytest.raises(ValueError, match="NaN"):
        auroc(np.array([np.nan]), np.ones(2))
    with pytest.raises(ValueError, match="at least one"):
        auroc(np.array([]), np.ones(2))


def test_infinite_scores_rank_as_extremes() -> None:
    """A float32 overflow gives +inf bits/dim: it is the most OOD score, not an error."""
    in_dist, ood = np.array([1.0, 2.0, 3.0]), np.array([np.inf, 2.5])
    assert auroc(in_dist, ood) == pytest.approx((3 + 2) / 6)
    assert auroc(np.array([np.inf]), np.array([0.0])) == 0.0
    assert fpr_at_tpr(in_dist, np.array([np.inf, np.inf])) == 0.0


def test_auroc_of_counts_equals_auroc_on_resamples_with_ties_and_infinities() -> None:
    rng = np.random.default_rng(3)
    s_in = np.r_[rng.integers(0, 20, 300).astype(float), np.inf]
    s_out = np.r_[rng.integers(5, 30, 200).astype(float), np.inf, -np.inf]
    values, inverse = np.unique(np.r_[s_in, s_out], return_inverse=True)
    u_in, u_out = inverse[: len(s_in)], inverse[len(s_in):]
    for _ in range(20):
        i, j = rng.integers(0, len(s_in), len(s_in)), rng.integers(0, len(s_out), len(s_out))
        counted = auroc_of_counts(np.bincount(u_in[i], minlength=len(values)),
                                          np.bincount(u_out[j], minlength=len(values)))
        assert counted == auroc(s_in[i], s_out[j])  # exact, not approximate
