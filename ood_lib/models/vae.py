r"""A convolutional VAE with a discretized-logistic decoder (Kingma & Welling, 2014).

A latent $z \in \mathbb R^d$ with prior $p(z) = \mathcal N(0, I)$ generates the integer image
$x \in \{0, \dots, 2^n - 1\}^D$ through a decoder $p(x \mid z) = \prod_j P(x_j \mid \mu_j(z),
s_j(z))$; an encoder gives the approximate posterior
$q(z \mid x) = \mathcal N(\mu(x), \mathrm{diag}\,\sigma(x)^2)$. Encoder and decoder are a
DCGAN-like pair of strided (transposed) convolutions, in the spirit of the VAE of Rosca et al.
(2018) that Nalisnick et al. (2019) follow.

**Decoder.** Each subpixel is a logistic with mean $\mu_j$ and scale $s_j$ (both predicted per
subpixel) discretized to the bins $[x - \tfrac12, x + \tfrac12]$ of the level scale, the edge
bins $0$ and $2^n - 1$ taking the tails (as in PixelCNN++):

$$P(x \mid \mu, s) = \sigma\!\left(\tfrac{x + 1/2 - \mu}{s}\right)
                  - \sigma\!\left(\tfrac{x - 1/2 - \mu}{s}\right).$$

So $\log p(x \mid z)$ is the log-*probability* of the integer image: a ``"discrete"`` model,
whose bits/dim has no $+n$ (:mod:`ood_lib.models.base`).

**Training** maximises the evidence lower bound with one reparameterised sample
$z = \mu(x) + \sigma(x) \odot \epsilon$, $\epsilon \sim \mathcal N(0, I)$:

$$\log p(x) \ge \mathbb E_q[\log p(x \mid z)] - \mathrm{KL}(q(z \mid x)\,\|\,p(z)).$$

**Scoring** uses the importance-weighted bound of Burda et al. (2016) with $k$ samples
$z_i \sim q(z \mid x)$ and weights $w_i = p(x, z_i) / q(z_i \mid x)$:

$$\mathcal L_k = \log \frac1k \sum_{i=1}^k w_i \;\le\; \log p(x),$$

which increases with $k$ and tends to $\log p(x)$. :meth:`VAE.log_prob_parts` returns it as
``log_px`` together with three parts that add up to it exactly:

$$\mathcal L_k = \underbrace{\tfrac1k \textstyle\sum_i \log p(x \mid z_i)}_{\texttt{recon}}
 + \underbrace{\tfrac1k \textstyle\sum_i \log \tfrac{p(z_i)}{q(z_i \mid x)}}_{\texttt{neg\_kl}}
 + \underbrace{\mathcal L_k - \tfrac1k \textstyle\sum_i \log w_i}_{\texttt{iw\_gain} \,\ge\, 0}.$$

The noise of image $b$ is drawn from its own generator, seeded by ``seed_eval`` and the
SHA-256 of the image's bytes: an image gets the same number whatever batch it is scored in.

Image sizes that are not a power of two (28 for MNIST) are zero-padded (in the $[-1, 1]$
scale the encoder sees) to the next power of two; the decoder works at that size and its
output is cropped back, so the likelihood covers exactly the image's own subpixels.

**Spatial latent** (``latent_stride`` $= s \ge 2$). One global $z$ has to carry every detail of
a CIFAR-10 image through a few dozen numbers. Instead $z$ can be a map of ``latent`` channels
on the padded image's grid shrunk $s$ times, $z \in \mathbb R^{d}$ with
$d = \texttt{latent} \cdot (S/s)^2$ (a $16 \times 8 \times 8$ map for $S = 32$, $s = 4$), the prior
still $\mathcal N(0, I)$ and $q$ still diagonal, so every formula above holds with this $d$.
Encoder: strided convolutions down to the grid, then a 3x3 convolution to $(\mu, \log \sigma)$
per position; decoder: a 3x3 convolution up from $z$, then strided transposed convolutions
back to the image. At every resolution below the image's, both run ``res_blocks`` residual
blocks $h + W_2\, \mathrm{ELU}(W_1\, \mathrm{ELU}(h))$ ($W_1$ 3x3, $W_2$ 1x1 and zero at
initialisation, so that a deep stack starts as the identity).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ood_lib.models.base import DensityModel

LOG_2PI = math.log(2 * math.pi)
# Floor of the decoder's log-scale in the [-1, 1] units (PixelCNN++'s -7): s >= 0.1 level at 8 bits.
MIN_LOG_SCALE = -7.0
# Latent samples decoded per forward pass when scoring (bounds memory).
DECODE_CHUNK = 256


# Two identities keep the per-element functions on torch's vectorised exp and log: its CPU
# kernels of expm1, log1p, softplus and ELU are scalar loops on some builds (40-50 ns an
# element against ~1 ns for exp; benchmarks/bench_families.py). Both agree with torch's own
# functions to float32 rounding of the result (an absolute error of a few 1e-8).


def softplus(x: Tensor) -> Tensor:
    r"""$\log(1 + e^x) = \max(x, 0) + \log(1 + e^{-|x|})$, elementwise."""
    return F.relu(x) + torch.log(1.0 + torch.exp(-x.abs()))


def elu(x: Tensor) -> Tensor:
    r"""ELU: $x$ for $x > 0$, $e^x - 1$ otherwise, as $\max(x, 0) + (e^{\min(x, 0)} - 1)$
    with $\min(x, 0) = x - \max(x, 0)$ (exact for $x > 0$; the gradient is ELU's, 1 at 0)."""
    positive = F.relu(x)
    return positive + (torch.exp(x - positive) - 1.0)


class ELU(nn.Module):
    """:func:`elu` as a layer (no parameters: a drop-in for ``nn.ELU()``, same state dict)."""

    def forward(self, x: Tensor) -> Tensor:
        return elu(x)


def std_normal_log_p(z: Tensor) -> Tensor:
    r"""Elementwise $\log \mathcal N(z; 0, 1) = -\tfrac12(\log 2\pi + z^2)$."""
    return -0.5 * (LOG_2PI + z**2)


def discretized_logistic_log_p(x: Tensor, mean: Tensor, log_scale: Tensor, n_levels: int) -> Tensor:
    r"""Elementwise $\log P(x \mid \mu, s)$ of integer levels ``x`` (as floats) on the level
    scale, bins $[x - \tfrac12, x + \tfrac12]$, bins $0$ and ``n_levels - 1`` taking the tails."""
    inv_s = torch.exp(-log_scale)
    a = (x + 0.5 - mean) * inv_s  # upper bin edge, standardised
    b = (x - 0.5 - mean) * inv_s  # lower bin edge
    softplus_a, softplus_b = softplus(a), softplus(b)
    # log(sigma(a) - sigma(b)) = a + log(1 - e^{b - a}) - softplus(a) - softplus(b), b - a = -1/s
    middle = a + torch.log(-torch.expm1(-inv_s)) - softplus_a - softplus_b
    # log sigma(a) = -softplus(-a) = a - softplus(a) (bin 0: (-inf, 1/2]) and
    # log(1 - sigma(b)) = -softplus(b) (top bin: [n - 3/2, inf))
    lowest, highest = a - softplus_a, -softplus_b
    return torch.where(x <= 0, lowest, torch.where(x >= n_levels - 1, highest, middle))


def padded_size(image_size: int) -> int:
    """The power of two (at least 4) the networks work at: ``image_size`` rounded up."""
    return max(4, 1 << (image_size - 1).bit_length())


class ResBlock(nn.Module):
    r"""$h + W_2\, \mathrm{ELU}(W_1\, \mathrm{ELU}(h))$, $W_1$ a 3x3 and $W_2$ a 1x1 convolution
    (same width); $W_2$ starts at zero, so the block starts as the identity."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.out = nn.Conv2d(width, width, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.out(elu(self.conv(elu(h))))


def image_seed(image: Tensor, seed: int) -> int:
    """A 63-bit seed from ``seed`` and the SHA-256 of the image's shape and bytes (stable across
    runs and platforms)."""
    h = hashlib.sha256(f"{seed}:{tuple(image.shape)}:".encode())
    h.update(image.detach().contiguous().cpu().numpy().tobytes())
    return int.from_bytes(h.digest()[:8], "little") & (2**63 - 1)


def _noise(draw, shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """``draw`` (torch.randn / torch.rand) on the generator's device, moved to ``like``'s."""
    device = generator.device if generator is not None else like.device
    return draw(shape, generator=generator, device=device).to(like.device, like.dtype)


@dataclass(frozen=True)
class VAEConfig:
    """Hyper-parameters of :class:`VAE`."""

    in_channels: int = 3
    # Any size from 4 up; not a power of two (28) -> zero-padded to the next one (32).
    image_size: int = 32
    # Channels of the first conv; doubled at each halving, capped at 4x (DCGAN-like).
    hidden: int = 64
    # Dimension d of z: room for CIFAR-10's detail at the cost of one linear layer per side.
    latent: int = 64
    # Samples of the importance-weighted bound when scoring sets: the bound tightens with k and
    # scoring costs k decoder passes per image; 32 keeps a 10,000-image set to minutes on a CPU.
    k_eval: int = 32
    # Seed mixed with each image's hash for its scoring noise.
    seed_eval: int = 0
    # 0: one global latent vector of `latent` dims (the DCGAN-like pair); s, a power of two
    # >= 2: a spatial latent of `latent` channels on the padded image's grid shrunk s times.
    latent_stride: int = 0
    # Residual blocks at each resolution below the image's, in the encoder and the decoder
    # (spatial latent only).
    res_blocks: int = 0

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.hidden < 1 or self.latent < 1:
            raise ValueError(f"need in_channels, hidden, latent >= 1; got {self}")
        if not 4 <= self.image_size <= 256:
            raise ValueError(f"image_size must be in [4, 256], got {self.image_size}")
        if self.k_eval < 1:
            raise ValueError(f"k_eval must be >= 1, got {self.k_eval}")
        s, padded = self.latent_stride, padded_size(self.image_size)
        if s and not (2 <= s <= padded and s & (s - 1) == 0):
            raise ValueError(f"latent_stride must be 0 or a power of two in [2, {padded}], got {s}")
        if self.res_blocks < 0 or self.res_blocks and not s:
            raise ValueError(f"res_blocks must be >= 0, and 0 without latent_stride; got {self}")

    def to_dict(self) -> dict:
        """The fields, ``latent_stride`` and ``res_blocks`` only when not 0: the dict is hashed
        into checkpoint keys, and the keys of the global-latent models predate them."""
        d = asdict(self)
        for name in ("latent_stride", "res_blocks"):
            if not d[name]:
                del d[name]
        return d


# Config keyword arguments (besides in_channels, image_size) per profile. Measured with ONE
# thread (torch 2.14.1 CPU) on a 2-core machine loaded by two other trainings (load average ~4):
#   cpu   (2.1 M parameters), Adamax step at batch 64: 32x32x3 0.20-0.22 s (~8,000-9,000 steps
#         in 30 min), 28x28x1 0.14-0.20 s; scoring at k_eval = 16: 12-20 ms per image;
#   smoke (34 k parameters), step at batch 16: 5-8 ms (30 steps well under a second).
SIZES: dict[tuple[str, str], dict[str, int]] = {
    (profile, kind): size
    for profile, size in {"smoke": dict(hidden=8, latent=8, k_eval=4),
                          "cpu": dict(hidden=64, latent=64, k_eval=16),
                          "paper": dict(hidden=128, latent=100, k_eval=64)}.items()
    for kind in ("grey", "rgb")
}
# cpu RGB uses a spatial latent (8 channels on a 16x16 grid) with 2 residual blocks a side:
# in CPU-budgeted pilots (benchmarks/pilots/vae_*, 500 held-out CIFAR-10 images) it reached
# 5.50 bits/dim in 523 CPU-s, against 5.71 for 32 channels on 8x8 and 6.26 for the global
# 64-dim latent's full run; ~0.27 s a step on one loaded thread.
SIZES["cpu", "rgb"] = dict(hidden=32, latent=8, k_eval=16, latent_stride=2, res_blocks=2)

# Training steps under the cpu profile (batch 64): ~30 minutes grey, ~1 h 10 min RGB (~0.17 s
# a step on one thread of an idle machine).
CPU_STEPS = {"cifar10": 24_000, "fashion_mnist": 8_000}
# Scoring costs k_eval decoder passes per image, so the training monitors score fewer images,
# less often, than a flow's (cpu and paper profiles).
TRAIN_OVERRIDES = dict(eval_every=500, eval_images=200)


class VAE(DensityModel):
    """The convolutional VAE on integer levels (uint8 ``[B, C, H, W]``, see module docstring)."""

    likelihood = "discrete"
    additive_parts = ("recon", "neg_kl", "iw_gain")
    # Each scored image is k_eval decoder passes: at 128 images a batch the CIFAR-10 VAE scores
    # 218 images/s against 187 at 256, the Fashion-MNIST one 179 at 64 against 174 at 256
    # (2 threads, idle AMD EPYC, 1,024 test images; same bits/dim to 9 decimals).
    eval_batch_size: ClassVar[int] = 128

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.padded_size = padded_size(config.image_size)
        self.pad = (self.padded_size - config.image_size) // 2
        build = self._spatial_networks if config.latent_stride else self._global_networks
        self.encoder, self.decoder = build()
        # The decoder runs k_eval times per scored image: its convolutions keep their weights,
        # hence their outputs, channels-last, which oneDNN's transposed convolutions run faster
        # than NCHW (no layout reorder; benchmarks/bench_families.py). Same values and keys.
        self.decoder.to(memory_format=torch.channels_last)

    def _global_networks(self) -> tuple[nn.Sequential, nn.Sequential]:
        """Encoder and decoder of the global latent (the DCGAN-like pair)."""
        config, c = self.config, self.config.in_channels
        n_halvings = int(math.log2(self.padded_size // 4))  # down to a 4x4 map
        # channels: the image's, then hidden, 2 hidden, 4 hidden, 4 hidden, ... (DCGAN-like)
        widths = [c] + [config.hidden * min(2**i, 4) for i in range(n_halvings)]
        top = widths[-1] * 16  # size of the flattened 4x4 map
        # q(z|x): (conv4x4 stride 2, ELU) per halving, then a linear map to (mu, log sigma)
        enc: list[nn.Module] = []
        for w_in, w_out in zip(widths, widths[1:], strict=False):
            enc += [nn.Conv2d(w_in, w_out, 4, stride=2, padding=1), ELU()]
        enc += [nn.Flatten(), nn.Linear(top, 2 * config.latent)]
        encoder = nn.Sequential(*enc)
        # p(x|z): the mirror image, ending in (mean, log-scale) for every subpixel: 2C channels
        widths[0] = 2 * c
        dec: list[nn.Module] = [
            nn.Linear(config.latent, widths[-1] * 16), nn.Unflatten(1, (widths[-1], 4, 4))
        ]
        for w_in, w_out in zip(widths[::-1], widths[::-1][1:], strict=False):
            dec += [ELU(), nn.ConvTranspose2d(w_in, w_out, 4, stride=2, padding=1)]
        return encoder, nn.Sequential(*dec)

    def _spatial_networks(self) -> tuple[nn.Sequential, nn.Sequential]:
        """Encoder and decoder of the spatial latent ``[latent, S/s, S/s]`` (module docstring):
        widths as in the global pair, ``hidden`` doubled per halving, capped at 4x."""
        cfg = self.config
        c, grid = cfg.in_channels, self.latent_shape[1]
        n_halvings = int(math.log2(cfg.latent_stride))
        widths = [cfg.hidden * min(2**i, 4) for i in range(n_halvings)]  # at S/2, S/4, ...

        def blocks(width: int) -> list[nn.Module]:
            return [ResBlock(width) for _ in range(cfg.res_blocks)]

        # q(z|x): (conv4x4 stride 2, blocks) per halving, then (mu, log sigma) per position
        enc: list[nn.Module] = [nn.Conv2d(c, widths[0], 4, stride=2, padding=1), *blocks(widths[0])]
        for w_in, w_out in zip(widths, widths[1:], strict=False):
            enc += [ELU(), nn.Conv2d(w_in, w_out, 4, stride=2, padding=1), *blocks(w_out)]
        enc += [ELU(), nn.Conv2d(widths[-1], 2 * cfg.latent, 3, padding=1), nn.Flatten()]
        # p(x|z): the mirror image, ending in (mean, log-scale) for every subpixel: 2C channels
        dec: list[nn.Module] = [nn.Unflatten(1, (cfg.latent, grid, grid)),
                                nn.Conv2d(cfg.latent, widths[-1], 3, padding=1), *blocks(widths[-1])]
        for w_in, w_out in zip(widths[::-1], widths[::-1][1:], strict=False):
            dec += [ELU(), nn.ConvTranspose2d(w_in, w_out, 4, stride=2, padding=1),
                    *blocks(w_out)]
        dec += [ELU(), nn.ConvTranspose2d(widths[0], 2 * c, 4, stride=2, padding=1)]
        return nn.Sequential(*enc), nn.Sequential(*dec)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.config.in_channels, self.config.image_size, self.config.image_size)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one z: ``(latent,)``, or ``(latent, S/s, S/s)`` with a spatial latent."""
        cfg = self.config
        if not cfg.latent_stride:
            return (cfg.latent,)
        grid = self.padded_size // cfg.latent_stride
        return (cfg.latent, grid, grid)

    @property
    def latent_dim(self) -> int:
        """d, the number of entries of z (the flat vectors the bound and sampler use)."""
        return math.prod(self.latent_shape)

    @property
    def n_levels(self) -> int:
        return 2**self.n_bits

    def _check(self, x: Tensor) -> None:
        if x.dtype != torch.uint8:
            raise ValueError(f"VAE takes uint8 levels (model.inputs(images)), got {x.dtype}")
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"VAE expects images [B, {self.input_shape}], got {list(x.shape)}")
        if x.numel() and int(x.max()) >= self.n_levels:
            raise ValueError(f"levels must be < 2**n_bits = {self.n_levels}, got {int(x.max())}")

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z|x) of uint8 levels ``x``: ``(mu, log_sigma)``, each ``[B, d]`` (a spatial
        latent flattened channel by channel)."""
        w = next(self.parameters())
        h = x.to(w.dtype) * (2.0 / (self.n_levels - 1)) - 1.0  # levels -> [-1, 1]
        h = F.pad(h, [self.pad, self.padded_size - self.config.image_size - self.pad] * 2)
        mu, log_sigma = self.encoder(h).chunk(2, dim=1)  # [B, d] each
        return mu, log_sigma

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """p(x|z): per-subpixel ``(mean, log_scale)`` on the level scale, ``[N, C, H, W]`` each."""
        s, p = self.config.image_size, self.pad
        out = self.decoder(z)[..., p : p + s, p : p + s]  # [N, 2C, H, W], padding cropped
        m, log_s = out.chunk(2, dim=1)
        half = (self.n_levels - 1) / 2
        # [-1, 1] units -> levels: mu = (m + 1)(2^n - 1)/2, s = e^{log_s} (2^n - 1)/2
        return half * (m + 1.0), log_s.clamp(min=MIN_LOG_SCALE) + math.log(half)

    def log_p_x_given_z(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) in nats, ``[N]``, of ``x`` ``[N or 1, C, H, W]`` at ``z`` ``[N, d]``;
        with ``z`` ``[N, k, d]`` (k samples per image, decoded in one pass), ``[N, k]``."""
        mean, log_scale = self.decode(z.flatten(0, z.ndim - 2))  # [N (k), C, H, W]
        if z.ndim == 3:  # [N k, C, H, W] -> [N, k, C, H, W]; x broadcast over its k samples
            mean, log_scale = (t.unflatten(0, z.shape[:2]) for t in (mean, log_scale))
            x = x[:, None]
        log_p = discretized_logistic_log_p(x.to(mean.dtype), mean, log_scale, self.n_levels)
        return log_p.sum((-3, -2, -1))  # over C, H, W

    def eps_for(self, x: Tensor, k: int) -> Tensor:
        """The scoring noise ``[B, k, d]``: image b's from a generator seeded by
        ``image_seed(x[b], seed_eval)``. Draw once for the largest k and slice ``[:, :k]`` to
        watch the bound move with k on nested samples."""
        w = next(self.parameters())
        seeds = [image_seed(img, self.config.seed_eval) for img in x]
        eps = [
            torch.randn(k, self.latent_dim, generator=torch.Generator().manual_seed(seed))
            for seed in seeds
        ]
        shape = (len(x), k, self.latent_dim)
        return torch.stack(eps).to(w.device, w.dtype) if eps else w.new_zeros(shape)

    def iw_bound(self, x: Tensor, k: int, eps: Tensor | None = None) -> dict[str, Tensor]:
        """The importance-weighted bound L_k and its parts (nats, float64, ``[B]``) of uint8
        levels ``x``; ``eps`` ``[B, k, d]`` is the standard-normal noise (default: per-image
        seeded, :meth:`eps_for`, so an image's value does not depend on its batch beyond
        float round-off)."""
        self._check(x)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        eps = self.eps_for(x, k) if eps is None else eps
        if tuple(eps.shape) != (len(x), k, self.latent_dim):
            expected = [len(x), k, self.latent_dim]
            raise ValueError(f"eps must be {expected}, got {list(eps.shape)}")
        log_w, log_pxz, log_ratio = self.log_weights(x, eps)
        log_px = torch.logsumexp(log_w, dim=1) - math.log(k)  # L_k = log (1/k) sum_i w_i
        recon, neg_kl = log_pxz.mean(1), log_ratio.mean(1)
        return {"log_px": log_px, "recon": recon, "neg_kl": neg_kl,
                "iw_gain": log_px - (recon + neg_kl)}

    def log_weights(self, x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``log w_i``, ``log p(x|z_i)`` and ``log p(z_i) - log q(z_i|x)`` (float64, ``[B, k]``)
        of uint8 levels ``x`` with standard-normal noise ``eps`` ``[B, k, d]``."""
        k = eps.shape[1]
        w = next(self.parameters())
        eps = eps.to(w.device, w.dtype)
        mu, log_sigma = self.encode(x)  # [B, d]
        z = mu[:, None] + torch.exp(log_sigma)[:, None] * eps  # z_i = mu + sigma * eps_i, [B, k, d]
        # log q(z|x) = sum_j log N(eps_j; 0, 1) - log sigma_j;  log p(z) = sum_j log N(z_j; 0, 1)
        log_ratio = (std_normal_log_p(z) - std_normal_log_p(eps) + log_sigma[:, None]).sum(2)
        # log p(x|z_i), decoded in chunks of images (each with its k samples), [B, k]
        per_chunk = max(1, DECODE_CHUNK // k)
        log_pxz = torch.cat([
            self.log_p_x_given_z(xc, zc)
            for xc, zc in zip(x.split(per_chunk), z.split(per_chunk), strict=True)
        ]) if len(x) else w.new_zeros(0, k)
        log_pxz, log_ratio = log_pxz.double(), log_ratio.double()
        # log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x)
        return log_pxz + log_ratio, log_pxz, log_ratio

    @torch.no_grad()
    def iw_curve(self, x: Tensor, ks: Sequence[int]) -> Tensor:
        """L_k for each k in ``ks`` (float64 ``[B, len(ks)]``) on *nested* samples: the first k
        of the per-image seeded noise of the largest k, so one set of max(ks) decoder passes
        per image gives the whole curve of the estimate against k."""
        self._check(x)
        log_w, _, _ = self.log_weights(x, self.eps_for(x, max(ks)))
        return torch.stack([torch.logsumexp(log_w[:, :k], 1) - math.log(k) for k in ks], 1)

    def log_prob_parts(self, x: Tensor) -> dict[str, Tensor]:
        """L_k with k = ``config.k_eval`` and its parts (see :meth:`iw_bound`)."""
        return self.iw_bound(x, self.config.k_eval)

    def train_loss(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Negative single-sample ELBO in bits/dim, mean over the batch (scalar); the KL term in
        closed form (Kingma & Welling's estimator B)."""
        self._check(x)
        mu, log_sigma = self.encode(x)  # [B, d]
        z = mu + torch.exp(log_sigma) * _noise(torch.randn, mu.shape, generator, mu)  # reparam.
        recon = self.log_p_x_given_z(x, z)  # [B]
        # KL(N(mu, sigma^2) || N(0, 1)) = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - 2 log sigma_j)
        kl = 0.5 * (mu**2 + torch.exp(2 * log_sigma) - 1.0 - 2 * log_sigma).sum(1)
        return self.bits_per_dim(recon - kl, x[0].numel()).mean()

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, pixel_noise: bool = True
    ) -> Tensor:
        """``n`` uint8 images ``[n, C, H, W]``: z ~ N(0, I), then each subpixel drawn from its
        discretized logistic (``pixel_noise=False``: its median, the rounded decoder mean)."""
        w = next(self.parameters())
        mean, log_scale = self.decode(_noise(torch.randn, (n, self.latent_dim), generator, w))
        y = mean
        if pixel_noise:  # logistic by inversion: y = mu + s logit(u), u ~ U(0, 1)
            u = _noise(torch.rand, mean.shape, generator, w)
            y = mean + torch.exp(log_scale) * torch.logit(u)
        levels = y.round().clamp(0, self.n_levels - 1).to(torch.uint8)  # the bin holding y
        return levels.contiguous()  # NCHW (the channels-last decoder's output is not)
