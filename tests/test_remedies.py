"""Remedy scores (typicality, input complexity, density of states) and their evaluation, on toy
data whose answer is known; ood_lib.metrics against scikit-learn."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from ood_lib import compress, metrics, scores
from ood_lib.analysis import remedies
from ood_lib.metrics import aupr, auroc, fpr_at_tpr

# --- ood_lib.metrics against scikit-learn ---------------------------------------------------


def _labels(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.r_[np.zeros(len(a)), np.ones(len(b))], np.r_[a, b]


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 15, 203).astype(float), rng.integers(3, 18, 137).astype(float)
    y, s = _labels(a, b)
    assert auroc(a, b) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_aupr_matches_sklearn_with_and_without_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0, 1, 300), rng.normal(0.7, 1, 211)
    assert aupr(a, b) == pytest.approx(skm.average_precision_score(*_labels(a, b)), abs=1e-12)
    a, b = rng.integers(0, 15, 203).astype(float), rng.integers(3, 18, 137).astype(float)
    assert aupr(a, b) == pytest.approx(skm.average_precision_score(*_labels(a, b)), abs=1e-12)
    # infinite scores keep their rank
    b[:5] = np.inf
    finite = np.where(np.isinf(b), 1e6, b)
    assert aupr(a, b) == pytest.approx(skm.average_precision_score(*_labels(a, finite)), abs=1e-12)


def _sklearn_fpr_at(a: np.ndarray, b: np.ndarray, tpr_min: float) -> float:
    fpr, tpr, _ = skm.roc_curve(*_labels(a, b), drop_intermediate=False)
    return float(fpr[np.searchsorted(tpr, tpr_min - 1e-12, side="left")])


@pytest.mark.parametrize("n_ood", [137, 141, 203, 999, 140, 200, 1000])
def test_fpr95_is_the_first_roc_point_with_tpr_at_least_95_percent(n_ood: int) -> None:
    rng = np.random.default_rng(n_ood)
    a, b = rng.integers(0, 40, 311).astype(float), rng.integers(5, 45, n_ood).astype(float)
    assert fpr_at_tpr(a, b) == pytest.approx(_sklearn_fpr_at(a, b, 0.95), abs=1e-12)
    a, b = rng.normal(0, 1, 311), rng.normal(1, 1, n_ood)  # continuous scores, no ties
    assert fpr_at_tpr(a, b) == pytest.approx(_sklearn_fpr_at(a, b, 0.95), abs=1e-12)


def test_roc_curve_matches_sklearn_and_takes_infinity() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 50), rng.normal(1, 1, 40)
    fpr, tpr = metrics.roc_curve(a, b)
    sk_fpr, sk_tpr, _ = skm.roc_curve(*_labels(a, b))
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    # +inf ranks above everything: one infinite OOD score is caught at FPR 0
    fpr, tpr = metrics.roc_curve(np.zeros(4), np.array([np.inf, -1.0]))
    assert fpr[1] == 0.0 and tpr[1] == 0.5
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # trapezoid rule
    assert area == pytest.approx(auroc(np.zeros(4), np.array([np.inf, -1.0])))


# --- bootstrap ------------------------------------------------------------------------------


def test_bootstrap_matches_brute_force_resamples() -> None:
    """The counts-per-value formula gives the AUROC of each explicit resample (ties included):
    recompute the resamples with the same generator calls and compare the percentiles."""
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 8, 40).astype(float), rng.integers(2, 10, 30).astype(float)
    point, lo, hi = metrics.bootstrap_auroc(a, b, n_boot=50, seed=7)
    gen = np.random.default_rng(7)
    ia, ib = gen.integers(0, len(a), (50, len(a))), gen.integers(0, len(b), (50, len(b)))
    brute = [auroc(a[i], b[j]) for i, j in zip(ia, ib, strict=True)]
    assert point == auroc(a, b)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(brute, [2.5, 97.5])), abs=1e-12)


def test_bootstrap_contains_point_narrows_and_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    small = rng.normal(0, 1, 100), rng.normal(0.5, 1, 70)
    large = rng.normal(0, 1, 10_000), rng.normal(0.5, 1, 7_000)
    p_s, lo_s, hi_s = metrics.bootstrap_auroc(*small)
    start = time.perf_counter()
    p_l, lo_l, hi_l = metrics.bootstrap_auroc(*large, n_boot=200)
    assert time.perf_counter() - start < 3.0  # ~0.5 s on a loaded 2-core machine
    assert lo_s <= p_s <= hi_s and lo_l <= p_l <= hi_l
    assert hi_l - lo_l < 0.3 * (hi_s - lo_s)
    assert metrics.bootstrap_auroc(*small, seed=5) == metrics.bootstrap_auroc(*small, seed=5)
    assert metrics.bootstrap_auroc(*small, seed=5) != metrics.bootstrap_auroc(*small, seed=6)


def test_detection_row_keys_and_nan() -> None:
    row = metrics.detection_row(np.arange(10.0), np.arange(10.0) + 100)
    assert row == pytest.approx({"auroc": 1.0, "auroc_lo": 1.0, "auroc_hi": 1.0, "aupr": 1.0,
                                 "fpr95": 0.0}, abs=1e-12)
    with pytest.raises(ValueError, match="NaN"):
        metrics.detection_row(np.array([np.nan, 1.0]), np.ones(3))


# --- typicality -----------------------------------------------------------------------------


def _gauss_log_px(x: np.ndarray) -> np.ndarray:
    """log N(x; 0, I_d) per row: the 'model' is the in-distribution density itself."""
    return -0.5 * x.shape[1] * math.log(2 * math.pi) - 0.5 * (x**2).sum(axis=1)


def test_typicality_pieces_by_hand() -> None:
    assert scores.entropy_estimate(np.array([-1.0, -3.0])) == 2.0
    np.testing.assert_array_equal(scores.typicality_score(np.array([-1.0, -3.0]), 2.0), [1, 1])
    with pytest.raises(ValueError, match="finite"):
        scores.entropy_estimate(np.array([-1.0, -np.inf]))
    np.testing.assert_array_equal(scores.nll(np.array([-2.0, 3.0])), [2.0, -3.0])


@pytest.mark.parametrize("m", [1, 3, 10, 40])
def test_typicality_batches_sample_without_replacement(m: int) -> None:
    values = np.arange(40.0)  # distinct values: a batch's members are recoverable from them
    rng = np.random.default_rng(0)
    means = scores.typicality_batches(values, m, 500, rng)
    assert means.shape == (500,)
    if m == 40:  # every batch is the whole set
        np.testing.assert_allclose(means, values.mean())
    # without replacement: a batch mean of M distinct integers lies in [sum 0..M-1, sum of top M]
    assert means.min() >= (m - 1) / 2 and means.max() <= 39 - (m - 1) / 2
    with pytest.raises(ValueError, match="between 1"):
        scores.typicality_batches(values, 41, 5, rng)


def test_typicality_no_repeats_within_batch_directly() -> None:
    rng = np.random.default_rng(1)
    values = 2.0 ** np.arange(12)  # a batch's sum identifies its members (binary digits)
    sums = scores.typicality_batches(values, 5, 2_000, rng) * 5
    bits = [bin(int(s)).count("1") for s in sums]
    assert set(bits) == {5}


def test_typicality_catches_too_likely_data_better_with_larger_m() -> None:
    """In distribution: x ~ N(0, I_10), scored by that density. OOD: x ~ N(0, 0.8 I_10), which
    the model finds *more* likely (the paper's phenomenon: raw NLL AUROC < 0.5). The batch
    test catches it, better as M grows."""
    rng = np.random.default_rng(0)
    d = 10
    fit = _gauss_log_px(rng.normal(0, 1, (4_000, d)))
    test = _gauss_log_px(rng.normal(0, 1, (2_000, d)))
    ood = _gauss_log_px(rng.normal(0, math.sqrt(0.8), (2_000, d)))
    assert auroc(scores.nll(test), scores.nll(ood)) < 0.4
    table = remedies.typicality_auroc(fit, test, ood, ms=(1, 5, 25, 100), n_batches=400)
    assert list(table["M"]) == [1, 5, 25, 100]
    assert np.all(np.diff(table["auroc"]) > 0)
    assert table["auroc"].iloc[0] < 0.65 and table["auroc"].iloc[-1] > 0.97
    assert (table["auroc_lo"] <= table["auroc"]).all()
    assert (table["auroc"] <= table["auroc_hi"]).all()
    assert table["H_hat (nats)"].iloc[0] == pytest.approx(scores.entropy_estimate(fit))
    again = remedies.typicality_auroc(fit, test, ood, ms=(25,), n_batches=400)
    assert again["auroc"].iloc[0] == table["auroc"].iloc[2]  # seeded by (seed, M)


def test_typicality_blind_spot_same_mean_lower_spread() -> None:
    """Its known limit: OOD log p concentrated exactly at the entropy (same mean, no spread) is
    *more* typical than in-distribution batches at every M."""
    rng = np.random.default_rng(0)
    fit, test = rng.normal(-5, 1, 4_000), rng.normal(-5, 1, 2_000)
    ood = np.full(2_000, -5.0)
    table = remedies.typicality_auroc(fit, test, ood, ms=(1, 10, 50), n_batches=300)
    assert (table["auroc"] < 0.5).all()


# --- input complexity -----------------------------------------------------------------------


@pytest.mark.parametrize("codec", sorted(compress.CODECS))
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])  # the book's two geometries
def test_every_codec_is_lossless_at_every_geometry_and_counts_the_file(
        codec: str, channels: int, size: int) -> None:
    rng = np.random.default_rng(channels)
    noise = rng.integers(0, 256, (3, channels, size, size), dtype=np.uint8)
    constant = np.full((3, channels, size, size), 0, np.uint8) + np.array(
        [0, 117, 255], np.uint8)[:, None, None, None]
    images = np.concatenate([noise, constant])
    bits = compress.compressed_bits(images, codec)
    assert bits.shape == (6,) and bits.dtype == np.int64
    for image, n_bits in zip(images, bits, strict=True):
        data = compress.encode(image, codec)
        assert n_bits == 8 * len(data)
        decoded = compress.decode(data, codec)
        # decode(encode(x)) == x bit for bit (WebP stores grey as three equal channels)
        np.testing.assert_array_equal(decoded, np.broadcast_to(image, decoded.shape))
    assert bits[3:].max() * 4 < bits[:3].min()  # constant << noise (JPEG 2000: 200-byte headers)
    assert bits[:3].min() > 8 * size * size * channels * 0.9  # noise is incompressible
    # the cache key names the codec's every setting
    fmt, options = compress.CODECS[codec]
    assert all(f"{k}={v}" in compress.compressor_id(codec) for k, v in options.items())


def test_compression_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="uint8"):
        compress.compressed_bits(np.zeros((1, 2, 4, 4), np.uint8), "png")
    with pytest.raises(ValueError, match="uint8"):
        compress.compressed_bits(np.zeros((1, 1, 4, 4)), "png")
    with pytest.raises(ValueError, match="codec"):
        compress.compressed_bits(np.zeros((1, 1, 4, 4), np.uint8), "jpeg")
    assert "PNG" in compress.compressor_id("png") and "zlib" in compress.compressor_id("png")
    monkeypatch.setattr(compress.features, "check", lambda name: False)
    with pytest.raises(RuntimeError, match="WebP"):
        compress.compressed_bits(np.zeros((1, 1, 4, 4), np.uint8), "webp")


def test_complexity_score_by_hand() -> None:
    # S = D * bpd - L: 4 * 2.0 - 5 = 3; 4 * 3.5 - 20 = -6; infinite bpd stays most OOD
    s = scores.complexity_score(np.array([2.0, 3.5, np.inf]), 4, np.array([5, 20, 7]))
    np.testing.assert_array_equal(s, [3.0, -6.0, np.inf])
    with pytest.raises(ValueError, match="shape"):
        scores.complexity_score(np.ones(2), 4, np.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        scores.complexity_score(np.array([np.nan]), 4, np.ones(1))


def test_complexity_account_by_hand() -> None:
    """Model falls by 1 bit/dim from test to OOD, the compressor by 1.5: margin 0.5, S ranks
    the OOD set higher (AUROC 1); with the compressor's bits halved (w = 0.5) the model's fall
    wins (AUROC 0); rescaling the model's fall to 2 bits/dim is w = 1/2 as well."""
    bpd = {"test": np.array([2.0, 2.1]), "ood": np.array([1.0, 1.1])}
    bits = {"test": np.array([3.0, 3.1]), "ood": np.array([1.5, 1.6])}
    assert remedies.weighted_complexity_auroc(bpd, bits, 1) == 1.0
    assert remedies.weighted_complexity_auroc(bpd, bits, 1, weight=0.5) == 0.0
    row = remedies.complexity_account(bpd, {"png": bits}, 1, reference_fall=2.0).iloc[0]
    assert row["codec"] == "PNG" and row["compressor bpd (test)"] == pytest.approx(3.05)
    assert row["compressor fall"] == pytest.approx(1.5) and row["model fall"] == pytest.approx(1.0)
    assert row["margin"] == pytest.approx(0.5)
    assert row["AUROC"] == 1.0 and row["AUROC at reference fall"] == 0.0


def test_inversion_reading_by_hand() -> None:
    """Foreground falls 1.0 and 2.0 bits/dim, the background 0.5 and 2.5: it matches 50% and
    125%; the second OOD set is inverted; a rise is named as one."""
    table = pd.DataFrame({"set": ["A", "B", "C", "D"],
                          "role": ["val (in)", "val (OOD)", "test (OOD)", "test (OOD)"],
                          "foreground bpd": [4.0, 3.0, 2.0, 4.5],
                          "background bpd": [5.0, 4.5, 2.5, 5.25],
                          "AUROC against A": [0.5, 0.7, 0.4, 0.9]})
    text = remedies.inversion_reading(table)
    assert ("to B the foreground's bits/dim falls by 1.00, the background's falls by 0.50 (50% "
            "of the foreground's fall), and the ratio's AUROC is 0.700;") in text
    assert ("to C the foreground's bits/dim falls by 2.00, the background's falls by 2.50 "
            "(125%") in text
    assert "0.400 (inverted)" in text and "0.700 (inverted)" not in text
    assert "to D the foreground's bits/dim rises by 0.50, the background's rises by 0.25, and" in text
    assert "ranks 1 of the 3 OOD sets" in text


# --- density of states ----------------------------------------------------------------------


@pytest.mark.parametrize("joint", [True, False])
def test_dos_far_point_scores_higher(joint: bool) -> None:
    rng = np.random.default_rng(0)
    fit = rng.normal([100.0, -3.0], [10.0, 0.1], (500, 2))
    own = scores.dos_score(fit, fit[:50], joint=joint)
    far = scores.dos_score(fit, np.array([[100.0, -2.0], [160.0, -3.0]]), joint=joint)
    assert far.min() > own.max()


@pytest.mark.parametrize("k", [1, 3])
def test_kde_logpdf_is_scipy_s_gaussian_kde(k: int) -> None:
    """Scott's bandwidth and the normalisation of scipy's gaussian_kde, to round-off, far from
    the fit points too."""
    from scipy.stats import gaussian_kde

    rng = np.random.default_rng(k)
    fit = rng.normal(size=(300, k)) @ rng.normal(size=(k, k))
    x = np.concatenate([rng.normal(size=(700, k)) * 2, np.full((1, k), 40.0)])
    np.testing.assert_allclose(scores.kde_logpdf(fit, x, chunk=64),
                               gaussian_kde(fit.T, bw_method="scott").logpdf(x.T), rtol=1e-10)


def test_dos_handles_constant_columns_infinity_and_nan() -> None:
    rng = np.random.default_rng(0)
    stats = rng.normal(0, 1, (300, 2))
    x = rng.normal(0, 1, (20, 2))
    with_constant = np.c_[stats, np.full(300, -7.5)]
    np.testing.assert_allclose(scores.dos_score(with_constant, np.c_[x, np.full(20, 3.0)]),
                               scores.dos_score(stats, x))
    flagged = scores.dos_score(stats, np.array([[np.inf, 0.0], [0.0, 0.0]]))
    assert flagged[0] == np.inf and np.isfinite(flagged[1])
    with pytest.raises(ValueError, match="NaN"):
        scores.dos_score(stats, np.array([[np.nan, 0.0]]))
    with pytest.raises(ValueError, match="NaN"):
        scores.dos_score(np.r_[stats, [[np.nan, 0.0]]], x)
    with pytest.raises(ValueError, match="finite"):
        scores.dos_score(np.r_[stats, [[-np.inf, 0.0]]], x)
    with pytest.raises(ValueError, match="linearly dependent"):
        scores.dos_score(np.c_[stats, stats.sum(axis=1)], np.c_[x, x.sum(axis=1)])
    with pytest.raises(ValueError, match="constant"):
        scores.dos_score(np.ones((10, 2)), np.ones((1, 2)))


def test_per_image_scores_follow_their_definitions() -> None:
    """The per-image scores (book and ood-score): bpd is bits/dim, typicality |-log p - H_hat|,
    complexity D * bpd - L, density of states from the family's additive parts; larger = more
    OOD; H_hat leaves out held-out images scored -inf."""
    parts = ("log_pz", "log_det")
    rng = np.random.default_rng(0)

    def sample(n: int, shift: float) -> dict[str, np.ndarray]:
        log_pz, log_det = rng.normal(shift, 1, n), rng.normal(-shift, 2, n)
        log_px = log_pz + log_det
        return {"log_px": log_px, "log_pz": log_pz, "log_det": log_det,
                "bpd": -log_px / (4 * np.log(2)) + 8}

    fit, x = sample(500, 0.0), sample(50, 3.0)
    bits = {"png": rng.uniform(10, 20, 50)}
    out = scores.per_image_scores(x, fit, 4, bits, parts)
    assert list(out) == ["bpd", "typicality", "complexity_png", "dos_joint_kde"]
    assert set(out) <= set(scores.METHOD_NAMES)
    np.testing.assert_array_equal(out["bpd"], x["bpd"])
    np.testing.assert_allclose(out["typicality"], np.abs(-x["log_px"] + fit["log_px"].mean()))
    np.testing.assert_allclose(out["complexity_png"], 4 * x["bpd"] - bits["png"])
    stats = np.stack([fit["log_pz"], fit["log_det"]], 1)
    np.testing.assert_allclose(out["dos_joint_kde"],
                               scores.dos_score(stats, np.stack([x["log_pz"], x["log_det"]], 1)))
    # the shifted set sits away from the fit cloud: density of states flags it
    inside = scores.per_image_scores(sample(50, 0.0), fit, 4, bits, parts)["dos_joint_kde"]
    assert np.median(out["dos_joint_kde"]) > np.median(inside)
    # a held-out image at -inf is left out of H_hat, not an infinite entropy
    with_inf = {**fit, "log_px": np.r_[fit["log_px"][:-1], -np.inf]}
    np.testing.assert_allclose(
        scores.per_image_scores(x, with_inf, 4, {}, ())["typicality"],
        np.abs(-x["log_px"] + fit["log_px"][:-1].mean()))
    # no fit: no fitted score
    assert list(scores.per_image_scores(x, None, 4, bits, parts)) == ["bpd", "complexity_png"]


def test_likelihood_ratio_and_waic_by_hand() -> None:
    """s = log p_bg - log p (larger = more OOD); -WAIC = sample variance - mean over members."""
    np.testing.assert_array_equal(scores.likelihood_ratio(np.array([-10.0, -3.0]),
                                                            np.array([-12.0, -1.0])), [-2.0, 2.0])
    members = np.array([[-1.0, -5.0], [-3.0, -5.0], [-2.0, -5.0]])
    # image 0: mean -2, variance ((1 + 1 + 0) / 2) = 1 -> 3; image 1: mean -5, variance 0 -> 5
    np.testing.assert_allclose(scores.waic_score(members), [3.0, 5.0])
    with pytest.raises(ValueError, match="members >= 2"):
        scores.waic_score(members[:1])
    with pytest.raises(ValueError, match="infinite"):
        scores.waic_score(np.array([[-1.0, -np.inf], [-1.0, -2.0]]))
    with pytest.raises(ValueError, match="NaN"):
        scores.likelihood_ratio(np.array([np.nan]), np.array([0.0]))
    with pytest.raises(ValueError, match="same images"):
        scores.likelihood_ratio(np.zeros(2), np.zeros(3))


def test_waic_flags_where_members_disagree() -> None:
    """Equal mean likelihood, but members that disagree on the OOD images: WAIC separates
    the sets that the mean likelihood cannot."""
    rng = np.random.default_rng(0)
    shared = rng.normal(-100, 1, 400)
    in_members = shared + rng.normal(0, 0.1, (3, 400))
    ood_members = shared + rng.normal(0, 5, (3, 400))
    assert auroc(-in_members.mean(0), -ood_members.mean(0)) < 0.7
    assert auroc(scores.waic_score(in_members), scores.waic_score(ood_members)) > 0.9


def test_per_image_scores_add_ratio_and_waic_when_given() -> None:
    parts = ("log_pz", "log_det")
    rng = np.random.default_rng(1)
    x = {k: rng.normal(0, 1, 20) for k in parts}
    x["log_px"] = x["log_pz"] + x["log_det"]
    x["bpd"] = -x["log_px"]
    fit = {k: rng.normal(0, 1, 200) for k in (*parts, "log_px")}
    more = {"log_px_bg": rng.normal(0, 1, 20), "log_px_members": rng.normal(0, 1, (3, 20))}
    plain = scores.per_image_scores(x, fit, 4, {}, parts)
    assert "likelihood_ratio" not in plain and "waic" not in plain
    out = scores.per_image_scores(x, fit, 4, {}, parts, more)
    np.testing.assert_array_equal(out["likelihood_ratio"], more["log_px_bg"] - x["log_px"])
    np.testing.assert_array_equal(out["waic"], scores.waic_score(more["log_px_members"]))
