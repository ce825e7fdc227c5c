r"""The interface every density model of the book implements.

A model family (Glow, PixelCNN, VAE) is a :class:`DensityModel`: it scores a batch of images
with :meth:`~DensityModel.log_prob_parts`, a dict of per-image terms in nats whose ``"log_px"``
is the log-likelihood and whose :attr:`~DensityModel.additive_parts` add up to it, and it
trains on :meth:`~DensityModel.train_loss` (the exact negative log-likelihood, or a bound on it).

Two kinds of likelihood, declared by :attr:`~DensityModel.likelihood`:

- ``"continuous"`` (flows): a density $p$ on dequantized inputs
  $\tilde x = (x + u)/2^n - \tfrac12 \in [-\tfrac12, \tfrac12)^D$. The discrete probability of
  the integer image is the mass of its bin of volume $2^{-nD}$, so
  $\text{bpd} = -\log p(\tilde x)/(D \ln 2) + n$.
- ``"discrete"`` (PixelCNN, a VAE with a discrete decoder): ``log_px`` *is* $\log P(x)$ of the
  integer image and $\text{bpd} = -\log P(x)/(D \ln 2)$, with no $+n$. These models take the
  integer levels themselves (uint8), never dequantized inputs.

Mixing the two up shifts every number by $n = 8$ bits/dim; :meth:`~DensityModel.inputs` and
:meth:`~DensityModel.bits_per_dim` are the only places that know the difference.

**Bits per dimension.** Images are integers $x \in \{0, \dots, 2^n - 1\}^D$ ($n$ bits,
$D = C H W$). A continuous model's discrete likelihood is the mass of a bin of volume
$2^{-nD}$:

$$\log P(x) \approx \log p(\tilde x) - D\, n \log 2, \qquad
  \text{bpd}(x) = -\frac{\log P(x)}{D \log 2} = -\frac{\log p(\tilde x)}{D \log 2} + n .$$

Lower bits/dim means *more likely*. Training draws $u \sim U[0,1)$ (an upper bound on the
discrete negative log-likelihood in expectation); :func:`evaluate` is deterministic and uses
the bin centre $u = 1/2$, so that a rerun gives bit-identical numbers.
"""

from __future__ import annotations

import copy
import math
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ood_lib.transforms import dequantize, reduce_bits

Likelihood = Literal["continuous", "discrete"]


def bits_per_dim(log_px: Tensor | np.ndarray | float, n_dims: int, n_bits: int = 8):
    """Convert the continuous log-density of dequantized inputs (nats) into bits/dim
    (``n_bits=0`` for the log-probability of integer images, a discrete model's)."""
    return -log_px / (n_dims * math.log(2.0)) + n_bits


class DensityModel(nn.Module):
    """Base class of every model family (see the module docstring)."""

    likelihood: ClassVar[Likelihood]
    # Parts of log_prob_parts(x) that sum exactly to "log_px" (empty: none are additive).
    additive_parts: ClassVar[tuple[str, ...]] = ()

    def log_prob_parts(self, x: Tensor) -> dict[str, Tensor]:
        """Per-image terms (nats, shape ``[B]``) of a batch prepared by :meth:`inputs`;
        ``"log_px"`` is the log-likelihood (or, for a VAE, its importance-weighted bound)."""
        raise NotImplementedError

    def score_parts(self, x: Tensor) -> dict[str, Tensor]:
        """What scoring keeps per image (:func:`evaluate`): every part of
        :meth:`log_prob_parts`, and a family may add per-image statistics of the same forward
        pass that later analyses read (Glow: the latent norm), so that no set is run twice."""
        return self.log_prob_parts(x)

    def train_loss(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Mean training objective of a prepared batch, in bits/dim (scalar). By default the
        exact negative log-likelihood; a latent-variable model returns a bound."""
        log_px = self.log_prob_parts(x)["log_px"]
        return self.bits_per_dim(log_px, x[0].numel()).mean()

    # The bit depth of the integer images this model is trained on (set by the registry).
    n_bits: int = 8
    # Images per batch of evaluate (a family with large activations per
    # image runs faster with fewer: they stay in the caches).
    eval_batch_size: ClassVar[int] = 256

    def inputs(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """uint8 images ``[B, C, H, W]`` -> what :meth:`log_prob_parts` takes.

        Continuous: dequantized to $[-\\tfrac12, \\tfrac12)$ with uniform noise from ``generator``
        (training) or at the bin centres when ``generator`` is None (evaluation, deterministic).
        Discrete: the integer levels reduced to ``n_bits``, unchanged in dtype (uint8).
        """
        if x.dtype != torch.uint8:
            raise ValueError(f"inputs expects uint8 images, got {x.dtype}")
        if self.likelihood == "continuous":
            if generator is None:
                return dequantize(x, self.n_bits, noise="center")
            return dequantize(x, self.n_bits, generator=generator)
        return reduce_bits(x, self.n_bits)

    def bits_per_dim(self, log_px: Tensor | np.ndarray, n_dims: int):
        """bits/dim of ``log_px`` (nats): ``+ n_bits`` for a continuous model, nothing more for a
        discrete one."""
        return bits_per_dim(log_px, n_dims, self.n_bits if self.likelihood == "continuous" else 0)


@torch.no_grad()
def evaluate(
    model: DensityModel,
    x: Tensor,
    batch_size: int | None = None,
    progress: bool | str = False,
) -> dict[str, np.ndarray]:
    """Per-image log-likelihood parts and bits/dim of uint8 images ``x`` ``[N, C, H, W]``.

    Returns float64 arrays of shape ``[N]``: every part of ``model.score_parts`` (the
    log-likelihood parts in nats, and any per-image statistic the family adds) and ``bpd``.
    Deterministic: bin-centre dequantization (continuous models), model in eval mode.
    ``batch_size`` defaults to the model's ``eval_batch_size``.
    """
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"evaluate expects uint8 images [N, C, H, W], got {x.dtype} {list(x.shape)}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    parts: dict[str, list[np.ndarray]] = {}
    batch_size = batch_size or model.eval_batch_size
    batches = range(0, len(x), batch_size)
    desc = progress if isinstance(progress, str) else "evaluate"
    for start in tqdm(batches, desc=desc, disable=not progress, leave=False):
        xb = model.inputs(x[start : start + batch_size]).to(device)
        for name, value in model.score_parts(xb).items():
            parts.setdefault(name, []).append(value.double().cpu().numpy())
    if was_training:
        model.train()
    out = {name: np.concatenate(values) for name, values in parts.items()}
    out["bpd"] = model.bits_per_dim(out["log_px"], int(np.prod(x.shape[1:])))
    return out


def copy_as(model: DensityModel, dtype: torch.dtype = torch.float64) -> DensityModel:
    """A copy of ``model`` in ``dtype`` (float64 by default), in eval mode and without parameter
    gradients, on the model's device; the caller's model is left untouched."""
    return copy.deepcopy(model).to(dtype).eval().requires_grad_(False)
