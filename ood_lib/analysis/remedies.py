r"""Remedies: OOD scores that use a likelihood model without trusting its raw likelihood.

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
$H$ is never caught, however different its spread. :func:`typicality_auroc` resamples batches
from finite sets, so batches share images and the bootstrap interval over batch scores
describes batch resampling, not the sampling of the sets themselves.

**Likelihood ratio** (Ren et al., NeurIPS 2019; :func:`likelihood_ratio`). A background
model $p_{\text{bg}}$ of the same architecture, trained on inputs with a fraction $\mu$ of
the subpixels replaced by noise (:mod:`ood_lib.background`), captures the generic image
statistics that dominate $\log p(x)$; the difference keeps what is specific to the training
set: $s(x) = \log p_{\text{bg}}(x) - \log p(x)$.

**WAIC** (Choi, Jang & Alemi 2018; :func:`waic_score`). Over $M$ independently trained models,
$\text{WAIC}(x) = \mathbb E_m[\log p_m(x)] - \operatorname{Var}_m[\log p_m(x)]$: a likelihood
penalised where the members disagree; the score is $s(x) = -\text{WAIC}(x)$.

**Input complexity** (Serrà et al., ICLR 2020). A lossless compressor is a universal model:
a code of $L(x)$ bits is a probability $2^{-L(x)}$. The score is the log-ratio (in bits) of
that generic model to the trained one (:func:`compressed_bits`, :func:`complexity_score`),

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

**Evaluation.** :func:`detection_row` reports AUROC with a 95% percentile bootstrap interval
(:func:`bootstrap_auroc`: both sets resampled with replacement, independently), AUPR and FPR
at 95% TPR from :mod:`ood_lib.metrics`; :func:`roc_curve` gives the curve for plotting.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import imagecodecs
import numpy as np
import pandas as pd
import PIL
from PIL import Image, features
from scipy.stats import gaussian_kde, rankdata
from sklearn import metrics as skm

from ood_lib import data, records, scoring
from ood_lib.metrics import aupr, auroc, auroc_of_counts, fpr_at_tpr
from ood_lib.models.base import DensityModel
from ood_lib.scoring import EvalSet

if TYPE_CHECKING:
    from ood_lib.ensemble import Companions

# Lossless encoder per codec: the library that writes it and its settings. Serra et al. (2020)
# used PNG, JPEG 2000 and FLIF; FLIF is not installable here, JPEG XL (lossless) is its
# successor. Settings were chosen by timing ~200 images per codec (remedies chapter):
# - PNG: Pillow, maximum zlib compression (the setting of Serra et al.'s PNG and of the
#   independent replication's PNG level 9);
# - WebP: Pillow, lossless; method 4 (of 0-6): 2.6 ms and 1,785 bytes per CIFAR-10 image
#   against 68 ms and 1,820 bytes with method 6 (measured here);
# - JPEG 2000: imagecodecs (OpenJPEG), reversible 5/3 wavelet (level 0 = lossless);
# - JPEG XL: imagecodecs (libjxl), lossless, effort 7: 5.5 ms and 1,558 bytes per CIFAR-10
#   image against 13 ms and 1,568 bytes at effort 9 (measured here with two trainings running).
CODECS: dict[str, tuple[str, dict[str, object]]] = {
    "png": ("PNG", {"optimize": True, "compress_level": 9}),
    "webp": ("WEBP", {"lossless": True, "quality": 100, "method": 4}),
    "jpeg2000": ("JPEG2K", {"level": 0}),
    "jpegxl": ("JPEGXL", {"lossless": True, "effort": 7}),
}
# Codecs written by imagecodecs (the others by Pillow).
IMAGECODECS = ("jpeg2000", "jpegxl")
CODEC_NAMES = {"png": "PNG", "webp": "WebP", "jpeg2000": "JPEG 2000", "jpegxl": "JPEG XL"}
# Bound on the elements of one bootstrap chunk (resamples x distinct scores): ~32 MB of int64.
_BOOT_CHUNK = 4_000_000


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
    (nats; ``log_px_bg`` from the background model of :mod:`ood_lib.background`)."""
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


def typicality_auroc(fit: np.ndarray, test: np.ndarray, ood: np.ndarray,
                     ms: Sequence[int] = (1, 2, 5, 10, 25), n_batches: int = 1000,
                     seed: int = 0) -> pd.DataFrame:
    r"""The typicality test at each batch size $M$: $\hat H$ from ``fit`` (log p, nats, of
    in-distribution inputs not in ``test``), ``n_batches`` batches each from ``test`` and
    ``ood``, and one :func:`detection_row` (test batches negative, OOD batches positive) per
    $M$. Batches of each $M$ are drawn from a generator seeded by ``(seed, M)``."""
    h_hat = entropy_estimate(fit)
    rows = []
    for m in ms:
        rng = np.random.default_rng([seed, m])
        s_test = typicality_score(typicality_batches(test, m, n_batches, rng), h_hat)
        s_ood = typicality_score(typicality_batches(ood, m, n_batches, rng), h_hat)
        rows.append({"M": m, **detection_row(s_test, s_ood, seed=seed),
                     "n_batches": n_batches, "H_hat (nats)": h_hat})
    return pd.DataFrame(rows)


# --- input complexity -----------------------------------------------------------------------


def _check_codec(codec: str) -> None:
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose one of {sorted(CODECS)}")
    if codec == "webp" and not features.check("webp"):
        raise RuntimeError(
            f"this Pillow ({PIL.__version__}) was built without WebP support "
            "(PIL.features.check('webp') is False): install a Pillow wheel with libwebp, "
            "or use codec='png'")


def compressor_id(codec: str) -> str:
    """The codec, its settings and library versions: compressed lengths depend on all of them,
    so a cache of :func:`compressed_bits` should key on this string."""
    _check_codec(codec)
    fmt, options = CODECS[codec]
    settings = ", ".join(f"{k}={v}" for k, v in options.items())
    if codec in IMAGECODECS:
        lib = {"jpeg2000": "openjpeg", "jpegxl": "libjxl"}[codec]
        version = imagecodecs.version(dict)[lib]
        return f"{fmt} ({settings}); imagecodecs {imagecodecs.__version__}; {lib} {version}"
    lib = "webp" if codec == "webp" else "zlib"
    return f"{fmt} ({settings}); Pillow {PIL.__version__}; {lib} {features.version(lib)}"


def encode(image: np.ndarray, codec: str) -> bytes:
    """One uint8 image ``[C, H, W]`` (C = 1 grey or 3 RGB) as the bytes of a lossless file.
    WebP has no grey mode: Pillow stores a grey image as RGB with three equal channels."""
    _check_codec(codec)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected a uint8 image [C, H, W] with C = 1 or 3, got "
                         f"{image.dtype} {image.shape}")
    hwc = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    fmt, options = CODECS[codec]
    if codec in IMAGECODECS:
        return bytes(getattr(imagecodecs, f"{fmt.lower()}_encode")(hwc, **options))
    pil = Image.fromarray(hwc)
    buffer = io.BytesIO()
    pil.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def decode(data: bytes, codec: str) -> np.ndarray:
    """The uint8 image ``[C, H, W]`` of a file written by :func:`encode` (WebP gives a grey
    image back as three equal channels)."""
    _check_codec(codec)
    if codec in IMAGECODECS:
        hwc = np.asarray(getattr(imagecodecs, f"{CODECS[codec][0].lower()}_decode")(data))
    else:
        hwc = np.asarray(Image.open(io.BytesIO(data)))
    return hwc[None] if hwc.ndim == 2 else hwc.transpose(2, 0, 1)


def compressed_bits(images: np.ndarray, codec: str) -> np.ndarray:
    r"""$L(x)$: the length in bits of each uint8 image of ``images`` ``[N, C, H, W]`` compressed
    losslessly with ``codec`` (:data:`CODECS`: its library and settings). The whole file as
    written is counted, headers included (see the module docstring). Raises a RuntimeError if
    Pillow lacks WebP. Cache the result, keyed on :func:`compressor_id`. The images are encoded
    on one thread per CPU this process may use (the codecs release the GIL); each image's
    length does not depend on the others, so the result is the same on any number."""
    _check_codec(codec)
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"expected uint8 images [N, C, H, W], got shape {images.shape}")
    with ThreadPoolExecutor(max_workers=len(os.sched_getaffinity(0))) as pool:
        # L(x) = 8 * (bytes of the file)
        return np.fromiter(pool.map(lambda image: 8 * len(encode(image, codec)), images),
                           dtype=np.int64, count=len(images))


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
        kde = gaussian_kde(z_fit.T, bw_method="scott")
        # s(x) = -log q_hat(z(x))
        score[finite] = -kde.logpdf(z_x[finite].T)
    else:
        # s(x) = -sum_j log q_hat_j(z_j(x))
        score[finite] = -sum(gaussian_kde(z_fit[:, j], bw_method="scott").logpdf(z_x[finite, j])
                             for j in range(z_fit.shape[1]))
    return score


# --- evaluation -----------------------------------------------------------------------------


def bootstrap_auroc(in_dist: np.ndarray, ood: np.ndarray, n_boot: int = 200,
                    seed: int = 0) -> tuple[float, float, float]:
    r"""AUROC and its 95% percentile bootstrap interval: each resample draws $n_-$ in-distribution
    and $n_+$ OOD scores with replacement, independently. A resample is a count $c_v$ per
    distinct score value $v$, so its AUROC is one weighted pass over sorted values
    (:func:`ood_lib.metrics.auroc_of_counts`), vectorised over resamples."""
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


# --- the book's models ------------------------------------------------------------------------


def set_bits(eval_set: EvalSet, codec: str, profile: str) -> np.ndarray:
    """:func:`compressed_bits` of a scored set (uint8 in the model's geometry), cached by the
    images' content and the compressor (codec, settings, library versions)."""
    images = eval_set.images
    key = {"images_sha256": scoring.images_sha256(images), "compressor": compressor_id(codec)}
    return scoring.cached(profile, f"bits-{codec}-{key['images_sha256'][:16]}", key,
                          lambda: {"bits": compressed_bits(images.numpy(), codec)})["bits"]


# In-distribution images the density-of-states KDE is fitted on (the first of the fit set).
DOS_FIT_IMAGES = 2_000


def per_image_scores(model: DensityModel, fit: dict[str, np.ndarray] | None,
                     x: dict[str, np.ndarray], n_dims: int, bits: dict[str, np.ndarray],
                     more: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Every per-image score of one set (``x``: its cached scores), larger = more OOD:

    - ``NLL``: bits/dim, the raw-likelihood baseline;
    - ``typicality (M = 1)``: $|-\\log p(x) - \\hat H|$ with $\\hat H$ from ``fit`` (the
      held-out split's scores; ``fit=None``: no fitted score, for a model that trained on it);
    - ``complexity (<codec>)``: $S(x)$ with the set's compressed lengths ``bits[codec]``;
    - ``density of states``: :func:`dos_score` of the model's additive parts (Glow:
      $\\log p(z)$, $\\log|\\det|$; PixelCNN: per-channel log-probabilities; VAE: its ELBO parts
      and importance-weighting gain), fitted on ``fit``;
    - ``likelihood ratio`` where ``more`` holds ``log_px_bg`` (the background model's
      log-likelihoods of the same images) and ``WAIC`` where it holds ``log_px_members``
      (``[M, N]``, every ensemble member's), see :class:`ood_lib.ensemble.Companions`.
    """
    parts = list(model.additive_parts)
    more = more or {}
    out = {"NLL": x["bpd"]}
    if fit is not None:
        out["typicality (M = 1)"] = typicality_score(x["log_px"], entropy_estimate(fit["log_px"]))
    for codec, b in bits.items():
        out[f"complexity ({CODEC_NAMES[codec]})"] = complexity_score(x["bpd"], n_dims, b)
    if fit is not None:
        # the KDE costs (fit rows) x (scored rows) kernel evaluations: fit on the first 2,000
        fit_stats = np.stack([fit[p][:DOS_FIT_IMAGES] for p in parts], 1)
        out["density of states (joint KDE)"] = dos_score(fit_stats,
                                                         np.stack([x[p] for p in parts], 1))
    if "log_px_bg" in more:
        out["likelihood ratio"] = likelihood_ratio(x["log_px"], more["log_px_bg"])
    if "log_px_members" in more:
        out["WAIC"] = waic_score(more["log_px_members"])
    return out


def pair_label(dataset: str, ood: str) -> str:
    """``"CIFAR10 → SVHN-Test"``: a training set and the OOD set it is scored against."""
    return f"{data.DISPLAY_NAMES[dataset]} → {ood}"


def detection_table(pairs: Mapping[tuple[str, str], scoring.ScoredPair],
                    bits: Mapping[tuple[str, str], dict[str, dict[str, np.ndarray]]],
                    companions: Mapping[tuple[str, str], Companions], profile: str,
                    seed: int = 0,
                    extra: Mapping[tuple[str, str], dict[str, dict[str, np.ndarray]]] | None = None,
                    ) -> tuple[list[records.Detection], dict]:
    """Every per-image score of every (model, training set) on its test set against its OOD
    set: one :class:`~ood_lib.records.Detection` each (``bits[run][role][codec]``: compressed
    lengths; ``companions[run]``: the run's background model and ensemble, if any), and the ROC
    curves, keyed by ``(run, method)``; ``extra[run][role][method]``: scores computed elsewhere
    (DoSE, :mod:`ood_lib.analysis.dose`) to report beside them. Each pair comes from
    :func:`ood_lib.scoring.with_held_out`: fitted scores are fitted on its ``"val"`` role, and
    left out where it has none."""
    rows, curves = [], {}
    for run, pair in pairs.items():
        fit, test, ood = pair.scores.get("val"), pair.scores["test"], pair.scores["ood"]
        model, more = pair.trained.model, companions[run]
        s_test = per_image_scores(model, fit, test, pair.n_dims, bits[run]["test"],
                                  more.log_px(pair.sets["test"], profile, test["log_px"]))
        s_ood = per_image_scores(model, fit, ood, pair.n_dims, bits[run]["ood"],
                                 more.log_px(pair.sets["ood"], profile, ood["log_px"]))
        added = (extra or {}).get(run, {})
        s_test.update(added.get("test", {}))
        s_ood.update(added.get("ood", {}))
        for method in s_test:
            rows.append(records.Detection(
                model=run[0], trained_on=run[1], ood=pair.sets["ood"].label, method=method,
                **detection_row(s_test[method], s_ood[method], seed=seed),
                images=f"{len(test['bpd']):,} / {len(ood['bpd']):,}"))
            curves[(run, method)] = roc_curve(s_test[method], s_ood[method])
    return rows, curves


def other_sets_table(pair: scoring.ScoredPair, sets: Sequence[EvalSet], profile: str,
                     companions: Companions, seed: int = 0) -> pd.DataFrame:
    """AUROC of every per-image score (PNG as the compressor) of ``pair``'s model on each of
    ``sets`` (other OOD sets, controls) against its test set, with each set's coverage;
    ``pair`` as :func:`ood_lib.scoring.with_held_out` gives it."""
    model, fit, test = pair.trained.model, pair.scores.get("val"), pair.scores["test"]
    s_test = per_image_scores(model, fit, test, pair.n_dims,
                              {"png": set_bits(pair.sets["test"], "png", profile)},
                              companions.log_px(pair.sets["test"], profile, test["log_px"]))
    rows = []
    for s in sets:
        x = scoring.score(pair.trained, s, profile)
        s_x = per_image_scores(model, fit, x, pair.n_dims, {"png": set_bits(s, "png", profile)},
                               companions.log_px(s, profile, x["log_px"]))
        rows += [{"set": s.label, "images": s.coverage, "method": method,
                  "auroc": detection_row(s_test[method], s_x[method], seed=seed)["auroc"]}
                 for method in s_test]
    return pd.DataFrame(rows)
