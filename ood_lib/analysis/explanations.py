r"""Explanations since the paper: two later accounts of why likelihood fails at OOD detection.

**Kirichenko, Izmailov & Wilson (2020): the couplings model local pixel correlations.**
An affine coupling layer of Glow (:class:`~ood_lib.models.glow.Coupling`) splits its input
$h = (x_a, x_b)$ along channels and, with $(t, s) = \mathrm{NN}(x_a)$, $s > 0$, outputs

$$y_a = x_a, \qquad y_b = (x_b + t) \odot s .$$

Read $(t, s)$ as a prediction of $x_b$ from $x_a$: the layer sends $x_b$ to zero exactly at
one value, and its output (which the later layers and, in the end, a Gaussian prior score) is
small when $x_b$ is close to it. That value, the network's "prediction" of $x_b$, is the $x_b$
that the layer maps to $y_b = 0$,

$$\hat x_b = \text{second half of } \mathrm{coupling}^{-1}(x_a, 0) = -t
  \qquad (\text{additive coupling } y_b = x_b + \mathrm{NN}(x_a):\ \hat x_b = -\mathrm{NN}(x_a)).$$

:func:`coupling_prediction` computes $\hat x_b$ with the layer's own ``inverse``, so it is
whatever the code does, whichever convention it follows. After a ``squeeze``, $x_a$ and $x_b$
hold neighbouring pixels (and, after the 1x1 convolutions, mixtures of them), so a network that
predicts $x_b$ well from $x_a$ can do so from local smoothness alone, on any image, in or out of
distribution; the paper argues that this is what the couplings learn. :func:`coupling_errors`
measures it layer by layer for a set of inputs, with forward pre-hooks on every coupling (the
flow's own forward pass walks the layers):

$$\text{mse}_k = \frac{1}{N D_k} \sum_{n} \lVert x_b^{(n)} - \hat x_b^{(n)} \rVert^2, \qquad
  \text{var}_k = \frac{1}{D_k} \sum_{d} \operatorname{Var}_n\!\big[x_{b,d}^{(n)}\big],$$

with $D_k$ the dimensions of $x_b$ at layer $k$ (in the coupling's own input units). The same
paper looks at the latents as images: they keep the local structure of the input, in
distribution or not. :func:`latents` returns them level by level, and :func:`latent_table`
measures how much of the image's grey level their values still predict (:func:`picture_fit`).

**Le Lan & Dinh (2021): a density depends on the parametrization.** If $u$ has density $p$ and
$f$ is a smooth, strictly monotone map applied to each dimension, $w = f(u)$ has density

$$\log p_f(w) = \log p(u) - \sum_{i=1}^{D} \log |f'(u_i)| ,$$

so the same model, describing the same data in other coordinates, ranks images differently:
the term $\sum_i \log|f'(u_i)|$ depends on the image. Nothing is fed to the model twice: the
score of an image $x$ in parametrization $f$ is its cached $\log p(x)$ minus the Jacobian term
(:func:`reparametrized_log_px`).

**Units.** The models score dequantized images in input units $u = (x + \tfrac12)/256 -
\tfrac12 \in (-\tfrac12, \tfrac12)$ at the bin centres (:func:`ood_lib.models.base.evaluate`), and
$\log p$ is in nats per image. The maps are defined on the $(0, 1)$ scale
$v = u + \tfrac12 = (x + \tfrac12)/256$ (:func:`unit_scale`); the shift has Jacobian 1, so
$p(v) = p(u)$ and the Jacobian term is $\sum_i \log|f'(v_i)|$ with $f'$ taken on that scale at
the bin centres. (A map defined on the $0..255$ scale would add $D \log 256$ to every image
alike: no ranking moves.) Since $f'$ depends only on a pixel's level, the sum is exactly
$\sum_{\ell=0}^{255} n_\ell(x) \log|f'(v_\ell)|$ with $n_\ell(x)$ the count of level $\ell$ in
$x$ (:func:`level_counts`, :func:`log_jacobian`). The maps (:class:`PowerMap`,
:class:`LogitMap`):

$$\text{power: } f_\gamma(v) = v^\gamma,\ \log f_\gamma'(v) = \log\gamma + (\gamma - 1)\log v; \qquad
  \text{logit: } f_\lambda(v) = \operatorname{logit}(\lambda + (1 - 2\lambda) v),\
  \log f_\lambda'(v) = \log(1 - 2\lambda) - \log s - \log(1 - s),$$

with $s = \lambda + (1 - 2\lambda) v$ ($\lambda = 0.05$ is the logit preprocessing of RealNVP).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ood_lib import records
from ood_lib.metrics import auroc
from ood_lib.models.glow import Coupling, Glow, SplitPrior

F64 = torch.float64
LEVELS = 256  # 8-bit images


# --------------------------------------------------------------------------- Kirichenko et al.


def coupling_prediction(coupling: Coupling, h: Tensor) -> Tensor:
    r"""$\hat x_b$: the $x_b$ that ``coupling`` maps to $y_b = 0$ given the $x_a$ of ``h``
    ``[B, C, H, W]``, read off the layer's own inverse at output $(x_a, 0)$; shape of $x_b$."""
    x_a, x_b = h.chunk(2, dim=1)  # the split of Coupling.forward
    # x_b_hat = [coupling^{-1}(x_a, 0)]_b   (affine: -t; additive: -NN(x_a))
    return coupling.inverse(torch.cat([x_a, torch.zeros_like(x_b)], 1)).chunk(2, dim=1)[1]


@dataclass(frozen=True)
class CouplingError:
    """How well one coupling layer predicts the half it transforms, over a set of inputs."""

    index: int  # position of the coupling in flow order, from 1
    name: str  # e.g. "L1.step3" (level 1, third step of flow), else the module's path
    n: int  # inputs seen
    dims: int  # D_k, dimensions of x_b per input
    mse: float  # 1/(N D_k) sum ||x_b - x_b_hat||^2
    variance: float  # 1/D_k sum_d Var_n[x_b,d]

    @property
    def unexplained(self) -> float:
        """mse / variance: the fraction of x_b's own spread the prediction leaves (0 = exact)."""
        return self.mse / self.variance if self.variance > 0 else math.inf


def _layer_name(path: str) -> str:
    m = re.fullmatch(r"levels\.(\d+)\.(\d+)\.layers\.\d+", path)
    return f"L{int(m[1]) + 1}.step{int(m[2]) + 1}" if m else (path or "coupling")


@torch.no_grad()
def coupling_errors(model: nn.Module, inputs: Tensor, batch_size: int = 250) -> list[CouplingError]:
    r"""Per coupling layer of ``model`` (every :class:`~ood_lib.models.glow.Coupling` in it, in
    module order = flow order for Glow), ``mse`` and ``variance`` of $x_b$ against
    $\hat x_b$ (:func:`coupling_prediction`) over the float ``inputs`` ``[N, ...]`` that
    ``model``'s forward takes (for Glow: ``model.inputs(images)``). Runs ``model`` in eval mode,
    ``batch_size`` inputs at a time; each batch's sums are accumulated in float64."""
    couplings = [(path, m) for path, m in model.named_modules() if isinstance(m, Coupling)]
    if not couplings:
        raise ValueError(f"{type(model).__name__} has no Coupling layer to measure")
    if not torch.is_floating_point(inputs) or len(inputs) == 0:
        raise ValueError(f"coupling_errors needs a non-empty float tensor, got {inputs.dtype} "
                         f"{list(inputs.shape)} (uint8 images: pass model.inputs(images))")
    sums: list[dict[str, Tensor]] = [{} for _ in couplings]

    def hook(k: int) -> Callable[[Coupling, tuple[Tensor, ...]], None]:
        def pre_hook(module: Coupling, args: tuple[Tensor, ...]) -> None:
            h = args[0]
            x_b = h.chunk(2, dim=1)[1]  # [B, C_b, H, W]
            x_b_hat = coupling_prediction(module, h)  # [B, C_b, H, W]
            s = sums[k]
            # per batch: sum_n (x_b - x_b_hat)^2, sum_n x_b, sum_n x_b^2  [C_b, H, W] each,
            # accumulated over batches in float64
            for key, value in (("sq_err", (x_b - x_b_hat).pow_(2).sum(0)), ("x", x_b.sum(0)),
                               ("x2", x_b.square().sum(0))):
                s[key] = s[key] + value.double() if key in s else value.double()
            s["n"] = s.get("n", 0) + len(h)

        return pre_hook

    was_training = model.training
    model.eval()
    handles = [m.register_forward_pre_hook(hook(k)) for k, (_, m) in enumerate(couplings)]
    try:
        for start in range(0, len(inputs), batch_size):
            model(inputs[start : start + batch_size])
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    out = []
    for k, ((path, _), s) in enumerate(zip(couplings, sums, strict=True)):
        n, dims = s["n"], s["x"].numel()
        mean = s["x"] / n  # [C_b, H, W]
        # Var_n[x_b,d] = E[x_b,d^2] - E[x_b,d]^2 (float64 sums)
        var = (s["x2"] / n - mean**2).clamp_min(0)
        out.append(CouplingError(index=k + 1, name=_layer_name(path), n=n, dims=dims,
                                 mse=float(s["sq_err"].sum() / (n * dims)),
                                 variance=float(var.mean())))
    return out


def coupling_table(errors: dict[str, list[CouplingError]], reference: str) -> pd.DataFrame:
    """One row per coupling layer and set (``errors``: set label -> :func:`coupling_errors`),
    with the error relative to the variance of $x_b$ on the ``reference`` set at the same layer
    (one scale per layer, so the sets compare as absolute errors) and to the set's own."""
    if reference not in errors:
        raise ValueError(f"reference {reference!r} is not among the sets {list(errors)}")
    ref_var = [e.variance for e in errors[reference]]
    rows = []
    for label, layers in errors.items():
        if [e.name for e in layers] != [e.name for e in errors[reference]]:
            raise ValueError(f"{label!r} was not measured on the same layers as {reference!r}")
        rows += [{"layer": e.index, "name": e.name, "set": label, "images": e.n, "mse": e.mse,
                  "variance": e.variance, "mse / reference variance": e.mse / v,
                  "mse / own variance": e.unexplained} for e, v in zip(layers, ref_var, strict=True)]
    return pd.DataFrame(rows)


@torch.no_grad()
def latents(model: Glow, inputs: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    r"""``(zs, eps)`` of ``inputs`` under ``model``, one tensor per level ``[B, C_l, H_l, W_l]``
    (the factored-out halves, then the top, as :attr:`~ood_lib.models.glow.FlowOutput.zs`): the
    latents $z$ and their standardised values $\epsilon = (z - \mu)/\sigma$ under the split
    priors and the top prior (what the Gaussian densities score)."""
    if not isinstance(model, Glow):
        raise TypeError(f"latents needs a Glow, got {type(model).__name__}")
    eps: list[Tensor] = []

    def hook(module: SplitPrior, args: tuple[Tensor, ...], out: tuple[Tensor, ...]) -> None:
        z1, z2 = out[0], out[1]
        mean, log_std = module.params(z1)
        eps.append((z2 - mean) * torch.exp(-log_std))  # eps = (z2 - mu(z1)) / sigma(z1)

    was_training = model.training
    model.eval()
    handles = [p.register_forward_hook(hook) for p in model.priors]
    try:
        zs = model(inputs).zs
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    # top: eps = (z_top - mu_top) / sigma_top
    eps.append((zs[-1] - model.top_mean) * torch.exp(-model.top_log_std))
    return zs, eps


def energy(eps: Tensor) -> Tensor:
    r"""Per position, the mean over channels of $\epsilon^2$ ``[B, H_l, W_l]``: where the prior
    pays ($-\log \mathcal N(\epsilon; 0, 1) = \tfrac12 \epsilon^2 + $ const per value)."""
    return eps.pow(2).mean(1)


def grey_levels(images: Tensor, size: int) -> Tensor:
    r"""The grey level of uint8 images ``[N, C, H, W]`` (channel mean, $[0, 1]$ scale) averaged
    over the pixels each position of a ``size`` x ``size`` latent covers: ``[N, size, size]``."""
    _check_uint8(images)
    if images.shape[2] % size or images.shape[3] % size:
        raise ValueError(f"images {list(images.shape)} do not pool to {size} x {size}")
    g = images.double().mean(1, keepdim=True) / 255  # [N, 1, H, W]
    return torch.nn.functional.adaptive_avg_pool2d(g, size)[:, 0]  # [N, size, size]


def picture_fit(z: Tensor, grey: Tensor) -> tuple[Tensor, np.ndarray]:
    r"""How much of the picture a latent ``z`` ``[N, C_l, S, S]`` still holds, per image: the
    least-squares fit of the grey level at each of the $P = S^2$ positions (``grey``
    ``[N, S, S]``, :func:`grey_levels`) by the $C_l$ latent values there and an intercept.
    Returns the fitted grey levels ``[N, S, S]`` and the adjusted
    $R^2_{adj} = 1 - (1 - R^2) \frac{P - 1}{P - C_l - 1}$ ``[N]`` (about 0 for a latent
    unrelated to the image); NaN for both where $P \le C_l + 1$ (no fit: the top latent)."""
    n, c, size = z.shape[0], z.shape[1], z.shape[-1]
    if grey.shape != (n, size, size) or z.shape[2] != size:
        raise ValueError(f"latents {list(z.shape)} and grey levels {list(grey.shape)} differ")
    p = size * size
    if p <= c + 1:
        return torch.full((n, size, size), torch.nan, dtype=F64), np.full(n, np.nan)
    x = torch.cat([z.double().flatten(2), torch.ones(n, 1, p, dtype=F64)], 1).transpose(1, 2)
    y = grey.double().flatten(1).unsqueeze(-1)  # [N, P, 1]
    # beta = argmin ||X beta - y||^2 with X = [z, 1]  [N, P, C_l + 1]
    fitted = x @ torch.linalg.lstsq(x, y).solution  # [N, P, 1]
    total = (y - y.mean(1, keepdim=True)).pow(2).sum((1, 2))
    r2 = 1 - (y - fitted).pow(2).sum((1, 2)) / total
    return fitted.reshape(n, size, size), (1 - (1 - r2) * (p - 1) / (p - c - 1)).numpy()


@torch.no_grad()
def latent_table(model: Glow, sets: dict[str, Tensor], batch_size: int = 250) -> pd.DataFrame:
    r"""Per set (label -> uint8 images) and level: the mean $\epsilon^2$ the prior pays
    (:func:`energy`; 1 where the prior fits the latents exactly), and the median over images of
    :func:`picture_fit`, how well the latent's values predict the image's grey level at each
    position (the latents still show the picture where it is well above 0)."""
    rows = []
    for label, images in sets.items():
        _check_uint8(images)
        eps_energy: dict[int, list[np.ndarray]] = {}
        r2: dict[int, list[np.ndarray]] = {}
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            zs, eps = latents(model, model.inputs(batch))
            for level, (z, e) in enumerate(zip(zs, eps, strict=True)):
                eps_energy.setdefault(level, []).append(energy(e).double().mean((1, 2)).numpy())
                r2.setdefault(level, []).append(picture_fit(z, grey_levels(batch, z.shape[-1]))[1])
        for level in eps_energy:
            fits = np.concatenate(r2[level])
            rows.append({"set": label,
                         "level": "top" if level == len(eps_energy) - 1 else f"L{level + 1}",
                         "shape": "x".join(str(d) for d in zs[level].shape[1:]),
                         "images": len(images),
                         "mean eps^2": float(np.concatenate(eps_energy[level]).mean()),
                         "median adjusted R^2": float(np.median(fits))
                         if np.isfinite(fits).all() else float("nan")})
    return pd.DataFrame(rows)


def coupling_fits(test: list[CouplingError], ood: list[CouplingError]) -> list[records.CouplingFit]:
    """The per-layer records of :func:`coupling_errors` on the test and the OOD set."""
    if [e.name for e in test] != [e.name for e in ood]:
        raise ValueError("the test and OOD errors were not measured on the same layers")
    return [records.CouplingFit(layer=t.index, name=t.name, test_mse=t.mse, ood_mse=o.mse,
                                test_variance=t.variance, ood_variance=o.variance)
            for t, o in zip(test, ood, strict=True)]


# --------------------------------------------------------------------------- Le Lan & Dinh


@dataclass(frozen=True)
class PowerMap:
    r"""$f_\gamma(v) = v^\gamma$ on $(0, 1)$: $\gamma < 1$ stretches the dark levels, $\gamma > 1$
    the bright ones; $\gamma = 1$ is the identity."""

    gamma: float
    name = "power"

    def __post_init__(self) -> None:
        if not (self.gamma > 0 and math.isfinite(self.gamma)):
            raise ValueError(f"a power map needs gamma > 0, got {self.gamma}")

    @property
    def parameter(self) -> float:
        return self.gamma

    def __call__(self, v: Tensor) -> Tensor:
        _check_unit(v)
        return v**self.gamma

    def log_abs_derivative(self, v: Tensor) -> Tensor:
        _check_unit(v)
        # log f'(v) = log gamma + (gamma - 1) log v
        return math.log(self.gamma) + (self.gamma - 1) * torch.log(v)


@dataclass(frozen=True)
class LogitMap:
    r"""$f_\lambda(v) = \operatorname{logit}(\lambda + (1 - 2\lambda) v)$, $0 \le \lambda < 1/2$
    (the logit preprocessing of RealNVP with $\lambda = 0.05$)."""

    lam: float
    name = "logit"

    def __post_init__(self) -> None:
        if not 0 <= self.lam < 0.5:
            raise ValueError(f"a logit map needs 0 <= lambda < 1/2, got {self.lam}")

    @property
    def parameter(self) -> float:
        return self.lam

    def __call__(self, v: Tensor) -> Tensor:
        _check_unit(v)
        s = self.lam + (1 - 2 * self.lam) * v
        return torch.log(s) - torch.log1p(-s)

    def log_abs_derivative(self, v: Tensor) -> Tensor:
        _check_unit(v)
        # s = lambda + (1 - 2 lambda) v;  log f'(v) = log(1 - 2 lambda) - log s - log(1 - s)
        s = self.lam + (1 - 2 * self.lam) * v
        return math.log(1 - 2 * self.lam) - torch.log(s) - torch.log1p(-s)


PixelMap = PowerMap | LogitMap


def _check_unit(v: Tensor) -> None:
    if not bool(((v > 0) & (v < 1)).all()):
        raise ValueError("the maps are defined on the open interval (0, 1)")


def _check_uint8(images: Tensor) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 images [N, C, H, W], got {images.dtype} {list(images.shape)}")


def unit_scale(images: Tensor) -> Tensor:
    r"""uint8 images ``[N, C, H, W]`` -> float64 $v = (x + \tfrac12)/256$ ``[N, D]``: the bin
    centres the models score, shifted from input units $u$ by $\tfrac12$ (Jacobian 1)."""
    _check_uint8(images)
    # v = (x + 1/2) / 256 = u + 1/2
    return ((images.to(F64) + 0.5) / LEVELS).flatten(1)


def level_counts(images: Tensor) -> Tensor:
    r"""$n_\ell(x)$: how many of each image's $D$ values are at level $\ell$, float64 ``[N, 256]``."""
    _check_uint8(images)
    flat = images.flatten(1).long()  # [N, D]
    counts = torch.zeros(len(images), LEVELS, dtype=F64)
    return counts.scatter_add_(1, flat, torch.ones_like(flat, dtype=F64))


def log_jacobian(f: PixelMap, counts: Tensor) -> Tensor:
    r"""$\sum_i \log|f'(v_i)| = \sum_\ell n_\ell(x) \log|f'(v_\ell)|$ per image (nats, ``[N]``),
    from :func:`level_counts`; $v_\ell = (\ell + \tfrac12)/256$."""
    if counts.ndim != 2 or counts.shape[1] != LEVELS:
        raise ValueError(f"expected level counts [N, {LEVELS}], got {list(counts.shape)}")
    centres = (torch.arange(LEVELS, dtype=F64) + 0.5) / LEVELS  # v_l, [256]
    return counts.to(F64) @ f.log_abs_derivative(centres)  # [N]


def reparametrized_log_px(log_px: np.ndarray, images: Tensor, f: PixelMap) -> np.ndarray:
    r"""$\log p_f(f(x)) = \log p(x) - \sum_i \log|f'(v_i)|$ (nats per image, ``[N]``): the
    density the model assigns to the image $x$ described in the coordinates $w = f(v)$, from its
    ``log_px`` in input units (the score cache's) and the uint8 ``images`` it was computed on."""
    log_px = np.asarray(log_px, dtype=float)
    if log_px.shape != (len(images),):
        raise ValueError(f"log_px has shape {log_px.shape}, expected ({len(images)},)")
    return log_px - log_jacobian(f, level_counts(images)).numpy()


def reparametrization_sweep(test: tuple[np.ndarray, Tensor], ood: tuple[np.ndarray, Tensor],
                            maps: Sequence[PixelMap]) -> pd.DataFrame:
    r"""For each map, the mean $\log p_f$ of the in-distribution test set and of the OOD set
    (nats per image), their gap (OOD - test) and the AUROC of $-\log p_f$ as an OOD score
    (below 0.5: the OOD set looks more likely). ``test`` and ``ood``: ``(log_px, images)``."""
    counts = {role: level_counts(images) for role, (_, images) in (("test", test), ("ood", ood))}
    rows = []
    for f in maps:
        score = {role: log_px - log_jacobian(f, counts[role]).numpy()
                 for role, (log_px, _) in (("test", test), ("ood", ood))}
        rows.append({"map": f.name, "parameter": f.parameter,
                     "test log p_f": score["test"].mean(), "ood log p_f": score["ood"].mean(),
                     "gap": score["ood"].mean() - score["test"].mean(),
                     "auroc": auroc(-score["test"], -score["ood"])})
    return pd.DataFrame(rows)


def reparametrization_records(sweep: pd.DataFrame) -> list[records.Reparametrization]:
    """The rows of :func:`reparametrization_sweep` as records."""
    return [records.Reparametrization(map=r["map"], parameter=float(r["parameter"]),
                                      test_log_density=float(r["test log p_f"]),
                                      ood_log_density=float(r["ood log p_f"]),
                                      auroc=float(r["auroc"]))
            for _, r in sweep.iterrows()]


def crossings(parameter: np.ndarray, value: np.ndarray, level: float) -> list[float]:
    r"""Where ``value`` crosses ``level`` along the increasing grid ``parameter``, interpolated
    linearly in $\log$ parameter between the two grid points around each crossing."""
    x, y = np.log(np.asarray(parameter, float)), np.asarray(value, float) - level
    if x.shape != y.shape or x.ndim != 1 or not (np.diff(x) > 0).all():
        raise ValueError("need an increasing positive 1-D parameter grid and values of its shape")
    out = []
    for i in np.flatnonzero(np.sign(y[:-1]) * np.sign(y[1:]) < 0):
        # y is linear in log(parameter) between grid points i and i + 1
        out.append(float(np.exp(x[i] - y[i] * (x[i + 1] - x[i]) / (y[i + 1] - y[i]))))
    return out
