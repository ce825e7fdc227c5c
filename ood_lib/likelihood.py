r"""Bits per dimension and per-image evaluation of a density model.

Images are integers $x \in \{0, \dots, 2^n - 1\}^D$ ($n$ bits, $D = C H W$ dimensions). A
continuous model $p$ is trained on dequantized inputs $\tilde x = (x + u)/2^n - 1/2$,
$u \in [0,1)^D$, so its discrete likelihood is the mass of a bin of volume $2^{-nD}$:

$$\log P(x) \approx \log p(\tilde x) - D\, n \log 2, \qquad
  \text{bpd}(x) = -\frac{\log P(x)}{D \log 2} = -\frac{\log p(\tilde x)}{D \log 2} + n .$$

Lower bits/dim means *more likely*. Training draws $u \sim U[0,1)$ (an upper bound on the
discrete negative log-likelihood in expectation); evaluation is deterministic and uses the
bin centre $u = 1/2$, so that a rerun gives bit-identical numbers.

:func:`evaluate` scores any :class:`~ood_lib.models.base.DensityModel`: its
``log_prob_parts(x)`` holds ``"log_px"`` (nats per image, shape ``[B]``) and more named parts
(Glow adds ``log_pz``, ``log_det`` and their per-level split). A *discrete* model (PixelCNN, a
VAE) returns $\log P(x)$ of the integer image directly, so its bits/dim has no $+n$; the model's
own ``inputs`` and ``bits_per_dim`` apply that difference.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from ood_lib.models.base import DensityModel


def bits_per_dim(log_px: Tensor | np.ndarray | float, n_dims: int, n_bits: int = 8):
    """Convert the continuous log-density of dequantized inputs (nats) into bits/dim
    (``n_bits=0`` for the log-probability of integer images, a discrete model's)."""
    return -log_px / (n_dims * math.log(2.0)) + n_bits


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
