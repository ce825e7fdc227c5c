r"""Named transformations between stored images and what the models see.

Images are stored as uint8 levels $x \in \{0, \dots, 255\}$, channels last (NHWC); models take
float tensors channels first (NCHW).

Bit depth
    Glow (Kingma & Dhariwal, 2018) models $n$-bit images. Reducing 8-bit levels to $n$ bits keeps
    the $n$ most significant bits, $x_n = \lfloor x / 2^{8-n} \rfloor \in \{0, \dots, 2^n - 1\}$.

Dequantization
    A continuous density $p$ on $[-\tfrac12, \tfrac12)^D$ defines a discrete model of $x_n$ by
    integrating over each bin; training on $\tilde x = (x_n + u)/2^n - \tfrac12$ with
    $u \sim U[0, 1)^D$ maximises a lower bound on that discrete log-likelihood (Theis et al.,
    2016). At evaluation we use the bin centres, $u = \tfrac12$, so every score is deterministic.
    The integer level is recovered as $x_n = \lfloor 2^n (\tilde x + \tfrac12) \rfloor$.

Grey <-> RGB
    The paper evaluates a CIFAR-10 model on MNIST-like 28x28 grey images by zero-padding them to
    32x32 and repeating the grey channel three times; the inverse conversion uses ITU-R BT.601
    luma, $Y = 0.299 R + 0.587 G + 0.114 B$, rounded, and crops the centre 28x28.

Background perturbation
    The likelihood-ratio background model (Ren et al., 2019) is trained on images in which each
    subpixel is, independently with probability $\mu$, replaced by a level drawn uniformly from
    $\{0, \dots, 255\}$ (:func:`corrupt`): the local, "background" statistics survive, the
    semantic content is destroyed.

Synthetic controls
    :func:`constant_images` and :func:`uniform_noise_images` make inputs that are not samples of
    any dataset (the constant and random images of the paper's appendix); they are named as such.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# float32 holds every multiple of 2^-24 in [0, 1) exactly; see dequantize().
_FLOAT32_BITS = 24


def _check_uint8(x: np.ndarray | torch.Tensor, what: str) -> None:
    dtype = x.dtype
    if dtype not in (np.uint8, torch.uint8):
        raise ValueError(f"{what}: expected uint8 pixel levels 0..255, got dtype {dtype}")


def _check_n_bits(n_bits: int) -> None:
    if not (isinstance(n_bits, int) and 1 <= n_bits <= 8):
        raise ValueError(f"n_bits must be an integer in 1..8, got {n_bits!r}")


def to_nchw(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images (N, H, W, C) with C in {1, 3} -> a contiguous uint8 tensor (N, C, H, W)."""
    _check_uint8(x, "to_nchw")
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(
            f"to_nchw: expected shape (N, H, W, C) with C in {{1, 3}}, got {tuple(x.shape)}"
        )
    t = torch.from_numpy(np.asarray(x)) if isinstance(x, np.ndarray) else x
    return t.permute(0, 3, 1, 2).contiguous()


def reduce_bits(x: torch.Tensor, n_bits: int) -> torch.Tensor:
    r"""8-bit levels -> $n$-bit levels $\lfloor x / 2^{8-n} \rfloor = x \gg (8-n)$ (uint8)."""
    _check_uint8(x, "reduce_bits")
    _check_n_bits(n_bits)
    return x >> (8 - n_bits)


def dequantize(
    x: torch.Tensor,
    n_bits: int = 8,
    noise: str = "uniform",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""uint8 images -> float32 $\tilde x = (\lfloor x / 2^{8-n} \rfloor + u)/2^n - \tfrac12$.

    The result lies in $[-\tfrac12, \tfrac12)$ and has the shape of ``x`` (any layout).

    ``noise="uniform"`` (training) draws $u$ uniformly for every pixel; ``noise="center"``
    (evaluation) uses $u = \tfrac12$, the centre of each bin.

    The uniform $u$ is drawn on the grid $\{k / 2^{24-n}\}_{k < 2^{24-n}}$, the finest grid
    on which every $\tilde x$ is a float32 number exactly. Drawing $u$ as a float32 in
    $[0, 1)$ instead would let $x_n + u$ round up to $x_n + 1$, so that $\tilde x$ could
    reach $\tfrac12$ and land in the next bin. On this grid $\tilde x < \tfrac12$ and
    $\lfloor 2^n(\tilde x + \tfrac12) \rfloor = x_n$ hold exactly.
    """
    _check_uint8(x, "dequantize")
    _check_n_bits(n_bits)
    fine = _FLOAT32_BITS - n_bits  # bits of u below the n-bit level
    level = reduce_bits(x, n_bits).to(torch.int32) << fine
    if noise == "uniform":
        u = torch.randint(0, 1 << fine, x.shape, generator=generator, dtype=torch.int32,
                          device=x.device)
    elif noise == "center":
        u = torch.full_like(level, 1 << (fine - 1))
    else:
        raise ValueError(f"noise must be 'uniform' or 'center', got {noise!r}")
    return (level + u).to(torch.float32) / float(1 << _FLOAT32_BITS) - 0.5


def _check_images(x: np.ndarray, shape: tuple[int, int, int], what: str) -> None:
    _check_uint8(x, what)
    if x.ndim != 4 or x.shape[1:] != shape:
        raise ValueError(f"{what}: expected shape (N, {', '.join(map(str, shape))}), got {x.shape}")


def grey28_to_rgb32(x: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28, 1) -> (N, 32, 32, 3): zero-pad 2 px on each side, repeat the channel."""
    _check_images(x, (28, 28, 1), "grey28_to_rgb32")
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    return np.repeat(padded, 3, axis=3)


def luma(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB ``(..., 3)``, channels last -> uint8 ``(...)``: BT.601 luma rounded half up,
    computed in integers, Y = floor((299 R + 587 G + 114 B + 500) / 1000), so a grey pixel
    (R = G = B = v) maps to exactly v. The book's one colour -> grey rule."""
    x = np.asarray(rgb).astype(np.int32)
    # Y = 0.299 R + 0.587 G + 0.114 B, rounded
    return ((299 * x[..., 0] + 587 * x[..., 1] + 114 * x[..., 2] + 500) // 1000).astype(np.uint8)


def grey(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB ``[N, 3, H, W]`` -> BT.601 luma $Y = 0.299 R + 0.587 G + 0.114 B$
    (:func:`luma`), replicated to three channels (uint8, same shape)."""
    _check_uint8(images, "grey")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"grey expects RGB images [N, 3, H, W], got {list(images.shape)}")
    y = torch.from_numpy(luma(images.permute(0, 2, 3, 1).numpy()))  # [N, H, W]
    return y[:, None].expand_as(images).contiguous()


def rgb32_to_grey28(x: np.ndarray) -> np.ndarray:
    """uint8 (N, 32, 32, 3) -> (N, 28, 28, 1): :func:`luma` of the centre 28x28 crop, so that
    ``rgb32_to_grey28(grey28_to_rgb32(x)) == x``."""
    _check_images(x, (32, 32, 3), "rgb32_to_grey28")
    return luma(x[:, 2:30, 2:30, :])[..., None]


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image shape must be (H, W, C) with positive sizes, got {shape}")
    return shape


def constant_images(
    n: int, shape: Sequence[int], values: int | Sequence[int] | np.ndarray
) -> np.ndarray:
    """Synthetic control: ``n`` uint8 images of ``shape`` (H, W, C), each one constant.

    ``values`` is one level for every image (scalar), one level per image (shape (n,), used
    for every channel) or one colour per image (shape (n, C) or (1, C)). Levels are integers in
    0..255.
    """
    h, w, c = _check_shape(shape)
    v = np.asarray(values)
    if v.dtype.kind not in "iu" or (v.size and (v.min() < 0 or v.max() > 255)):
        raise ValueError(f"constant_images: values must be integers in 0..255, got {values!r}")
    if v.ndim == 1:
        v = v[:, None]  # one level per image, every channel
    try:
        per_image = np.broadcast_to(v, (n, c))
    except ValueError as exc:
        raise ValueError(
            f"constant_images: values of shape {np.shape(values)} fit neither (), ({n},) nor "
            f"({n}, {c})"
        ) from exc
    return np.ascontiguousarray(
        np.broadcast_to(per_image[:, None, None, :], (n, h, w, c)).astype(np.uint8)
    )


def uniform_noise_images(n: int, shape: Sequence[int], seed: int) -> np.ndarray:
    """Synthetic control: ``n`` uint8 images of ``shape`` (H, W, C), each level i.i.d. U{0..255}."""
    h, w, c = _check_shape(shape)
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


def corrupt(x: torch.Tensor, mu: float, generator: torch.Generator) -> torch.Tensor:
    r"""uint8 images (any shape) with each subpixel replaced, independently with probability
    ``mu``, by a level drawn from U{0..255}: $x'_i = u_i$ if $b_i = 1$ else $x_i$, with
    $b_i \sim \text{Bernoulli}(\mu)$, $u_i \sim U\{0, \dots, 255\}$ (drawn from ``generator``)."""
    _check_uint8(x, "corrupt")
    if not 0.0 <= mu <= 1.0:
        raise ValueError(f"corrupt: mu must be in [0, 1], got {mu}")
    replace = torch.rand(x.shape, generator=generator) < mu
    noise = torch.randint(0, 256, x.shape, generator=generator, dtype=torch.uint8)
    return torch.where(replace, noise, x)


def quantize(x: torch.Tensor, n_bits: int = 8) -> np.ndarray:
    r"""Model space -> displayable images: float $\tilde x \in [-\tfrac12, \tfrac12)$ ``[N, C, H, W]``
    -> uint8 ``(N, H, W, C)`` with levels $\lfloor 2^n(\tilde x + \tfrac12) \rfloor \cdot 2^{8-n}$,
    clipped to the valid range (samples from a model can fall outside it).
    The inverse of :func:`dequantize` up to the noise."""
    _check_n_bits(n_bits)
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"quantize expects float images [N, C, H, W], got {x.dtype} {list(x.shape)}")
    levels = torch.floor((x.detach().float().cpu() + 0.5) * (1 << n_bits)).clamp(0, (1 << n_bits) - 1)
    return (levels.to(torch.uint8) << (8 - n_bits)).permute(0, 2, 3, 1).contiguous().numpy()
