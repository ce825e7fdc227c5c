r"""Where the second-order expansion holds, and what carries the rest of the gap.

:mod:`ood_lib.analysis.second_order` expands $\log p$ around one point $x_0$. On a trained Glow
the expansion's covariance term can overshoot the measured gap many times; this module measures
why, from derivatives of the model alone (``f`` is :func:`~ood_lib.analysis.second_order.
log_density`, images are rows in input units, float64 throughout).

**Shrinking towards** $x_0$ (:func:`shrink_sweep`). For $x_s = x_0 + s(x - x_0)$ and
$\Delta = x - x_0$, the expansion predicts

$$\log p(x_s) - \log p(x_0) \approx s\, g^\top \Delta + \tfrac{s^2}{2} \Delta^\top H \Delta ,$$

with an error $R(s) = O(s^3)$ for a smooth $\log p$. Averaged over a set, the measured change
$M(s)$ and the prediction $P(s)$ give the relative error $|R(s)| / |M(s)|$, which must fall at
least like $O(s)$. With $c_3 = R(s_{\min}) / s_{\min}^3$ read at the smallest $s$, the cubic
remainder $|c_3| s^3$ equals the set's covariance term $s^2 C$, $C = \tfrac12
\operatorname{Tr}\{H \Sigma\}$, at

$$s^\ast = |C / c_3| ;$$

beyond $s^\ast$ (measured in units of the data's actual spread, $s = 1$) the third-order term
is larger than the term the paper's argument rests on.

**Moving the expansion point** (:func:`covariance_term_at`). $\tfrac12 \operatorname{Tr}\{H(y)
(\Sigma_q - \Sigma_p)\}$ at any point $y$ without forming $H(y)$: with the centred images
$c_i$ of $q$ and $d_j$ of $p$ ($\Sigma_q = \frac1N \sum_i c_i c_i^\top$),

$$\tfrac12 \operatorname{Tr}\{H \Delta\Sigma\} = \tfrac{1}{2N} \sum_i c_i^\top H c_i
  - \tfrac{1}{2M} \sum_j d_j^\top H d_j ,$$

one Hessian-vector product per image. :func:`krylov_ritz_values` gives the extreme eigenvalues of
$H(y)$ from a few blocks more.

**The exact account** (:func:`path_integral`). $\log p(x) - \log p(x_0) = \int_0^1 \nabla \log
p(x_0 + t\Delta)^\top \Delta\, dt$, by Gauss-Legendre quadrature from gradients alone, split
into what the first-order term $g^\top \Delta$, the second-order term $\tfrac12 \Delta^\top H
\Delta$ and the remainder carry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ood_lib.analysis.second_order import gradient, hessian_products

F64 = torch.float64
LogDensity = Callable[[Tensor], Tensor]  # [B, D] -> [B], rows scored independently


def _rows(x: Tensor, x0: Tensor) -> tuple[Tensor, Tensor]:
    """``x0`` as ``[D]`` and ``x`` as ``[N, D]``, float64, checked to agree."""
    x0 = x0.detach().to(F64).flatten()
    x = x.detach().to(F64).reshape(len(x), -1)
    if x.shape[1] != x0.numel():
        raise ValueError(f"images have {x.shape[1]} dimensions, x0 has {x0.numel()}")
    return x, x0


def quadratic_forms(f: LogDensity, y: Tensor, v: Tensor, chunk: int = 64) -> Tensor:
    r"""$v_i^\top H(y) v_i$ for each row of ``v`` ``[N, D]``
    (:func:`~ood_lib.analysis.second_order.hessian_products`)."""
    v, y = _rows(v, y)
    return (hessian_products(f, y, chunk)(v) * v).sum(1)  # [N]


# --------------------------------------------------------------------------- shrinking sweep


def shrink_sweep(f: LogDensity, x0: Tensor, g: Tensor, h: Tensor, x: Tensor,
                 scales: list[float], chunk: int = 250) -> pd.DataFrame:
    r"""Measured and predicted mean change of $\log p$ (nats per image) when every image of
    ``x`` (``[N, D]``, input units) is shrunk to $x_0 + s(x - x_0)$, for each $s$ in ``scales``;
    ``g`` ``[D]`` and ``h`` ``[D, D]`` are the gradient and Hessian at ``x0`` (module docstring).
    Columns: ``s``, ``measured`` $M(s)$, ``first_order``, ``second_order``, ``remainder``
    $R(s) = M(s) - P(s)$ and ``relative_error`` $|R(s)|/|M(s)|$."""
    x, x0 = _rows(x, x0)
    delta = x - x0  # [N, D]
    first = float((delta @ g.to(F64)).mean())  # mean g^T Delta
    second = float(0.5 * ((delta @ h.to(F64)) * delta).sum(1).mean())  # mean 1/2 Delta^T H Delta
    with torch.no_grad():
        base = float(f(x0[None])[0])
        rows = []
        for s in scales:
            xs = x0 + s * delta  # [N, D]
            measured = float(torch.cat([f(xs[i:i + chunk]) for i in range(0, len(xs), chunk)])
                             .mean()) - base
            predicted = s * first + s**2 * second
            rows.append({"s": s, "measured": measured, "first_order": s * first,
                         "second_order": s**2 * second, "remainder": measured - predicted,
                         "relative_error": abs(measured - predicted) / abs(measured)})
    return pd.DataFrame(rows)


def cubic_crossover(sweep: pd.DataFrame, covariance: float) -> tuple[float, float]:
    r"""$(c_3, s^\ast)$: the cubic coefficient $c_3 = R(s_{\min})/s_{\min}^3$ of a
    :func:`shrink_sweep` and the scale $s^\ast = |C / c_3|$ at which $|c_3| s^3$ equals the
    covariance term $s^2 C$ (``covariance`` = $C$ at $s = 1$)."""
    first = sweep.loc[sweep["s"].idxmin()]
    c3 = float(first["remainder"] / first["s"] ** 3)
    return c3, abs(covariance / c3)


# --------------------------------------------------------------------------- moving points


def covariance_term_at(f: LogDensity, y: Tensor, q: Tensor, p: Tensor, chunk: int = 64) -> float:
    r"""$\tfrac12 \operatorname{Tr}\{H(y)(\Sigma_q - \Sigma_p)\}$ (nats) at the point ``y``
    ``[D]``, with $\Sigma$ the (1/N) covariance of the images ``q`` ``[N, D]`` and ``p``
    ``[M, D]``: one Hessian-vector product per image (module docstring)."""
    q, y = _rows(q, y)
    p, _ = _rows(p, y)
    # 1/(2N) sum_i c_i^T H c_i - 1/(2M) sum_j d_j^T H d_j, c and d centred on their set's mean
    return float(0.5 * quadratic_forms(f, y, q - q.mean(0), chunk).mean()
                 - 0.5 * quadratic_forms(f, y, p - p.mean(0), chunk).mean())


def _orthonormal(block: Tensor, basis: list[Tensor]) -> Tensor:
    """The columns of ``block`` ``[D, b]`` made orthogonal to every block of ``basis`` (twice:
    once is not enough in floating point) and to each other (QR)."""
    for _ in range(2):
        for q in basis:
            block = block - q @ (q.T @ block)
    return torch.linalg.qr(block).Q


def krylov_ritz_values(products: Callable[[Tensor], Tensor], d: int, block: int = 16,
                       depth: int = 8, seed: int = 0) -> Tensor:
    r"""Ritz values (ascending) of a symmetric $D \times D$ operator ``products`` (``V [N, D] ->
    (H v_i)_i``, :func:`~ood_lib.analysis.second_order.hessian_products`) on the block Krylov
    space $\{\Omega, H\Omega, \dots, H^{\text{depth}-1}\Omega\}$ of a seeded Gaussian block
    $\Omega$ of ``block`` columns: the
    Rayleigh-Ritz eigenvalues of $V^\top H V$, $V$ its orthonormal basis. The extreme ones,
    at both ends of the spectrum, converge first; ``block * depth`` products in ``depth``
    vectorised calls."""
    if not 1 <= block * depth <= d:
        raise ValueError(f"need 1 <= block * depth <= D = {d}, got {block} x {depth}")
    g = torch.Generator().manual_seed(seed)
    basis = [_orthonormal(torch.randn(d, block, generator=g, dtype=F64), [])]  # [D, b] blocks
    images = []  # H q for every basis block
    for k in range(depth):
        images.append(products(basis[k].T).T)  # [D, b]
        if k < depth - 1:
            basis.append(_orthonormal(images[k], basis))
    v, hv = torch.cat(basis, 1), torch.cat(images, 1)  # [D, b depth]
    t = v.T @ hv
    return torch.linalg.eigvalsh(0.5 * (t + t.T))


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


def path_integral(f: LogDensity, x0: Tensor, x: Tensor, nodes: int = 8,
                  chunk: int = 64) -> PathAccount:
    r"""The exact account of $\log p(x) - \log p(x_0)$ for each row of ``x`` (``[N, D]``, input
    units) from gradients alone: with $\Delta = x - x_0$,

    $$\log p(x) - \log p(x_0) = \int_0^1 \nabla \log p(x_0 + t\Delta)^\top \Delta \, dt
      \approx \sum_k w_k \nabla \log p(x_0 + t_k \Delta)^\top \Delta ,$$

    by Gauss-Legendre quadrature with $2n$ nodes (exact for integrands of degree $< 4n$), the
    difference to the $n$-node rule reported as its error. Beside it, the terms of the expansion
    at $x_0$: $g^\top \Delta$ and $\tfrac12 \Delta^\top H \Delta$ (one Hessian-vector product
    per image). ``f`` maps ``[B, D]`` to ``[B]`` with rows scored independently
    (:func:`~ood_lib.analysis.second_order.log_density`), so the gradient of a sum is every
    row's gradient."""
    x, x0 = _rows(x, x0)
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
    with torch.no_grad():
        measured = f(x) - f(x0[None])[0]
    g0 = gradient(f)(x0)  # [D]
    return PathAccount(measured=measured, integral=fine, error=(fine - coarse).abs(),
                       first_order=delta @ g0,
                       second_order=0.5 * quadratic_forms(f, x0, delta, chunk), nodes=nodes)


def gap_account(q: PathAccount, p: PathAccount) -> dict[str, float]:
    r"""The measured gap $\mathbb E_q[\log p] - \mathbb E_p[\log p]$ of two sets' accounts
    (nats per image, the $\log p(x_0)$ cancels) and the part each term carries: ``first_order``,
    ``second_order``, ``remainder`` (they sum to ``integral``), with the quadrature ``error``
    (the mean error of the two sets' integrals, added)."""
    out = {name: float(getattr(q, name).mean() - getattr(p, name).mean())
           for name in ("measured", "integral", "first_order", "second_order", "remainder")}
    out["error"] = float(q.error.mean() + p.error.mean())
    return out
