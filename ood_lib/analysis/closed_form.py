r"""The constant-volume Glow's second-order term in closed form: the paper's two readings and
the exact forms of the idealised model.

**The idealised model.** Drop the additive couplings (identity maps) and replace every prior
(the learned split priors and the learned top prior) by $\mathcal N(0, \sigma^2 I)$. What is
left is linear: per step an actnorm $x \mapsto e^{s_k} \odot (x + b_k)$ and a 1x1 convolution
$W_k$ ($y_c = \sum_j W_{k,cj} x_j$, row = output channel, as
:class:`~ood_lib.models.glow.InvConv1x1`), with squeezes and splits between levels. So
$z = L x + \text{const}$ with a constant $D \times D$ matrix $L$ (:func:`linear_flow_matrix`),
$\log p(x) = -\frac{1}{2\sigma^2}\|Lx + \text{const}\|^2 + \text{const}$, $H = -L^\top L /
\sigma^2$ everywhere, and with $\Delta = \Sigma_q - \Sigma_p$ (equal means)

$$\tfrac12 \operatorname{Tr}\{H\Delta\} = -\frac{1}{2\sigma^2} \operatorname{Tr}\{L \Delta
  L^\top\} \qquad \text{(all levels, exact for the idealised model).}$$

**Level 1, within pixel.** Keep only the first level's $K$ steps. After the first ``squeeze``
each level-1 pixel $hw$ carries $4C$ channels (a colour at one offset of a 2x2 patch), and the
map acts on every pixel alike, $z_{hw} = A x_{hw}$, $A = W_K E_K \cdots W_1 E_1$ with $E_k =
\operatorname{diag}(e^{s_k})$ (:func:`pixel_matrix`). $H$ is block diagonal over pixels, so
covariances *between* pixels drop out exactly and

$$\tfrac12 \operatorname{Tr}\{H\Delta\} = -\frac{1}{2\sigma^2} \sum_{hw}
  \operatorname{Tr}\{A^\top A\, \Delta_{hw}\} \qquad \text{(exact within-pixel form)},$$

$\Delta_{hw}$ the $4C \times 4C$ block of $\Delta$ at level-1 pixel $hw$: it keeps the change in
cross-channel covariance within a pixel (:func:`within_pixel_form`). Keeping only the block
diagonals (per-pixel variances) and no actnorm gives the diagonal form $-\frac{1}{2\sigma^2}
\sum_c \|M_{:,c}\|^2 \sum_{hw} \Delta_{c,hw}$, $M = W_K \cdots W_1$.

**The paper's form** replaces $\|M_{:,c}\|^2$ by $\alpha_c^2$ with $\alpha_c = \prod_k \sum_j
u_{k,c,j}$ (:func:`readings`). Its index order admits two readings of our $W_k$:

- *row sums*, $\alpha_c = \prod_k \sum_j W_{k,cj}$, if $u_{k,c,j}$ is the weight into output
  channel $c$ from input $j$ (the layout of a weight matrix in code);
- *column sums*, $\alpha_c = \prod_k \sum_j W_{k,jc}$, if $c$ is the input channel, the one
  whose variance the factor multiplies: $\sum_j W_{k,jc} = \partial (\sum_j y_j) / \partial
  x_c$ is the derivative of the step's summed output with respect to channel $c$, the quantity
  a chain-rule derivation with respect to $x_c$ produces.

The factor multiplies the variance of input channel $c$, so the derivation supports the column
reading. Each equals $\|M_{:,c}\|^2$ when every $W_k$ is a signed permutation, and in general
neither does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ood_lib.models.base import copy_as
from ood_lib.models.glow import Glow, squeeze

F64 = torch.float64


def level_steps(model: Glow, level: int = 0) -> list[tuple[Tensor, Tensor]]:
    r"""The linear part of each step of ``level`` in flow order: ``(e^{s_k} [C], W_k [C, C])``
    (actnorm scales and 1x1 matrices, float64)."""
    net = copy_as(model)
    return [(step.layers[0].logs.flatten().exp(), step.layers[1].weight())
            for step in net.levels[level]]


def pixel_matrix(model: Glow, level: int = 0, actnorm: bool = True) -> Tensor:
    r"""$A = W_K E_K \cdots W_1 E_1$ ``[C, C]`` of one level (``actnorm=False``: $E_k = I$,
    giving $M = W_K \cdots W_1$)."""
    steps = level_steps(model, level)
    a = torch.eye(steps[0][1].shape[0], dtype=F64)
    for scale, w in steps:
        # A <- W_k E_k A
        a = w @ (scale[:, None] * a) if actnorm else w @ a
    return a


def readings(weights: list[Tensor]) -> dict[str, Tensor]:
    r"""$\alpha_c^2$ per channel ``[C]`` under each reading of the paper's
    $\alpha_c = \prod_k \sum_j u_{k,c,j}$: ``row`` (sum over inputs $j$ of $W_{k,cj}$) and
    ``column`` (sum over outputs $j$ of $W_{k,jc}$); beside them ``diagonal`` $\|M_{:,c}\|^2$."""
    ws = [w.detach().to(F64).cpu() for w in weights]
    m = torch.eye(ws[0].shape[0], dtype=F64)
    for w in ws:
        m = w @ m  # M = W_K ... W_1
    return {"row": torch.stack([w.sum(1) for w in ws]).prod(0) ** 2,
            "column": torch.stack([w.sum(0) for w in ws]).prod(0) ** 2,
            "diagonal": (m**2).sum(0)}


def level_one_layout(shape: tuple[int, int, int]) -> Tensor:
    """``idx [D]``: entry ``i`` of a flattened level-1 (squeezed, ``[4C, H/2, W/2]``) image is
    entry ``idx[i]`` of the flattened ``[C, H, W]`` image."""
    d = shape[0] * shape[1] * shape[2]
    return squeeze(torch.arange(d).reshape(1, *shape))[0].flatten()


def _checked_delta(delta: Tensor, d: int) -> Tensor:
    if delta.shape != (d, d):
        raise ValueError(f"need a [D, D] = [{d}, {d}] covariance difference, got {list(delta.shape)}")
    return delta.to(F64).cpu()


def within_pixel_form(a: Tensor, delta: Tensor, shape: tuple[int, int, int],
                      sigma: float = 1.0) -> float:
    r"""$-\frac{1}{2\sigma^2} \sum_{hw} \operatorname{Tr}\{A^\top A \Delta_{hw}\}$ (nats): ``a``
    the level-1 pixel matrix ``[4C, 4C]`` (:func:`pixel_matrix`), ``delta`` the covariance
    difference ``[D, D]`` in input units, images of ``shape`` (C, H, W)."""
    c4 = 4 * shape[0]
    if a.shape != (c4, c4):
        raise ValueError(f"a must be [4C, 4C] = [{c4}, {c4}] for images {shape}, got {list(a.shape)}")
    idx = level_one_layout(shape)
    delta = _checked_delta(delta, len(idx))[idx][:, idx]  # level-1 layout
    pixels = len(idx) // c4
    # sum_hw Delta_hw [4C, 4C]: the diagonal over pixels of [4C, P, 4C, P]
    blocks = delta.reshape(c4, pixels, c4, pixels).diagonal(dim1=1, dim2=3).sum(-1)
    ata = a.to(F64).T @ a.to(F64)
    return float(-0.5 / sigma**2 * (ata * blocks).sum())


def diagonal_forms(weights: list[Tensor], var_q: Tensor, var_p: Tensor,
                   sigma: float = 1.0) -> dict[str, float]:
    r"""$-\frac{1}{2\sigma^2} \sum_c f_c \sum_{hw} (\sigma^2_q - \sigma^2_p)_{c,hw}$ for each
    factor $f_c$ of :func:`readings` (``row``, ``column``, ``diagonal``); ``var_*`` are
    ``[C, H, W]`` variance maps in the channel layout the matrices act on."""
    if var_q.shape != var_p.shape or var_q.ndim != 3:
        raise ValueError(f"var_q, var_p must be [C, H, W] maps, got {var_q.shape}, {var_p.shape}")
    if var_q.shape[0] != weights[0].shape[0]:
        c = weights[0].shape[0]
        raise ValueError(f"variance maps have {var_q.shape[0]} channels, matrices are {c}x{c}")
    # sum_hw (var_q - var_p)_c
    sums = (var_q.to(F64).cpu() - var_p.to(F64).cpu()).sum((1, 2))  # [C]
    return {name: float(-0.5 / sigma**2 * (factor * sums).sum())
            for name, factor in readings(weights).items()}


def linear_flow_matrix(model: Glow) -> Tensor:
    r"""$L$ ``[D, D]`` of the idealised model (module docstring): actnorm scales and 1x1
    convolutions of every level with squeezes and splits, couplings and priors dropped; the
    factored-out halves and the top latent concatenated. Built by pushing the $D$ basis images
    through the linear maps."""
    net = copy_as(model)
    shape = net.input_shape
    d = shape[0] * shape[1] * shape[2]
    h = torch.eye(d, dtype=F64).reshape(d, *shape)  # row j: the basis image e_j
    latents = []
    for level, steps in enumerate(net.levels):
        h = squeeze(h)
        for step in steps:
            actnorm, invconv = step.layers[0], step.layers[1]
            h = h * actnorm.logs.exp()  # the bias is a constant: it leaves H unchanged
            h = F.conv2d(h, invconv.weight()[:, :, None, None])
        if level < len(net.priors):
            h, z2 = h.chunk(2, dim=1)
            latents.append(z2.flatten(1))
    latents.append(h.flatten(1))
    return torch.cat(latents, 1).T  # [D, D]: column j = L e_j


def all_levels_form(l_matrix: Tensor, delta: Tensor, sigma: float = 1.0) -> float:
    r"""$-\frac{1}{2\sigma^2} \operatorname{Tr}\{L \Delta L^\top\}$ (nats), ``delta`` ``[D, D]``
    the covariance difference in input units (module docstring)."""
    delta = _checked_delta(delta, l_matrix.shape[1])
    return float(-0.5 / sigma**2 * ((l_matrix @ delta) * l_matrix).sum())


def prior_scales(model: Glow) -> dict[str, float]:
    r"""What the $\mathcal N(0, \sigma^2 I)$ idealisation leaves out: the learned top prior's
    smallest and largest $\sigma$ and its largest $|\mu|$ (the split priors' means and scales
    depend on the image and are not summarised here)."""
    std = model.top_log_std.detach().exp().flatten()
    return {"top sigma min": float(std.min()), "top sigma max": float(std.max()),
            "top |mean| max": float(model.top_mean.detach().abs().max())}
