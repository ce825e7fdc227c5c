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
what the paper's closed form below uses.

**Units.** All statistics are in the model's input units, $u = (x_n + \tfrac12)/2^n - \tfrac12$
for the $n$-bit level $x_n$ of a pixel (bin centres, what evaluation scores; see
:func:`ood_lib.transforms.dequantize`), not on the $[0, 1]$ scale: for $n = 8$ a variance on $[0, 1]$
(level / 255) is $(256/255)^2 \approx 1.0078$ times the same variance in input units. Everything is
computed in float64 on a float64 copy of the model.

**Exact trace.** :func:`derivatives` builds the whole Hessian, one Hessian-vector product (HVP)
$H e_j = H_{:, j}$ per input dimension ($D$ of them: 3,072 for CIFAR-10), by forward-over-reverse
differentiation vectorised over a chunk of basis vectors. With $H$ stored, every trace is read
off it: $\operatorname{Tr}\{H S\} = \sum_{ij} H_{ij} S_{ij}$ for symmetric $S$.

**Constant-volume Glow in closed form** (:func:`closed_forms`). Idealise the model as one linear
map per pixel, $z_{hw} = M x_{hw}$ with $M = W_K \cdots W_1$ the product of the 1x1-convolution
matrices (flow order: $W_1$ acts first), followed by $\mathcal N(0, \sigma^2 I)$. Then
$\log p(x) = -\frac{1}{2\sigma^2} \sum_{hw} \|M x_{hw}\|^2 + \text{const}$ is exactly quadratic,
$H = -\frac{1}{\sigma^2} \operatorname{blockdiag}_{hw}(M^\top M)$, and with equal means

$$\tfrac12 \operatorname{Tr}\{H \Delta\} = -\frac{1}{2\sigma^2} \sum_{hw}
  \operatorname{Tr}\{M^\top M \Delta_{hw}\}, \qquad \Delta = \Sigma_q - \Sigma_{p^*},$$

where $\Delta_{hw}$ is the $C \times C$ block of $\Delta$ at pixel $hw$: covariances between
different pixels drop out *exactly* ($H$ has no cross-pixel entries). Keeping only the diagonal
of each block (the per-pixel variances $\Delta_{c,hw}$) gives

$$\text{exact} = -\frac{1}{2\sigma^2} \sum_c \|M_{:, c}\|^2 \sum_{hw} \Delta_{c,hw},
  \qquad (M^\top M)_{cc} = \|M_{:, c}\|^2 ;$$

what this drops is $-\frac{1}{2\sigma^2} \sum_{c \ne c'} (M^\top M)_{cc'} \sum_{hw}
\Delta_{cc',hw}$, the change in cross-channel covariance within a pixel (zero when $M^\top M$ is
diagonal, e.g. $M$ orthogonal). The paper's published expression replaces
$\|M_{:,c}\|^2$ by $\alpha_c^2$, $\alpha_c = \prod_k \sum_j u_{k,c,j}$, the product over layers
of the row sums of each matrix ($u_{k,c,j}$ = entry in row $c$ = output channel, column $j$ =
input channel of the $k$-th matrix, as in :class:`~ood_lib.models.glow.InvConv1x1`,
$y_c = \sum_j u_{k,c,j} x_j$). The two agree when every $u_k$ is a (signed) permutation, and in
general differ. Neither sees actnorm scales, additive couplings, split priors or the learned
top prior's scale; on the trained model they are idealisations, the HVP Hessian is not.
After Glow's first ``squeeze``, the level-1 matrices act on $4C$ channels that mix a colour with
a 2x2 position (:func:`squeezed`), so the variance maps must be squeezed first.

**Interventions** that lower the variance of in-distribution images: :func:`contrast` (scale
around the mean image) and :func:`grey` (BT.601 luma, replicated to three channels).
"""

from __future__ import annotations

import copy
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
from ood_lib.likelihood import evaluate
from ood_lib.models.glow import squeeze
from ood_lib.scoring import ScoredPair

F64 = torch.float64


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
    passes of ``chunk`` images (mean first, then the centred second moment)."""
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
    model: torch.nn.Module, shape: tuple[int, int, int] | None = None
) -> Callable[[Tensor], Tensor]:
    """The function ``u [B, D] -> log p(u) [B]`` (nats) of a continuous model, evaluated by a
    float64 copy of it in eval mode (the caller's model is left untouched). ``shape`` is the
    image shape (C, H, W); by default ``model.input_shape``. Rows are scored independently."""
    if getattr(model, "likelihood", None) != "continuous":
        raise ValueError(
            "log_density needs a continuous density (model.likelihood == 'continuous'), got "
            f"{type(model).__name__} with likelihood {getattr(model, 'likelihood', None)!r}"
        )
    shape = tuple(shape if shape is not None else model.input_shape)
    net = copy.deepcopy(model).to(F64).eval().requires_grad_(False)
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")

    def f(u: Tensor) -> Tensor:
        x = u.to(device=device, dtype=F64).reshape(-1, *shape)  # [B, C, H, W]
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


def derivatives(
    f: Callable[[Tensor], Tensor], x0: Tensor, chunk: int = 64, progress: bool = False
) -> Derivatives:
    r"""Value, gradient and full Hessian of ``f`` (``[B, D] -> [B]``, e.g. :func:`log_density`)
    at ``x0`` (``[D]`` or any shape with D elements), in float64.

    The Hessian is built ``chunk`` columns at a time, $H_{:, j} = H e_j$, each Hessian-vector
    product by forward-mode differentiation of the gradient,
    $H v = \frac{d}{d\epsilon} \nabla f(x_0 + \epsilon v)|_{\epsilon=0}$ (``jvp`` of ``grad``),
    vectorised (``vmap``) over the chunk's basis vectors so the forward and backward pass at
    $x_0$ is shared. $D$ products in all; never a full autograd Hessian."""
    start = time.perf_counter()
    x0 = x0.detach().to(F64).flatten()  # [D]
    d = x0.numel()

    def f1(x: Tensor) -> Tensor:  # one image [D] -> scalar log p
        return f(x[None])[0]

    grad_f = grad(f1)

    def hvp(v: Tensor) -> Tensor:
        # H v = d/de grad f(x0 + e v) at e = 0
        return jvp(grad_f, (x0,), (v,))[1]  # [D]

    hvps = vmap(hvp)
    with torch.no_grad():
        log_p_x0 = float(f1(x0))
    g = grad_f(x0).to(x0.device)  # [D]
    hessian = torch.empty(d, d, dtype=F64, device=x0.device)
    for j in tqdm(range(0, d, chunk), desc="Hessian columns", disable=not progress):
        cols = torch.arange(j, min(j + chunk, d), device=x0.device)
        basis = torch.zeros(len(cols), d, dtype=F64, device=x0.device)  # [B, D]: rows e_j
        basis[torch.arange(len(cols)), cols] = 1.0
        # H[:, j] = H e_j (rows of H e_j are columns of H)
        hessian[:, j : j + chunk] = hvps(basis).to(x0.device).T  # [D, B]
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


# --------------------------------------------------------------------------- exact account


@dataclass
class PathAccount:
    r"""$\log p(x) - \log p(x_0)$ of each image (nats, ``[N]`` tensors), measured directly and
    as the integral of the gradient along the straight path (:func:`path_integral`), split into
    what the first- and second-order terms of the expansion at $x_0$ carry and the rest."""

    measured: Tensor  # log p(x) - log p(x0), two forward passes
    integral: Tensor  # Gauss-Legendre with 2n nodes
    error: Tensor  # |integral with 2n nodes - integral with n nodes|
    first_order: Tensor  # g^T (x - x0)
    second_order: Tensor  # 1/2 (x - x0)^T H (x - x0)
    nodes: int  # n

    @property
    def remainder(self) -> Tensor:
        """What neither term carries: integral - first order - second order."""
        return self.integral - self.first_order - self.second_order


def _gauss_legendre(n: int) -> tuple[Tensor, Tensor]:
    """Nodes and weights of the n-point Gauss-Legendre rule on [0, 1] (float64)."""
    t, w = np.polynomial.legendre.leggauss(n)
    return torch.from_numpy((t + 1) / 2), torch.from_numpy(w / 2)


def path_integral(f: Callable[[Tensor], Tensor], x0: Tensor, x: Tensor, nodes: int = 8,
                  chunk: int = 64) -> PathAccount:
    r"""The exact account of $\log p(x) - \log p(x_0)$ for each row of ``x`` (``[N, D]``, input
    units) from gradients alone: with $\Delta = x - x_0$,

    $$\log p(x) - \log p(x_0) = \int_0^1 \nabla \log p(x_0 + t\Delta)^\top \Delta \, dt
      \approx \sum_k w_k \nabla \log p(x_0 + t_k \Delta)^\top \Delta ,$$

    by Gauss-Legendre quadrature with $2n$ nodes (exact for integrands of degree $< 4n$), the
    difference to the $n$-node rule reported as its error. Beside it, the terms of the expansion
    at $x_0$: $g^\top \Delta$ and $\tfrac12 \Delta^\top H \Delta$ (one Hessian-vector product
    per image). ``f`` maps ``[B, D]`` to ``[B]`` with rows scored independently
    (:func:`log_density`), so the gradient of a sum is every row's gradient."""
    x0 = x0.detach().to(F64).flatten()  # [D]
    x = x.detach().to(F64).reshape(len(x), -1)  # [N, D]
    delta = x - x0  # [N, D]

    def along(n: int) -> Tensor:
        t, w = _gauss_legendre(n)
        total = torch.zeros(len(x), dtype=F64)
        for start in range(0, len(x), chunk):
            d = delta[start:start + chunk]  # [B, D]
            points = (x0 + t[:, None, None] * d).reshape(-1, d.shape[1])  # [n B, D]
            points.requires_grad_(True)
            (g,) = torch.autograd.grad(f(points).sum(), points)  # every row's gradient
            # sum_k w_k grad log p(x0 + t_k d)^T d
            total[start:start + chunk] = (w[:, None] * (g.reshape(n, *d.shape) * d).sum(-1)).sum(0)
        return total

    coarse, fine = along(nodes), along(2 * nodes)
    def f1(v: Tensor) -> Tensor:  # one image [D] -> scalar log p
        return f(v[None])[0]

    grad_f = grad(f1)
    with torch.no_grad():
        measured = f(x) - f(x0[None])[0]
    g0 = grad_f(x0)  # [D]
    hd = vmap(lambda v: jvp(grad_f, (x0,), (v,))[1])(delta)  # H Delta, [N, D]
    return PathAccount(measured=measured, integral=fine, error=(fine - coarse).abs(),
                       first_order=delta @ g0, second_order=0.5 * (delta * hd).sum(1),
                       nodes=nodes)


# --------------------------------------------------------------------------- closed forms


def mixing_matrix(weights: list[Tensor]) -> Tensor:
    r"""$M = W_K \cdots W_1$ for 1x1-convolution matrices ``weights`` in flow order (float64)."""
    m = torch.eye(weights[0].shape[0], dtype=F64)
    for w in weights:
        # M <- W_k M
        m = w.detach().to(F64).cpu() @ m  # [C, C]
    return m


def channel_factors(weights: list[Tensor]) -> dict[str, Tensor]:
    r"""Per channel, the factor that multiplies $-\frac{1}{2\sigma^2} \sum_{hw} \Delta_{c,hw}$:
    ``exact`` $\|M_{:,c}\|^2 = (M^\top M)_{cc}$ and ``paper`` $\alpha_c^2$,
    $\alpha_c = \prod_k \sum_j u_{k,c,j}$ (row sums). Both ``[C]``."""
    m = mixing_matrix(weights)
    # alpha_c = prod_k sum_j u_{k,c,j}
    alpha = torch.stack([w.detach().to(F64).cpu().sum(1) for w in weights]).prod(0)  # [C]
    # ||M[:, c]||^2 = (M^T M)_cc
    return {"exact": (m**2).sum(0), "paper": alpha**2}


def closed_forms(
    weights: list[Tensor], var_q: Tensor, var_p: Tensor, sigma: float = 1.0
) -> dict[str, float]:
    r"""Equal-means second-order gap of the idealised constant-volume Glow (module docstring):
    ``exact`` $= -\frac{1}{2\sigma^2} \sum_c \|M_{:,c}\|^2 \sum_{hw} (\sigma^2_q -
    \sigma^2_p)_{c,hw}$ (exact for per-pixel variances; cross-channel covariance changes
    dropped) and ``paper`` $= -\frac{1}{2\sigma^2} \sum_c \alpha_c^2 \sum_{hw} (\sigma^2_q -
    \sigma^2_p)_{c,hw}$. ``var_*`` are ``[C, H, W]`` maps in the channel layout the matrices act
    on (input units; see :func:`squeezed`)."""
    if var_q.shape != var_p.shape or var_q.ndim != 3:
        raise ValueError(f"var_q, var_p must be [C, H, W] maps, got {var_q.shape}, {var_p.shape}")
    if var_q.shape[0] != weights[0].shape[0]:
        c = weights[0].shape[0]
        raise ValueError(f"variance maps have {var_q.shape[0]} channels, matrices are {c}x{c}")
    # sum_hw (var_q - var_p)_c
    delta = (var_q.to(F64).cpu() - var_p.to(F64).cpu()).sum((1, 2))  # [C]
    return {name: float(-0.5 / sigma**2 * (factor * delta).sum())
            for name, factor in channel_factors(weights).items()}


def squeezed(x: Tensor) -> Tensor:
    """A per-pixel map ``[C, H, W]`` in the layout of Glow's level 1, ``[4C, H/2, W/2]``, by
    :func:`ood_lib.models.glow.squeeze` itself: ``out[4c + 2i + j, h, w] = x[c, 2h + i, 2w + j]``
    (squeezed channel ``4c + 2i + j`` is colour ``c`` at offset ``(i, j)`` of each 2x2 patch)."""
    if x.ndim != 3:
        raise ValueError(f"squeezed expects a [C, H, W] map, got {list(x.shape)}")
    return squeeze(x[None])[0]


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


def grey(images: Tensor) -> Tensor:
    """uint8 RGB ``[N, 3, H, W]`` -> BT.601 luma $Y = 0.299 R + 0.587 G + 0.114 B$
    (:func:`ood_lib.transforms.luma`), replicated to three channels (uint8, same shape)."""
    _check_uint8(images, "grey")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"grey expects RGB images [N, 3, H, W], got {list(images.shape)}")
    y = torch.from_numpy(transforms.luma(images.permute(0, 2, 3, 1).numpy()))  # [N, H, W]
    return y[:, None].expand_as(images).contiguous()


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


# Bump when the cached derivatives change meaning.
_DERIVATIVES_VERSION = "1"


def analyse(pair: ScoredPair, profile: str, progress: bool = True) -> PairAnalysis:
    """Derivatives of ``log p`` of ``pair``'s model at the training images' mean (cached by
    content: checkpoint and image hashes), the three sets' moments and expansions."""
    trained = pair.trained
    stats = {r: moments(s.images, trained.model.n_bits) for r, s in pair.sets.items()}
    x0 = stats["train"].mean
    key = scoring.cache_key(trained, pair.sets["train"].images, analysis=_DERIVATIVES_VERSION)

    def compute() -> dict[str, np.ndarray]:
        d = derivatives(log_density(trained.model), x0, progress=progress)
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


def cv_closed_forms(model: torch.nn.Module, a: PairAnalysis, q: str = "ood",
                    p: str = "train", sigma: float = 1.0) -> dict[str, float]:
    """Both closed forms for a constant-volume Glow, idealised as its level-1 1x1 convolutions
    followed by $\\mathcal N(0, \\sigma^2 I)$, with the per-pixel variances mapped to the level-1
    channels by :func:`squeezed`; beside them, the diagonal-only and full covariance terms of
    the Hessian of the real model (all E_q - E_p, nats per image)."""
    net = copy.deepcopy(model).to(F64)
    weights = net.invconv_weights()[: net.config.steps]  # level 1: the first K matrices
    forms = closed_forms(weights, squeezed(a.moments[q].var_map), squeezed(a.moments[p].var_map),
                         sigma)
    gaps = a.gaps(q, p)
    return {"paper closed form": forms["paper"], "exact closed form (idealised)": forms["exact"],
            "Hessian, diagonal only": gaps["covariance_diagonal"],
            "Hessian, full covariance": gaps["covariance"], "measured": gaps["measured"]}


def contrast_sweep(pair: ScoredPair, a: PairAnalysis, images: dict[str, Tensor],
                   alphas: list[float], mean: Tensor, profile: str) -> pd.DataFrame:
    """For each set (label -> uint8 images) and contrast ``alpha``: the measured mean bits/dim
    of the transformed images (:func:`contrast` around ``mean``, scored through the cache) and
    the expansion's prediction from their *measured* moments (clipping makes them differ from
    ``alpha^2`` times the originals')."""
    trained = pair.trained
    n_dims = a.x0.numel()
    rows = []
    for label, x in images.items():
        for alpha in alphas:
            y = contrast(x, alpha, mean)
            scores = scoring.cached(
                profile, f"contrast-{trained.key}-{scoring.images_sha256(y)[:16]}",
                scoring.cache_key(trained, y),
                lambda y=y: evaluate(trained.model, y))
            e = expand(a.derivatives, a.x0, moments(y, trained.model.n_bits))
            rows.append({"set": label, "alpha": alpha, "images": len(y),
                         "measured bpd": float(scores["bpd"].mean()),
                         "predicted bpd": float(trained.model.bits_per_dim(e.total, n_dims)),
                         "predicted bpd (diagonal)":
                             float(trained.model.bits_per_dim(e.total_diagonal, n_dims))})
    return pd.DataFrame(rows)
