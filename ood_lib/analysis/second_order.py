r"""Second-order analysis: why a lower-variance data set can look more likely (Section 5).

Expand the log-density of a trained flow around a point $x_0$ (we take the training set's mean
image), with $g = \nabla_x \log p(x_0)$ and $H = \nabla^2_x \log p(x_0)$:

$$\log p(x) \approx \log p(x_0) + g^\top (x - x_0) + \tfrac12 (x - x_0)^\top H (x - x_0).$$

Take the expectation under a distribution $q$ with mean $\mu_q$ and covariance $\Sigma_q$, and
write $\delta_q = \mu_q - x_0$. Since $\mathbb E_q[(x - x_0)(x - x_0)^\top] = \Sigma_q +
\delta_q \delta_q^\top$,

$$\mathbb E_q[\log p(x)] \approx \log p(x_0)
  + \underbrace{g^\top \delta_q}_{\text{first order}}
  + \underbrace{\tfrac12 \operatorname{Tr}\{H \delta_q \delta_q^\top\}}_{\text{mean shift}}
  + \underbrace{\tfrac12 \operatorname{Tr}\{H \Sigma_q\}}_{\text{covariance}} .$$

For a log-density that is exactly quadratic (a linear flow with a Gaussian base) this is an
equality. The paper assumes that $q$ and the training distribution $p^*$ share their mean
($\delta_q = \delta_{p^*} = 0$) and keeps only the difference of the covariance terms,

$$\mathbb E_q[\log p(x)] - \mathbb E_{p^*}[\log p(x)] \approx
  \tfrac12 \operatorname{Tr}\{H (\Sigma_q - \Sigma_{p^*})\}.$$

We report every term separately (:class:`Expansion`, :func:`gap`), plus the covariance term
with only the diagonals of $H$ and $\Sigma$, $\tfrac12 \sum_i H_{ii} \Sigma_{ii}$, which is
what the paper's closed form (:mod:`ood_lib.analysis.closed_form`) uses.

**Units.** All statistics are in the model's input units, $u = (x_n + \tfrac12)/2^n - \tfrac12$
for the $n$-bit level $x_n$ of a pixel (bin centres, what evaluation scores; see
:func:`ood_lib.transforms.dequantize`), not on the $[0, 1]$ scale: for $n = 8$ a variance on $[0, 1]$
(level / 255) is $(256/255)^2 \approx 1.0078$ times the same variance in input units. Moments,
traces and expansions are float64. The Hessian-vector products run in the trained model's own
float32 (:data:`HESSIAN_DTYPE`): on this CPU float64 convolutions take about four times as
long, and :func:`precision_check` measures what float32 costs in accuracy against a float64
copy of the same model.

**Exact trace.** :func:`derivatives` builds the whole Hessian, one Hessian-vector product (HVP)
$H e_j = H_{:, j}$ per input dimension ($D$ of them: 3,072 for CIFAR-10), by forward-over-reverse
differentiation vectorised over a chunk of basis vectors. With $H$ stored, every trace is read
off it: $\operatorname{Tr}\{H S\} = \sum_{ij} H_{ij} S_{ij}$ for symmetric $S$.

**Where it holds** (shrinking sweeps, moving expansion points, the exact path account) is
measured in :mod:`ood_lib.analysis.validity`; the constant-volume Glow's closed forms are in
:mod:`ood_lib.analysis.closed_form`.

**Interventions** that lower the variance of in-distribution images: :func:`contrast` (scale
around the mean image) and :func:`ood_lib.transforms.grey` (BT.601 luma, replicated to three channels).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.func import grad, jvp, vmap
from tqdm.auto import tqdm

from ood_lib import scoring, transforms
from ood_lib.models.base import copy_as, evaluate
from ood_lib.scoring import ScoredPair

F64 = torch.float64
# Precision of the Hessian-vector products of :func:`analyse` (see the module docstring).
HESSIAN_DTYPE = torch.float32


def _check_uint8(x: Tensor, what: str) -> None:
    if x.dtype != torch.uint8:
        raise ValueError(f"{what}: expected uint8 pixel levels 0..255, got {x.dtype}")


# --------------------------------------------------------------------------- data statistics


def input_units(x: Tensor, n_bits: int = 8) -> Tensor:
    r"""uint8 images ``[N, C, H, W]`` -> float64 ``[N, D]`` in input units
    $u = (x_n + \tfrac12)/2^n - \tfrac12$, $x_n = \lfloor x / 2^{8-n} \rfloor$, flattened in
    (C, H, W) order (the bin centres of :func:`ood_lib.transforms.dequantize`)."""
    _check_uint8(x, "input_units")
    if x.ndim != 4:
        raise ValueError(f"input_units expects [N, C, H, W], got {list(x.shape)}")
    # x_n = x >> (8 - n)
    levels = (x >> (8 - n_bits)).to(F64)  # [N, C, H, W]
    # u = (x_n + 1/2) / 2^n - 1/2
    return ((levels + 0.5) / 2**n_bits - 0.5).flatten(1)  # [N, D]


@dataclass
class Moments:
    r"""Mean and covariance of a set of images in input units: ``mean`` $\mu$ ``[D]``,
    ``cov`` $\Sigma = \frac1N \sum_i (u_i - \mu)(u_i - \mu)^\top$ ``[D, D]`` (the 1/N,
    maximum-likelihood normalisation), ``n`` images of ``shape`` (C, H, W)."""

    mean: Tensor
    cov: Tensor
    n: int
    shape: tuple[int, int, int]

    @property
    def var(self) -> Tensor:
        """Per-dimension variances, the diagonal of ``cov`` ``[D]``."""
        return self.cov.diagonal()

    @property
    def var_map(self) -> Tensor:
        """``var`` as a per-pixel map ``[C, H, W]``."""
        return self.var.reshape(self.shape)


def moments(images: Tensor, n_bits: int = 8, chunk: int = 5000) -> Moments:
    """:class:`Moments` of uint8 ``images`` ``[N, C, H, W]`` in input units, in float64, in two
    passes of ``chunk`` images (mean first, then the centred second moment); the per-pixel
    marginals that describe a data set on the [0, 1] scale are
    :func:`ood_lib.data.stats.pixel_moments`."""
    n = images.shape[0]
    if n < 1:
        raise ValueError("moments needs at least one image")
    d = images[0].numel()
    total = torch.zeros(d, dtype=F64)
    for i in range(0, n, chunk):
        total += input_units(images[i : i + chunk], n_bits).sum(0)
    # mu = 1/N sum_i u_i
    mean = total / n  # [D]
    cov = torch.zeros(d, d, dtype=F64)
    for i in range(0, n, chunk):
        centred = input_units(images[i : i + chunk], n_bits) - mean  # [B, D]
        # Sigma += sum_i (u_i - mu)(u_i - mu)^T
        cov.addmm_(centred.T, centred)  # [D, D]
    cov /= n
    return Moments(mean=mean, cov=cov, n=n, shape=tuple(int(s) for s in images.shape[1:]))


# --------------------------------------------------------------------------- derivatives


def log_density(
    model: torch.nn.Module, shape: tuple[int, int, int] | None = None, dtype: torch.dtype = F64
) -> Callable[[Tensor], Tensor]:
    """The function ``u [B, D] -> log p(u) [B]`` (nats) of a continuous model, evaluated by a
    copy of it in ``dtype`` (float64 by default) in eval mode (the caller's model is left
    untouched). ``shape`` is the image shape (C, H, W); by default ``model.input_shape``. Rows
    are scored independently."""
    if getattr(model, "likelihood", None) != "continuous":
        raise ValueError(
            "log_density needs a continuous density (model.likelihood == 'continuous'), got "
            f"{type(model).__name__} with likelihood {getattr(model, 'likelihood', None)!r}"
        )
    shape = tuple(shape if shape is not None else model.input_shape)
    net = copy_as(model, dtype)
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")

    def f(u: Tensor) -> Tensor:
        x = u.to(device=device, dtype=dtype).reshape(-1, *shape)  # [B, C, H, W]
        return net.log_prob_parts(x)["log_px"]  # [B]

    return f


@dataclass
class Derivatives:
    """$\\log p(x_0)$, gradient ``grad`` ``[D]`` and Hessian ``hessian`` ``[D, D]`` (symmetrised)
    of $\\log p$ at $x_0$, the number of Hessian-vector products used and the wall time."""

    log_p_x0: float
    grad: Tensor
    hessian: Tensor
    n_hvp: int
    seconds: float


def gradient(f: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``v [D] -> grad log p(v) [D]`` of ``f`` (``[B, D] -> [B]``, rows independent)."""
    return grad(lambda v: f(v[None])[0])


def hessian_products(f: Callable[[Tensor], Tensor], y: Tensor, chunk: int = 64,
                     dtype: torch.dtype = F64) -> Callable[[Tensor], Tensor]:
    r"""``V [N, D] -> (H(y) v_i)_i [N, D]`` (float64), $H(y)$ the Hessian of ``f`` at ``y``: each
    product by forward-mode differentiation of the gradient,
    $H v = \frac{d}{d\epsilon} \nabla f(y + \epsilon v)|_{\epsilon=0}$ (``jvp`` of ``grad``),
    vectorised (``vmap``) over ``chunk`` rows so the forward and backward pass at $y$ is
    shared; computed in ``dtype``, the precision ``f`` evaluates in."""
    y = y.detach().to(dtype).flatten()
    grad_f = gradient(f)
    # H v = d/de grad f(y + e v) at e = 0
    hvps = vmap(lambda u: jvp(grad_f, (y,), (u,))[1])
    return lambda v: torch.cat([hvps(v[i:i + chunk].to(dtype)).to(F64)
                                for i in range(0, len(v), chunk)])


def derivatives(
    f: Callable[[Tensor], Tensor], x0: Tensor, chunk: int = 64, progress: bool = False,
    dtype: torch.dtype = F64,
) -> Derivatives:
    r"""Value, gradient and full Hessian of ``f`` (``[B, D] -> [B]``, e.g. :func:`log_density`
    in ``dtype``) at ``x0`` (``[D]`` or any shape with D elements), returned in float64.

    The Hessian is built ``chunk`` columns at a time, $H_{:, j} = H e_j$, by
    :func:`hessian_products`. $D$ products in all; never a full autograd Hessian."""
    start = time.perf_counter()
    x0 = x0.detach().to(F64).flatten()  # [D]
    d = x0.numel()
    products = hessian_products(f, x0, chunk, dtype)
    with torch.no_grad():
        log_p_x0 = float(f(x0[None].to(dtype))[0])
    g = gradient(f)(x0.to(dtype)).to(device=x0.device, dtype=F64)  # [D]
    hessian = torch.empty(d, d, dtype=F64, device=x0.device)
    for j in tqdm(range(0, d, chunk), desc="Hessian columns", disable=not progress):
        cols = torch.arange(j, min(j + chunk, d), device=x0.device)
        basis = torch.zeros(len(cols), d, dtype=F64, device=x0.device)  # [B, D]: rows e_j
        basis[torch.arange(len(cols)), cols] = 1.0
        # H[:, j] = H e_j (rows of H e_j are columns of H)
        hessian[:, j : j + chunk] = products(basis).to(x0.device).T  # [D, B]
    # H <- (H + H^T) / 2 (exact in exact arithmetic; removes round-off asymmetry)
    hessian = 0.5 * (hessian + hessian.T)
    return Derivatives(log_p_x0=log_p_x0, grad=g, hessian=hessian, n_hvp=d,
                       seconds=time.perf_counter() - start)


# --------------------------------------------------------------------------- the expansion


@dataclass
class Expansion:
    r"""The second-order prediction of $\mathbb E_q[\log p(x)]$ for one distribution $q$, term by
    term, in nats per image (see the module docstring)."""

    log_p_x0: float
    first_order: float  # g^T delta_q
    mean_shift: float  # 1/2 delta_q^T H delta_q
    covariance: float  # 1/2 Tr{H Sigma_q}
    covariance_diagonal: float  # 1/2 sum_i H_ii Sigma_q,ii

    @property
    def total(self) -> float:
        return self.log_p_x0 + self.first_order + self.mean_shift + self.covariance

    @property
    def total_diagonal(self) -> float:
        return self.log_p_x0 + self.first_order + self.mean_shift + self.covariance_diagonal


def expand(d: Derivatives, x0: Tensor, m: Moments) -> Expansion:
    """:class:`Expansion` of $\\mathbb E_q[\\log p]$ around ``x0`` for $q$ with moments ``m``,
    from the derivatives ``d`` taken at that same ``x0``."""
    h = d.hessian
    x0 = x0.to(device=h.device, dtype=F64).flatten()  # [D]
    # delta_q = mu_q - x0
    delta = m.mean.to(h) - x0  # [D]
    cov = m.cov.to(h)  # [D, D]
    return Expansion(
        log_p_x0=d.log_p_x0,
        # g^T delta_q
        first_order=float(d.grad.to(h) @ delta),
        # 1/2 Tr{H delta delta^T} = 1/2 delta^T H delta
        mean_shift=float(0.5 * delta @ (h @ delta)),
        # 1/2 Tr{H Sigma_q} = 1/2 sum_ij H_ij Sigma_ij  (both symmetric)
        covariance=float(0.5 * torch.dot(h.reshape(-1), cov.reshape(-1))),
        # 1/2 sum_i H_ii Sigma_ii
        covariance_diagonal=float(0.5 * torch.dot(h.diagonal(), cov.diagonal())),
    )


def gap(q: Expansion, p: Expansion) -> dict[str, float]:
    r"""Predicted $\mathbb E_q[\log p] - \mathbb E_{p^*}[\log p]$ (nats per image), per term.

    ``paper`` is the paper's equal-means term $\tfrac12 \operatorname{Tr}\{H(\Sigma_q -
    \Sigma_{p^*})\}$ (the same number as ``covariance``); ``total`` adds the first-order and
    mean-shift terms that the paper assumes away. Both expansions must share $x_0$."""
    if q.log_p_x0 != p.log_p_x0:
        raise ValueError("gap: the two expansions were taken around different points x0")
    out = {
        "first_order": q.first_order - p.first_order,
        "mean_shift": q.mean_shift - p.mean_shift,
        "covariance": q.covariance - p.covariance,
        "covariance_diagonal": q.covariance_diagonal - p.covariance_diagonal,
        "total": q.total - p.total,
        "total_diagonal": q.total_diagonal - p.total_diagonal,
    }
    out["paper"] = out["covariance"]
    return out


# --------------------------------------------------------------------------- interventions


def contrast(images: Tensor, a: float, mean: Tensor) -> Tensor:
    """uint8 ``images`` ``[N, C, H, W]`` -> ``m + a (x - m)`` around the per-pixel ``mean`` $m$
    (``[C, H, W]``, 0..255 scale), rounded (half to even) and clipped to 0..255, uint8. Scales
    every pixel's variance by about $a^2$ and keeps the mean image."""
    _check_uint8(images, "contrast")
    m = mean.to(F64)  # [C, H, W]
    # x' = m + a (x - m)
    y = m + a * (images.to(F64) - m)  # [N, C, H, W]
    return y.round().clamp(0, 255).to(torch.uint8)


def blend_grey(images: Tensor, t: float) -> Tensor:
    r"""uint8 RGB ``[N, 3, H, W]`` -> $(1 - t) x + t\,\mathrm{grey}(x)$ (:func:`ood_lib.transforms.grey`), rounded
    (half to even) to uint8: the paper's graying continuum, $t = 0$ the images, $t = 1$ grey."""
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"blend_grey: t must be in [0, 1], got {t}")
    # x_t = (1 - t) x + t grey(x)
    y = (1 - t) * images.to(F64) + t * transforms.grey(images).to(F64)  # [N, 3, H, W]
    return y.round().clamp(0, 255).to(torch.uint8)


# --------------------------------------------------------------------------- trained models


@dataclass
class PairAnalysis:
    """The expansion of a trained flow around $x_0$ = the mean of the scored training images,
    applied to each of the paper's three sets (roles ``train``, ``test``, ``ood``), beside the
    measured mean $\\log p$ of the same images (from the score cache)."""

    model_key: str
    derivatives: Derivatives
    x0: Tensor
    moments: dict[str, Moments]
    expansions: dict[str, Expansion]
    measured: dict[str, float]

    def gaps(self, q: str = "ood", p: str = "train") -> dict[str, float]:
        """Predicted gap per term (:func:`gap`) and the ``measured`` one, E_q - E_p (nats)."""
        return {**gap(self.expansions[q], self.expansions[p]),
                "measured": self.measured[q] - self.measured[p]}


# Bump when the cached derivatives change meaning (2: float32 Hessian-vector products).
_DERIVATIVES_VERSION = "2"
# Columns per vectorised chunk of Hessian-vector products in :func:`analyse`.
_HVP_CHUNK = 128


def analyse(pair: ScoredPair, profile: str, progress: bool = True) -> PairAnalysis:
    """Derivatives of ``log p`` of ``pair``'s model at the training images' mean (cached by
    content: checkpoint and image hashes), the three sets' moments and expansions."""
    trained = pair.trained
    stats = {r: moments(s.images, trained.model.n_bits) for r, s in pair.sets.items()}
    x0 = stats["train"].mean
    key = scoring.cache_key(trained, pair.sets["train"].images, analysis=_DERIVATIVES_VERSION)

    def compute() -> dict[str, np.ndarray]:
        d = derivatives(log_density(trained.model, dtype=HESSIAN_DTYPE), x0, chunk=_HVP_CHUNK,
                        progress=progress, dtype=HESSIAN_DTYPE)
        return {"log_p_x0": np.array(d.log_p_x0), "grad": d.grad.cpu().numpy(),
                "hessian": d.hessian.cpu().numpy(), "seconds": np.array(d.seconds)}

    arrays = scoring.cached(profile, f"hessian-{trained.key}", key, compute)
    d = Derivatives(log_p_x0=float(arrays["log_p_x0"]), grad=torch.from_numpy(arrays["grad"]),
                    hessian=torch.from_numpy(arrays["hessian"]), n_hvp=x0.numel(),
                    seconds=float(arrays["seconds"]))
    return PairAnalysis(
        model_key=trained.key, derivatives=d, x0=x0, moments=stats,
        expansions={r: expand(d, x0, m) for r, m in stats.items()},
        measured={r: float(pair.scores[r]["log_px"].mean()) for r in pair.sets})


@dataclass
class PrecisionCheck:
    r"""The Hessian of :func:`analyse` (float32 products) against the same model's float64 one
    at the same $x_0$: the largest entry difference relative to the largest entry, the relative
    difference of $\tfrac12 \operatorname{Tr}\{H(\Sigma_q - \Sigma_{p^*})\}$, and the number
    of positive eigenvalues in each precision."""

    model_key: str
    max_entry_error: float
    covariance_term_error: float
    positive_eigenvalues: dict[str, int]


def precision_check(pair: ScoredPair, a: PairAnalysis, profile: str,
                    progress: bool = True) -> PrecisionCheck:
    """Rebuild ``a``'s Hessian with float64 products (cached by content like the float32 one)
    and compare (:class:`PrecisionCheck`): what :data:`HESSIAN_DTYPE` costs in accuracy."""
    trained = pair.trained
    key = scoring.cache_key(trained, pair.sets["train"].images,
                            analysis=_DERIVATIVES_VERSION + "-float64")
    h64 = torch.from_numpy(scoring.cached(
        profile, f"hessian64-{trained.key}", key,
        lambda: {"hessian": derivatives(log_density(trained.model), a.x0, chunk=_HVP_CHUNK,
                                        progress=progress).hessian.cpu().numpy()})["hessian"])
    h32 = a.derivatives.hessian
    delta = a.moments["ood"].cov - a.moments["train"].cov
    term = {name: 0.5 * float((h * delta).sum()) for name, h in (("32", h32), ("64", h64))}
    return PrecisionCheck(
        model_key=trained.key,
        max_entry_error=float((h32 - h64).abs().max() / h64.abs().max()),
        covariance_term_error=abs(term["32"] - term["64"]) / abs(term["64"]),
        positive_eigenvalues={f"float{n}": int((torch.linalg.eigvalsh(h) > 0).sum())
                              for n, h in (("32", h32), ("64", h64))})


def expectation_table(a: PairAnalysis, labels: dict[str, str]) -> pd.DataFrame:
    """Per set: the expansion's terms, its prediction of E[log p] (full and diagonal-only) and
    the measured mean log p (nats per image)."""
    rows = []
    for role, e in a.expansions.items():
        rows.append({"set": labels[role], "log p(x0)": e.log_p_x0, "first order": e.first_order,
                     "mean shift": e.mean_shift, "covariance": e.covariance,
                     "predicted E[log p]": e.total, "predicted (diagonal)": e.total_diagonal,
                     "measured E[log p]": a.measured[role]})
    return pd.DataFrame(rows)


def intervention_sweep(pair: ScoredPair, a: PairAnalysis, images: dict[str, Tensor],
                       transform: Callable[[Tensor, float], Tensor], params: list[float],
                       profile: str, name: str = "param") -> pd.DataFrame:
    """For each set (label -> uint8 images) and parameter value ``p`` of ``transform(images,
    p)`` (uint8 -> uint8, e.g. :func:`contrast` or :func:`blend_grey`): the measured mean
    bits/dim of the transformed images (scored through the cache) and the expansion's
    prediction from their *measured* moments (rounding and clipping make them differ from any
    formula in ``p``). The parameter's column is called ``name``."""
    trained = pair.trained
    n_dims = a.x0.numel()
    rows = []
    for label, x in images.items():
        for p in params:
            y = transform(x, p)
            scores = scoring.cached(
                profile, f"intervention-{trained.key}-{scoring.images_sha256(y)[:16]}",
                scoring.cache_key(trained, y),
                lambda y=y: evaluate(trained.model, y))
            e = expand(a.derivatives, a.x0, moments(y, trained.model.n_bits))
            rows.append({"set": label, name: p, "images": len(y),
                         "measured bpd": float(scores["bpd"].mean()),
                         "predicted bpd": float(trained.model.bits_per_dim(e.total, n_dims)),
                         "predicted bpd (diagonal)":
                             float(trained.model.bits_per_dim(e.total_diagonal, n_dims))})
    return pd.DataFrame(rows)
