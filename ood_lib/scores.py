r"""Per-image OOD scores from a likelihood model's per-image numbers (pure functions of arrays).

**Convention.** Every score below is oriented so that *larger = more OOD*, and the orientation
is fixed from the method's definition, before any OOD data is looked at. The OOD set is the
positive class of every metric (:mod:`ood_lib.metrics`). All log-likelihoods are in nats per
image; bits/dim (``bpd``) as stored by :func:`ood_lib.scoring.score`.

**Raw likelihood** (the paper's baseline, :func:`nll`): $s(x) = -\log p(x)$. This is the score
that fails in Nalisnick et al. (2019): an OOD set the model finds *more* likely gets an AUROC
below one half.

**Typicality test** (Nalisnick, Matsukawa, Teh & Lakshminarayanan 2019, arXiv:1906.02994).
In high dimension the model's samples do not sit at its mode but in a typical set, where
$-\log p(x)$ is close to the entropy $H[p]$. Estimate the entropy on in-distribution data the
score is never evaluated on (:func:`entropy_estimate`),

$$\hat H = -\frac1N \sum_{n=1}^N \log p(x_n),$$

and score a *batch* $B$ of $M$ inputs (:func:`typicality_batches`, :func:`typicality_score`)
by how far its mean negative log-likelihood lies from $\hat H$, in either direction:

$$s(B) = \Big|\, -\frac1M \sum_{x \in B} \log p(x) - \hat H \,\Big| .$$

An OOD set that is *too likely* (SVHN under a CIFAR-10 model) is caught as surely as one that
is too unlikely, and the batch mean's spread shrinks like $1/\sqrt M$, so detection improves
with $M$. Its blind spot follows from the same formula: a set whose mean $-\log p$ equals
$H$ is never caught, however different its spread. The book resamples batches
(:func:`ood_lib.analysis.remedies.typicality_auroc`)
from finite sets, so batches share images and the bootstrap interval over batch scores
describes batch resampling, not the sampling of the sets themselves.

**Likelihood ratio** (Ren et al., NeurIPS 2019; :func:`likelihood_ratio`). A background
model $p_{\text{bg}}$ of the same architecture, trained on inputs with a fraction $\mu$ of
the subpixels replaced by noise (:mod:`ood_lib.zoo.background`), captures the generic image
statistics that dominate $\log p(x)$; the difference keeps what is specific to the training
set: $s(x) = \log p_{\text{bg}}(x) - \log p(x)$.

**WAIC** (Choi, Jang & Alemi 2018; :func:`waic_score`). Over $M$ independently trained models,
$\text{WAIC}(x) = \mathbb E_m[\log p_m(x)] - \operatorname{Var}_m[\log p_m(x)]$: a likelihood
penalised where the members disagree; the score is $s(x) = -\text{WAIC}(x)$.

**Input complexity** (Serrà et al., ICLR 2020). A lossless compressor is a universal model:
a code of $L(x)$ bits is a probability $2^{-L(x)}$. The score is the log-ratio (in bits) of
that generic model to the trained one (:func:`ood_lib.compress.compressed_bits`, :func:`complexity_score`),

$$S(x) = -\log_2 p(x) - L(x) = \log_2 \frac{2^{-L(x)}}{p(x)},
  \qquad -\log_2 p(x) = D \cdot \text{bpd}(x) ,$$

large when the compressor explains $x$ better than the model does, i.e. when $x$ is OOD
(Serrà et al. flag large $S$). Simple inputs have a small $L(x)$ *and* a high $p(x)$; the
difference cancels the complexity that dominates the raw likelihood. For a flow, bits/dim
already holds the dequantization constant ($-\log_2$ of the probability mass of $x$'s bin,
up to the dequantization bound); PixelCNN and the VAE give the discrete NLL directly. $L(x)$
counts the whole file as written (signature, headers and trailers included): for one codec
and one image geometry that overhead is nearly constant and barely moves a ranking, but it
makes $S$ not comparable across geometries.

**Density of states** (Morningstar et al., AISTATS 2021). Instead of $p(x)$ itself, score how
*typical* a vector of model statistics $t(x) \in \mathbb R^k$ is (e.g. $\log p(z)$ and
$\log|\det|$, or Glow's per-level parts) under their distribution on held-out in-distribution
data: with a Gaussian kernel density estimate $\hat q$ fitted to standardised statistics,

$$s(x) = -\log \hat q\big((t(x) - \mu)/\sigma\big) .$$

Standardising does not change the ranking (``gaussian_kde``'s kernel covariance is Scott's
factor $N^{-1/(k+4)}$ squared times the sample covariance, so the estimate is affine
equivariant); it keeps the covariance well conditioned. :func:`dos_score` fits one joint
KDE, or one KDE per statistic with their log-densities summed (``joint=False``).

**One function, one naming.** :func:`per_image_scores` computes every score of a set at
once; the book's detection tables and the ``ood-score`` command both call it, and both name a
score by its key in :data:`METHOD_NAMES` (the CSV's column), shown by its value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ood_lib.catalogue import CODEC_NAMES


def _finite_or_inf(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values, float)
    if np.isnan(values).any():
        raise ValueError(f"{name} contains NaN")
    return values


# --- raw likelihood -------------------------------------------------------------------------


def nll(log_px: np.ndarray) -> np.ndarray:
    r"""The raw-likelihood baseline score $-\log p(x)$ (nats; larger = less likely = more OOD)."""
    # s(x) = -log p(x)
    return -_finite_or_inf(log_px, "log_px")


# --- likelihood ratio and WAIC -------------------------------------------------------------


def likelihood_ratio(log_px: np.ndarray, log_px_bg: np.ndarray) -> np.ndarray:
    r"""Ren et al.'s score with the book's orientation: $s(x) = \log p_{\text{bg}}(x) - \log p(x)$
    (nats; ``log_px_bg`` from the background model of :mod:`ood_lib.zoo.background`)."""
    a, b = _finite_or_inf(log_px, "log_px"), _finite_or_inf(log_px_bg, "log_px_bg")
    if a.shape != b.shape:
        raise ValueError(f"log_px {a.shape} and log_px_bg {b.shape} must be per-image scores of "
                         f"the same images")
    if (np.isinf(a) & np.isinf(b)).any():
        raise ValueError("likelihood_ratio: both models give an image log-likelihood -inf")
    # s(x) = log p_bg(x) - log p(x)
    return b - a


def waic_score(log_px_members: np.ndarray) -> np.ndarray:
    r"""$-\text{WAIC}(x)$ over an ensemble (Choi et al.), larger = more OOD:
    $s(x) = \widehat{\operatorname{Var}}_m[\log p_m(x)] - \frac1M \sum_m \log p_m(x)$, from
    ``log_px_members`` ``[M, N]`` (M >= 2 independently trained models, finite scores), in
    nats per image; the variance is the unbiased sample variance over members (ddof = 1)."""
    lp = _finite_or_inf(log_px_members, "log_px_members")
    if lp.ndim != 2 or lp.shape[0] < 2:
        raise ValueError(f"waic_score needs [members >= 2, images] log-likelihoods, got {lp.shape}")
    if not np.isfinite(lp).all():
        raise ValueError("waic_score: an ensemble member gives an infinite log-likelihood")
    # WAIC(x) = E_m[log p_m(x)] - Var_m[log p_m(x)];  s(x) = -WAIC(x)
    return lp.var(axis=0, ddof=1) - lp.mean(axis=0)


# --- typicality test ------------------------------------------------------------------------


def entropy_estimate(log_px_fit: np.ndarray) -> float:
    r"""$\hat H = -\frac1N \sum_n \log p(x_n)$ (nats) on in-distribution data that the score
    is never evaluated on. Every value must be finite (one $-\infty$ would make $\hat H$
    infinite and every batch score meaningless)."""
    values = _finite_or_inf(log_px_fit, "log_px_fit")
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError("entropy_estimate needs a non-empty set of finite log-likelihoods")
    # H_hat = -(1/N) sum_n log p(x_n)
    return float(-values.mean())


def _rows_with_repeats(idx: np.ndarray) -> np.ndarray:
    s = np.sort(idx, axis=1)
    return (s[:, 1:] == s[:, :-1]).any(axis=1)


def typicality_batches(log_px: np.ndarray, m: int, n_batches: int,
                       rng: np.random.Generator) -> np.ndarray:
    r"""Per-batch mean $\frac1M \sum_{x \in B} \log p(x)$ of ``n_batches`` batches of ``m``
    inputs, each batch drawn uniformly *without* replacement from ``log_px`` (batches are
    independent of each other, so they share inputs). Shape ``[n_batches]``."""
    values = _finite_or_inf(log_px, "log_px")
    n = len(values)
    if not 1 <= m <= n:
        raise ValueError(f"batch size M={m} must be between 1 and the set size {n}")
    if n_batches < 1:
        raise ValueError("n_batches must be at least 1")
    if m * m <= 4 * n:
        # i.i.d. index tuples, rows with a repeat redrawn: uniform over distinct tuples
        # (acceptance >= exp(-M^2 / 2N) >= e^-2 under this branch's condition)
        idx = rng.integers(0, n, size=(n_batches, m))
        bad = _rows_with_repeats(idx) if m > 1 else np.zeros(n_batches, bool)
        while bad.any():
            idx[bad] = rng.integers(0, n, size=(int(bad.sum()), m))
            bad[bad] = _rows_with_repeats(idx[bad])
    else:
        idx = np.stack([rng.choice(n, size=m, replace=False) for _ in range(n_batches)])
    # (1/M) sum_{x in B} log p(x), one per batch: [n_batches]
    return values[idx].mean(axis=1)


def typicality_score(batch_mean_log_px: np.ndarray, h_hat: float) -> np.ndarray:
    r"""$s(B) = |(-\frac1M \sum_{x\in B} \log p(x)) - \hat H|$: larger = further from typical."""
    mean_log_px = _finite_or_inf(batch_mean_log_px, "batch_mean_log_px")
    # s(B) = | -mean log p(B) - H_hat |
    return np.abs(-mean_log_px - h_hat)


def complexity_score(bpd: np.ndarray, n_dims: int, compressed: np.ndarray) -> np.ndarray:
    r"""$S(x) = -\log_2 p(x) - L(x)$ in bits, with $-\log_2 p(x) = D \cdot \text{bpd}(x)$ and
    $L(x)$ from :func:`compressed_bits` on the images exactly as the model scored them (same
    geometry, ``n_dims`` = $D = C H W$). Larger = more OOD; an infinite bpd gives $+\infty$."""
    bpd = _finite_or_inf(bpd, "bpd")
    compressed = _finite_or_inf(compressed, "compressed")
    if bpd.shape != compressed.shape:
        raise ValueError(f"bpd {bpd.shape} and compressed {compressed.shape} differ in shape")
    # S(x) = D * bpd(x) - L(x)
    return bpd * n_dims - compressed


# --- density of states ----------------------------------------------------------------------


def _as_2d(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values, float)
    values = values[:, None] if values.ndim == 1 else values
    if values.ndim != 2:
        raise ValueError(f"{name} must be [N, k] statistics, got shape {values.shape}")
    return _finite_or_inf(values, name)


def dos_score(fit: np.ndarray, x: np.ndarray, joint: bool = True) -> np.ndarray:
    r"""Density-of-states score $-\log \hat q(t(x))$ of the statistics ``x`` ``[M, k]`` under
    a Gaussian KDE (Scott's bandwidth) of the standardised statistics ``fit`` ``[N, k]`` of
    held-out in-distribution data (fit on data that is not scored: a fit point gains its own
    kernel). ``joint=False`` sums per-statistic 1-D KDE log-densities instead.

    Columns constant in ``fit`` (up to float32 round-off, e.g. actnorm and 1x1 parts) carry no
    information and are dropped. NaN anywhere, or an infinite value in ``fit``, is an error;
    a row of ``x`` with an infinite (kept) statistic lies infinitely far from the fit and
    scores $+\infty$. Linearly dependent columns (``log_px`` beside ``log_pz`` and
    ``log_det``) make the joint KDE singular and are an error."""
    fit, x = _as_2d(fit, "fit"), _as_2d(x, "x")
    if fit.shape[1] != x.shape[1]:
        raise ValueError(f"fit has {fit.shape[1]} statistics, x has {x.shape[1]}")
    if not np.isfinite(fit).all():
        raise ValueError("fit statistics must be finite (drop the images whose statistics "
                         "overflowed before fitting)")
    if len(fit) < 2:
        raise ValueError("need at least two fit rows")
    mu, sigma = fit.mean(axis=0), fit.std(axis=0)
    keep = sigma > 1e-6 * np.maximum(np.abs(mu), 1.0)
    if not keep.any():
        raise ValueError("every statistic is constant on the fit data")
    # z = (t - mu) / sigma, constant columns dropped: [N, k'] and [M, k']
    z_fit = (fit[:, keep] - mu[keep]) / sigma[keep]
    z_x = (x[:, keep] - mu[keep]) / sigma[keep]
    finite = np.isfinite(z_x).all(axis=1)
    score = np.full(len(x), np.inf)
    if joint:
        eigenvalues = np.linalg.eigvalsh(np.atleast_2d(np.corrcoef(z_fit, rowvar=False)))
        if eigenvalues.min() < 1e-10 * eigenvalues.max():
            raise ValueError("the fit statistics are linearly dependent (e.g. log_px with "
                             "log_pz and log_det): drop one of them")
        # s(x) = -log q_hat(z(x))
        score[finite] = -kde_logpdf(z_fit, z_x[finite])
    else:
        # s(x) = -sum_j log q_hat_j(z_j(x))
        score[finite] = -sum(kde_logpdf(z_fit[:, j:j + 1], z_x[finite, j:j + 1])
                             for j in range(z_fit.shape[1]))
    return score


def kde_logpdf(fit: np.ndarray, x: np.ndarray, chunk: int = 512) -> np.ndarray:
    r"""$\log \hat q(x)$ ``[M]`` of points ``x`` ``[M, k]`` under the Gaussian KDE of ``fit``
    ``[N, k]`` with Scott's bandwidth, as :class:`scipy.stats.gaussian_kde` defines it (and
    equal to its ``logpdf`` to round-off, tested), several times faster:

    $$\log \hat q(x) = \log \frac1N \sum_{i=1}^N \mathcal N(x;\, f_i,\, \Sigma), \qquad
    \Sigma = n^{-2/(k+4)}\, \widehat{\operatorname{Cov}}(f) \ (\text{ddof } 1),$$

    computed on whitened points ($\Sigma = L L^\top$, $y = L^{-1} x$) with a log-sum-exp over
    the fit points, ``chunk`` rows of ``x`` at a time."""
    fit, x = np.asarray(fit, np.float64), np.asarray(x, np.float64)
    n, k = fit.shape
    cov = np.atleast_2d(np.cov(fit, rowvar=False)) * n ** (-2.0 / (k + 4))  # Scott: n^(-1/(k+4))
    chol = np.linalg.cholesky(cov)
    y_fit = np.linalg.solve(chol, fit.T).T  # [N, k], whitened
    y_x = np.linalg.solve(chol, x.T).T  # [M, k]
    # log N(x; f, Sigma) = -|y_x - y_f|^2 / 2 - log det(L) - k/2 log(2 pi)
    const = -np.log(np.diag(chol)).sum() - 0.5 * k * np.log(2 * np.pi) - np.log(n)
    half_sq_fit = 0.5 * (y_fit ** 2).sum(1)  # [N]
    out = np.empty(len(x))
    for start in range(0, len(x), chunk):
        y = y_x[start:start + chunk]  # [c, k]
        # -|y - y_f|^2 / 2 = y . y_f - |y_f|^2 / 2 - |y|^2 / 2; the last term is outside the sum
        e = y @ y_fit.T - half_sq_fit  # [c, N]
        top = e.max(axis=1, keepdims=True)
        np.subtract(e, top, out=e)
        np.exp(e, out=e)
        out[start:start + chunk] = (top[:, 0] + np.log(e.sum(axis=1))
                                    - 0.5 * (y ** 2).sum(1) + const)
    return out


# --- evaluation -----------------------------------------------------------------------------


# In-distribution images the density-of-states KDE is fitted on (the first of the fit set).
DOS_FIT_IMAGES = 2_000


# Each score's key (a CSV column of ``ood-score``) -> its name in the book's tables.
METHOD_NAMES: dict[str, str] = {
    "bpd": "NLL",
    "typicality": "typicality (M = 1)",
    **{f"complexity_{codec}": f"complexity ({name})" for codec, name in CODEC_NAMES.items()},
    "dos_joint_kde": "density of states (joint KDE)",
    "dose_kde": "DoSE-KDE",  # ood_lib.analysis.dose: per-family statistics, fitted on held-out
    "dose_svm": "DoSE-SVM",
    "likelihood_ratio": "likelihood ratio",
    "waic": "WAIC",
}


def fitted_entropy(fit_log_px: np.ndarray) -> float:
    r""":func:`entropy_estimate` on the finite values of ``fit_log_px`` (held-out images a model
    scores as $-\infty$ are left out rather than making $\hat H$ infinite)."""
    values = np.asarray(fit_log_px, float)
    return entropy_estimate(values[np.isfinite(values)])


def per_image_scores(x: dict[str, np.ndarray], fit: dict[str, np.ndarray] | None, n_dims: int,
                     bits: dict[str, np.ndarray], parts: Sequence[str] = (),
                     more: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    r"""Every per-image score of one set, larger = more OOD, keyed as :data:`METHOD_NAMES`.
    ``x`` and ``fit``: per-image ``bpd``, ``log_px`` (nats) and the model's additive ``parts``
    of the scored images and of the held-out images (``fit=None``: no fitted score, for a
    model that trained on them); ``n_dims`` = D.

    - ``bpd``: bits/dim, the raw-likelihood baseline;
    - ``typicality``: $|-\log p(x) - \hat H|$, $\hat H$ = :func:`fitted_entropy` of ``fit``;
    - ``complexity_<codec>``: $S(x) = D\,\text{bpd}(x) - L(x)$ with the set's compressed
      lengths ``bits[codec]``;
    - ``dos_joint_kde``: :func:`dos_score` of the additive ``parts`` (Glow: $\log p(z)$,
      $\log|\det|$; PixelCNN: per-channel log-probabilities; VAE: its ELBO parts and
      importance-weighting gain), fitted on the first :data:`DOS_FIT_IMAGES` of ``fit``;
    - ``likelihood_ratio`` where ``more`` holds ``log_px_bg`` (the background model's
      log-likelihoods of the same images) and ``waic`` where it holds ``log_px_members``
      (``[M, N]``, every ensemble member's).
    """
    more = more or {}
    out = {"bpd": np.asarray(x["bpd"], float)}
    if fit is not None:
        out["typicality"] = typicality_score(x["log_px"], fitted_entropy(fit["log_px"]))
    for codec, b in bits.items():
        out[f"complexity_{codec}"] = complexity_score(x["bpd"], n_dims, b)
    if fit is not None and parts:
        # the KDE costs (fit rows) x (scored rows) kernel evaluations: fit on the first 2,000
        fit_stats = np.stack([fit[p][:DOS_FIT_IMAGES] for p in parts], 1)
        out["dos_joint_kde"] = dos_score(fit_stats, np.stack([x[p] for p in parts], 1))
    if "log_px_bg" in more:
        out["likelihood_ratio"] = likelihood_ratio(x["log_px"], more["log_px_bg"])
    if "log_px_members" in more:
        out["waic"] = waic_score(more["log_px_members"])
    return out
