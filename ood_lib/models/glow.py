r"""Glow: a normalizing flow with invertible 1x1 convolutions (Kingma & Dhariwal, 2018).

A flow maps an image $x$ to a latent $z = f(x)$ through invertible layers
$f = f_K \circ \dots \circ f_1$, $h_0 = x$, $h_k = f_k(h_{k-1})$. The change of variables
gives the exact log-likelihood, and this module returns its two parts separately:

$$\log p(x) = \underbrace{\log p(z)}_{\texttt{log\_pz}}
            + \underbrace{\sum_k \log \left|\det \frac{\partial h_k}{\partial h_{k-1}}\right|}_{\texttt{log\_det}}.$$

Nalisnick et al. (2019, Figure 4) take exactly this sum apart to ask which term makes
SVHN look more likely than CIFAR-10.

The architecture is multi-scale: $L$ levels, each a ``squeeze`` followed by $K$ steps of
flow (actnorm, invertible 1x1 convolution, coupling); between levels half of the channels
are factored out and modelled by a Gaussian whose mean and scale are predicted from the
other half (``split prior``); the last level's output has a learned Gaussian ``top prior``.

Every layer has the same interface: ``forward(h) -> (h_next, log_det)`` with ``log_det`` of
shape ``[batch]``, and ``inverse(h_next) -> h``.

One level deeper than the paper's two terms, the same forward pass also returns each term
split by where it arises (:attr:`FlowOutput.parts`):

$$\log|\det| = \sum_{l=1}^{L} \sum_{t \in \{\text{actnorm}, \text{invconv}, \text{coupling}\}}
  \texttt{log\_det.L}l.t, \qquad
  \log p(z) = \sum_{l \in \{1, \dots, L-1, \text{top}\}}
  \left(\texttt{log\_pz.}l.\text{scale} + \texttt{log\_pz.}l.\text{eps}\right).$$

Actnorm and 1x1-convolution log-determinants do not depend on the input; only the
couplings' do (and none at all with additive couplings: the constant-volume Glow). Each prior's
term splits further into $-\sum\log\sigma$ and the standard-normal density of the standardised
latent; a split prior's $\sigma$ depends on the input, so its scale term is volume-like.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ood_lib.models.base import DensityModel

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_p(x: Tensor, mean: Tensor, log_std: Tensor) -> tuple[Tensor, Tensor]:
    r"""Elementwise $\log \mathcal N(x; \mu, \sigma^2)$ as two terms that sum to it:

    $$\log \mathcal N(x; \mu, \sigma^2) = \underbrace{-\log\sigma}_{\text{scale}}
      + \underbrace{\log \mathcal N(\epsilon; 0, 1)}_{\text{eps}}, \qquad
      \epsilon = (x - \mu)/\sigma .$$

    The scale term is the log-determinant of the standardisation $x \mapsto \epsilon$: where
    $\sigma$ depends on the input (a split prior) it acts like a volume term."""
    eps = (x - mean) * torch.exp(-log_std)
    return -log_std.expand_as(x), -0.5 * (LOG_2PI + eps**2)


def sum_per_image(x: Tensor) -> Tensor:
    """Sum every dimension but the batch dimension (in any memory layout, without a copy)."""
    return x.sum(dim=tuple(range(1, x.ndim)))


def squeeze(x: Tensor) -> Tensor:
    """Trade space for channels: ``[B, C, H, W] -> [B, 4C, H/2, W/2]`` (each 2x2 patch of a
    channel becomes 4 channels). A permutation, so ``log_det = 0``. The result is stored
    channels-last: every layer after it then runs channels-last, which makes oneDNN's
    convolutions on CPU faster (``benchmarks/bench_glow.py``)."""
    b, c, h, w = x.shape
    # [B, H/2, W/2, 4C] in memory (channel 4c + 2i + j holds pixel (2y + i, 2x + j) of
    # channel c), seen as [B, 4C, H/2, W/2]: channels-last strides, by reshapes alone
    x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, h // 2, w // 2, c * 4).permute(0, 3, 1, 2)


def unsqueeze(x: Tensor) -> Tensor:
    """Inverse of :func:`squeeze`."""
    b, c, h, w = x.shape
    x = x.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // 4, h * 2, w * 2)


class ActNorm(nn.Module):
    r"""Per-channel affine map $y = (x + b) \odot e^{s}$.

    Data-dependent initialisation: on the first batch it sees, $b = -\text{mean}$ and
    $s = -\log \text{std}$ per channel, so the output has zero mean and unit variance.
    $\log|\det| = H \cdot W \cdot \sum_c s_c$.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
        self.bias.copy_(-mean)
        self.logs.copy_(-torch.log(std + 1e-6))
        self.initialized.fill_(True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not self.initialized:
            self.initialize(x)
        log_det = x.shape[2] * x.shape[3] * self.logs.sum()
        return (x + self.bias) * torch.exp(self.logs), log_det.expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return y * torch.exp(-self.logs) - self.bias


class InvConv1x1(nn.Module):
    r"""Invertible 1x1 convolution $y_{:,i,j} = W x_{:,i,j}$, a learned channel permutation.

    $\log|\det| = H \cdot W \cdot \log|\det W|$. With ``lu=True``, $W = P L (U + \mathrm{diag}(s))$
    (P a fixed permutation, L unit lower-triangular, U strictly upper-triangular), so that
    $\log|\det W| = \sum_i \log|s_i|$ costs $O(C)$ instead of $O(C^3)$.
    Both start from a random rotation.
    """

    def __init__(self, channels: int, lu: bool = True) -> None:
        super().__init__()
        w_init = torch.linalg.qr(torch.randn(channels, channels))[0]
        self.lu = lu
        if not lu:
            self.w = nn.Parameter(w_init)
            return
        p, lower, upper = torch.linalg.lu(w_init)
        s = torch.diagonal(upper)
        self.register_buffer("p", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.register_buffer("eye", torch.eye(channels))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(torch.abs(s)))

    def weight(self) -> Tensor:
        """The $C \\times C$ matrix $W$ (Section 5 of the paper reads its entries)."""
        if not self.lu:
            return self.w
        lower = self.lower * self.lower_mask + self.eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.p @ lower @ upper

    def log_abs_det_w(self) -> Tensor:
        if self.lu:
            return self.log_s.sum()
        return torch.linalg.slogdet(self.w)[1]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        w = self.weight()
        log_det = x.shape[2] * x.shape[3] * self.log_abs_det_w()
        return F.conv2d(x, w[:, :, None, None]), log_det.expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        w = self.weight()
        w_inv = torch.linalg.inv(w.double()).to(w.dtype)
        return F.conv2d(y, w_inv[:, :, None, None])


class ZeroConv2d(nn.Module):
    r"""3x3 convolution initialised to zero, output scaled by $e^{3 s}$ (learned $s$, zero at
    start). Ends every coupling network and prior, so each starts as the identity / N(0, I)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.logs = nn.Parameter(torch.zeros(1, out_channels, 1, 1))
        # output channels even first, then odd (see halves); not part of the state dict
        order = torch.cat([torch.arange(0, out_channels, 2), torch.arange(1, out_channels, 2)])
        self.register_buffer("halves_order", order, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv(x, self.conv.weight, self.conv.bias, torch.exp(3.0 * self.logs).flatten())

    def halves(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(out[:, 0::2], out[:, 1::2])`` of :meth:`forward`, computed with the output channels
        reordered (even, then odd) in the weights, so that both halves are plain slices of one
        dense tensor (strided slices would make the backward pass scatter into zeros)."""
        w, b, scale = self.conv.weight, self.conv.bias, torch.exp(3.0 * self.logs).flatten()
        order = self.halves_order
        return self._conv(x, w[order], b[order], scale[order]).chunk(2, dim=1)

    @staticmethod
    def _conv(x: Tensor, weight: Tensor, bias: Tensor, scale: Tensor) -> Tensor:
        # conv(x) * e^{3s} with the scale folded into the weights: one pass over the output less
        return F.conv2d(x, weight * scale[:, None, None, None], bias * scale, padding=1)


def coupling_network(in_channels: int, hidden: int, out_channels: int) -> nn.Sequential:
    """NN(x_a): conv3x3 -> ReLU -> conv1x1 -> ReLU -> zero-initialised conv3x3."""
    net = nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1),
        nn.ReLU(inplace=True),  # in place: a convolution's backward does not need its output
        nn.Conv2d(hidden, hidden, 1),
        nn.ReLU(inplace=True),
        ZeroConv2d(hidden, out_channels),
    )
    for conv in (net[0], net[2]):
        nn.init.normal_(conv.weight, std=0.05)
        nn.init.zeros_(conv.bias)
    return net


class Coupling(nn.Module):
    r"""Coupling layer: split $x = (x_a, x_b)$ along channels, keep $x_a$, transform $x_b$
    with parameters computed from $x_a$ by a network NN.

    - affine:   $(t, \tilde s) = \mathrm{NN}(x_a)$, $s = \sigma(\tilde s + 2)$,
      $y_b = (x_b + t) \odot s$, $\log|\det| = \sum \log s$;
    - additive: $y_b = x_b + \mathrm{NN}(x_a)$, $\log|\det| = 0$ (volume preserving: the
      "constant-volume Glow" of the paper's Section 4).
    """

    def __init__(self, channels: int, hidden: int, additive: bool = False) -> None:
        super().__init__()
        self.additive = additive
        n_a = channels // 2
        n_b = channels - n_a
        self.nn = coupling_network(n_a, hidden, n_b if additive else 2 * n_b)

    def _shift_scale(self, x_a: Tensor) -> tuple[Tensor, Tensor]:
        *body, head = self.nn  # head: the zero-initialised convolution
        h = x_a
        for layer in body:
            h = layer(h)
        shift, raw = head.halves(h)
        return shift, torch.sigmoid(raw + 2.0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_a, x_b = x.chunk(2, dim=1)
        if self.additive:
            return torch.cat([x_a, x_b + self.nn(x_a)], 1), x.new_zeros(x.shape[0])
        shift, scale = self._shift_scale(x_a)
        y_b = (x_b + shift) * scale
        return torch.cat([x_a, y_b], 1), sum_per_image(torch.log(scale))

    def inverse(self, y: Tensor) -> Tensor:
        y_a, y_b = y.chunk(2, dim=1)
        if self.additive:
            return torch.cat([y_a, y_b - self.nn(y_a)], 1)
        shift, scale = self._shift_scale(y_a)
        return torch.cat([y_a, y_b / scale - shift], 1)


class FlowStep(nn.Module):
    """One step of flow: actnorm -> invertible 1x1 convolution -> coupling."""

    def __init__(self, channels: int, hidden: int, additive: bool, lu: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [ActNorm(channels), InvConv1x1(channels, lu), Coupling(channels, hidden, additive)]
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, (ld_actnorm, ld_invconv, ld_coupling) = self.forward_parts(x)
        return y, ld_actnorm + ld_invconv + ld_coupling

    def forward_parts(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        """The step and its three log-determinants (actnorm, 1x1, coupling), each ``[B]``."""
        log_dets = []
        for layer in self.layers:
            x, ld = layer(x)
            log_dets.append(ld)
        return x, tuple(log_dets)

    def inverse(self, y: Tensor) -> Tensor:
        for layer in reversed(self.layers):
            y = layer.inverse(y)
        return y


class SplitPrior(nn.Module):
    r"""Factor out half of the channels: $h = (z_1, z_2)$, keep $z_1$, and score $z_2$ under
    $\mathcal N(\mu(z_1), \sigma(z_1)^2)$ with $(\mu, \log\sigma) = $ ZeroConv2d$(z_1)$."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = ZeroConv2d(channels // 2, channels)

    def params(self, z1: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, log_std)``: the even and odd output channels of the convolution."""
        return self.conv.halves(z1)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Returns ``(z1, z2, scale, eps)``: the two terms of ``log p(z2 | z1)`` per image (see
        :func:`gaussian_log_p`)."""
        z1, z2 = h.chunk(2, dim=1)
        mean, log_std = self.params(z1)
        scale, eps = gaussian_log_p(z2, mean, log_std)
        return z1, z2, sum_per_image(scale), sum_per_image(eps)

    def sample(self, z1: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
        mean, log_std = self.params(z1)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device)
        return mean + torch.exp(log_std) * temperature * eps


@dataclass(frozen=True)
class GlowConfig:
    """Hyper-parameters of :class:`Glow` (names from the Glow paper: L levels, K steps)."""

    in_channels: int = 3
    image_size: int = 32
    levels: int = 3
    steps: int = 32
    hidden: int = 512
    additive: bool = False
    lu: bool = True
    learn_top: bool = True

    def __post_init__(self) -> None:
        if self.levels < 1 or self.steps < 0 or self.hidden < 1:
            raise ValueError(f"need levels >= 1, steps >= 0, hidden >= 1; got {self}")
        if self.image_size % 2**self.levels:
            raise ValueError(
                f"image_size {self.image_size} must be divisible by 2**levels = {2**self.levels}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


# Layer types of one step of flow, in order, as named in FlowOutput.parts.
STEP_LAYERS = ("actnorm", "invconv", "coupling")


# Size per (profile, image kind): L levels, K steps per level, hidden channels of the couplings.
# cpu: the largest model that trains to a useful bits/dim in ~30 minutes on one 2-core machine;
# paper: the Glow paper's CIFAR-10 configuration (L=3, K=32, 512 channels), for a GPU.
SIZES: dict[tuple[str, str], dict[str, int]] = {
    ("smoke", "grey"): dict(levels=2, steps=2, hidden=16),
    ("smoke", "rgb"): dict(levels=2, steps=2, hidden=16),
    ("cpu", "grey"): dict(levels=2, steps=8, hidden=96),
    ("cpu", "rgb"): dict(levels=3, steps=8, hidden=128),
    ("paper", "grey"): dict(levels=2, steps=32, hidden=512),
    ("paper", "rgb"): dict(levels=3, steps=32, hidden=512),
}

# Training steps under the cpu profile (batch 64), sized for <= ~40 minutes at one thread.
# The CIFAR-10 budget is ~2 h of one thread of a 2-core AMD EPYC (Zen 4) with a second
# training on the other core (the first cpu models trained 3,500 steps: 4.03 bits/dim).
CPU_STEPS = {"fashion_mnist": 6_000, "notmnist": 4_000, "cifar10": 10_500}


@dataclass
class FlowOutput:
    """Result of :meth:`Glow.forward`: per-image ``log_pz`` and ``log_det`` (nats, shape
    ``[B]``), the latents, one tensor per level (factored-out halves, then the top), and
    ``parts``: the same two terms split by level and layer type (``log_det.L1.actnorm``,
    ``log_det.L1.invconv``, ``log_det.L1.coupling``, ...) and by prior, each prior's term in
    its scale and standardised parts (``log_pz.L1.scale``, ``log_pz.L1.eps``, ...,
    ``log_pz.top.scale``, ``log_pz.top.eps``; see :func:`gaussian_log_p`); they sum exactly
    to ``log_det`` and ``log_pz``."""

    log_pz: Tensor
    log_det: Tensor
    zs: list[Tensor]
    parts: dict[str, Tensor]

    @property
    def log_px(self) -> Tensor:
        return self.log_pz + self.log_det


class Glow(DensityModel):
    """The multi-scale Glow flow on inputs in $[-1/2, 1/2)^{C \\times H \\times W}$."""

    likelihood = "continuous"
    additive_parts = ("log_pz", "log_det")

    def __init__(self, config: GlowConfig) -> None:
        super().__init__()
        self.config = config
        c, s = config.in_channels, config.image_size
        self.levels = nn.ModuleList()
        self.priors = nn.ModuleList()
        for level in range(config.levels):
            c, s = c * 4, s // 2
            self.levels.append(
                nn.ModuleList(
                    FlowStep(c, config.hidden, config.additive, config.lu)
                    for _ in range(config.steps)
                )
            )
            if level < config.levels - 1:
                self.priors.append(SplitPrior(c))
                c //= 2
        self.top_shape = (c, s, s)
        self.top_mean = nn.Parameter(torch.zeros(1, c, 1, 1), requires_grad=config.learn_top)
        self.top_log_std = nn.Parameter(torch.zeros(1, c, 1, 1), requires_grad=config.learn_top)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.config.in_channels, self.config.image_size, self.config.image_size)

    def forward(self, x: Tensor) -> FlowOutput:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"Glow expects inputs [B, {self.input_shape}], got {list(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("Glow input contains NaN or infinite values")
        parts: dict[str, Tensor] = {}
        zs = []
        h = x
        for level, steps in enumerate(self.levels):
            name = f"L{level + 1}"
            h = squeeze(h)
            for kind in STEP_LAYERS:
                parts[f"log_det.{name}.{kind}"] = x.new_zeros(x.shape[0])
            for step in steps:
                h, lds = step.forward_parts(h)
                for kind, ld in zip(STEP_LAYERS, lds, strict=True):
                    parts[f"log_det.{name}.{kind}"] = parts[f"log_det.{name}.{kind}"] + ld
            if level < len(self.priors):
                h, z2, parts[f"log_pz.{name}.scale"], parts[f"log_pz.{name}.eps"] = (
                    self.priors[level](h))
                zs.append(z2)
        # log p(z_top) = sum log N(z_top; mu_top, sigma_top^2) = scale + eps terms
        scale, eps = gaussian_log_p(h, self.top_mean, self.top_log_std)
        parts["log_pz.top.scale"], parts["log_pz.top.eps"] = sum_per_image(scale), sum_per_image(eps)
        zs.append(h)
        # log p(z) = sum of the priors' terms; log|det| = sum over every layer (fixed order)
        log_pz = sum(v for k, v in parts.items() if k.startswith("log_pz."))
        log_det = sum(v for k, v in parts.items() if k.startswith("log_det."))
        return FlowOutput(log_pz=log_pz, log_det=log_det, zs=zs, parts=parts)

    def log_prob_parts(self, x: Tensor) -> dict[str, Tensor]:
        """``log_px``, its two terms ``log_pz`` and ``log_det``, and their finer ``parts``."""
        return self._parts(self(x))

    def score_parts(self, x: Tensor) -> dict[str, Tensor]:
        r""":meth:`log_prob_parts` and ``latent_norm`` $\lVert z \rVert_2$ over every level
        (the factored-out halves and the top; float64), a DoSE statistic, from the same pass."""
        out = self(x)
        # ||z||^2 = sum over levels of the squared latents
        sq = sum(z.double().pow(2).flatten(1).sum(1) for z in out.zs)
        return {**self._parts(out), "latent_norm": sq.sqrt()}

    @staticmethod
    def _parts(out: FlowOutput) -> dict[str, Tensor]:
        return {"log_px": out.log_px, "log_pz": out.log_pz, "log_det": out.log_det, **out.parts}

    def inverse(self, zs: list[Tensor]) -> Tensor:
        """Map the latents of :meth:`forward` back to the image: ``inverse(forward(x).zs) == x``."""
        return self._reverse(zs[-1], lambda level, z1: zs[level])

    @torch.no_grad()
    def sample(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw ``n`` images in $[-1/2, 1/2)$: every Gaussian's std is scaled by ``temperature``."""
        eps = torch.randn((n, *self.top_shape), generator=generator, device=self.top_mean.device)
        top = self.top_mean + torch.exp(self.top_log_std) * temperature * eps
        return self._reverse(
            top, lambda level, z1: self.priors[level].sample(z1, temperature, generator)
        )

    def _reverse(self, h: Tensor, z2_of: Callable[[int, Tensor], Tensor]) -> Tensor:
        """Run the levels backwards from the top latent ``h``; ``z2_of(level, z1)`` supplies
        each factored-out half (the stored latent, or a sample from the split prior)."""
        for level in reversed(range(len(self.levels))):
            if level < len(self.priors):
                h = torch.cat([h, z2_of(level, h)], 1)
            for step in reversed(self.levels[level]):
                h = step.inverse(h)
            h = unsqueeze(h)
        return h

    def invconv_weights(self) -> list[Tensor]:
        """The 1x1-convolution matrices $u_k$, in flow order (Section 5's analysis)."""
        return [step.layers[1].weight() for steps in self.levels for step in steps]
