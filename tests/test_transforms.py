"""ood_lib.transforms: exact round trips, dequantization ranges, and errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ood_lib.transforms import (
    constant_images,
    corrupt,
    dequantize,
    grey28_to_rgb32,
    quantize,
    reduce_bits,
    rgb32_to_grey28,
    to_nchw,
    uniform_noise_images,
)

ALL_LEVELS = torch.arange(256, dtype=torch.uint8)


def random_images(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


# --------------------------------------------------------------------------- to_nchw


@pytest.mark.parametrize("as_tensor", [False, True])
def test_to_nchw_moves_channels_first(as_tensor: bool) -> None:
    x = random_images((4, 5, 6, 3))
    t = to_nchw(torch.from_numpy(x) if as_tensor else x)
    assert t.dtype == torch.uint8 and t.shape == (4, 3, 5, 6) and t.is_contiguous()
    assert torch.equal(t, torch.from_numpy(x).permute(0, 3, 1, 2))


def test_to_nchw_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="expected uint8"):
        to_nchw(np.zeros((2, 4, 4, 1), dtype=np.float32))
    with pytest.raises(ValueError, match=r"expected shape \(N, H, W, C\)"):
        to_nchw(np.zeros((2, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="C in"):
        to_nchw(np.zeros((2, 1, 4, 4), dtype=np.uint8))


# --------------------------------------------------------------------------- bit depth


@pytest.mark.parametrize("n_bits", range(1, 9))
def test_reduce_bits_keeps_the_top_bits(n_bits: int) -> None:
    reduced = reduce_bits(ALL_LEVELS, n_bits)
    assert reduced.dtype == torch.uint8
    assert torch.equal(reduced, ALL_LEVELS // 2 ** (8 - n_bits))
    assert int(reduced.max()) == 2**n_bits - 1
    assert torch.equal(torch.unique(reduced), torch.arange(2**n_bits, dtype=torch.uint8))


@pytest.mark.parametrize("n_bits", [0, 9, 5.0])
def test_bad_n_bits_is_rejected(n_bits: object) -> None:
    with pytest.raises(ValueError, match="n_bits must be an integer in 1..8"):
        reduce_bits(ALL_LEVELS, n_bits)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_bits must be an integer in 1..8"):
        dequantize(ALL_LEVELS, n_bits)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- dequantize


@pytest.mark.parametrize("noise", ["uniform", "center"])
@pytest.mark.parametrize("n_bits", [1, 5, 8])
def test_dequantize_range_and_inverse(n_bits: int, noise: str) -> None:
    x = ALL_LEVELS.repeat(200).reshape(100, 2, 16, 16)
    d = dequantize(x, n_bits, noise=noise, generator=torch.Generator().manual_seed(0))
    assert d.dtype == torch.float32 and d.shape == x.shape
    assert float(d.min()) >= -0.5 and float(d.max()) < 0.5
    recovered = torch.floor(2**n_bits * (d + 0.5)).to(torch.uint8)
    assert torch.equal(recovered, reduce_bits(x, n_bits))
    if n_bits == 8:  # the identity floor(256 (x~ + 1/2)) = x of the module docstring
        assert torch.equal(recovered, x)


def test_dequantize_top_bin_never_rounds_into_the_next() -> None:
    x = torch.full((1_000_000,), 255, dtype=torch.uint8)
    d = dequantize(x, 8, generator=torch.Generator().manual_seed(1))
    assert float(d.max()) < 0.5
    assert torch.all(torch.floor(256 * (d + 0.5)) == 255)


@pytest.mark.parametrize("n_bits", [3, 8])
def test_dequantize_center_is_the_bin_centre(n_bits: int) -> None:
    d = dequantize(ALL_LEVELS, n_bits, noise="center")
    levels = reduce_bits(ALL_LEVELS, n_bits).double()
    assert torch.equal(d.double(), (levels + 0.5) / 2**n_bits - 0.5)


def test_dequantize_uniform_noise_fills_each_bin() -> None:
    x = torch.full((200_000,), 100, dtype=torch.uint8)
    u = dequantize(x, 8, generator=torch.Generator().manual_seed(2)).double() * 256 + 128 - 100
    assert float(u.min()) >= 0 and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.005  # U[0,1): mean 1/2, sd 1/sqrt(12) ~ 0.289
    assert abs(float(u.std()) - 12**-0.5) < 0.005


def test_dequantize_generator_makes_it_reproducible() -> None:
    x = ALL_LEVELS.reshape(1, 1, 16, 16)
    a = dequantize(x, generator=torch.Generator().manual_seed(3))
    b = dequantize(x, generator=torch.Generator().manual_seed(3))
    c = dequantize(x, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_dequantize_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="expected uint8"):
        dequantize(torch.zeros(2, 3), 8)
    with pytest.raises(ValueError, match="noise must be 'uniform' or 'center'"):
        dequantize(ALL_LEVELS, 8, noise="gaussian")


# --------------------------------------------------------------------------- grey <-> RGB


def test_grey28_to_rgb32_pads_and_repeats() -> None:
    x = random_images((3, 28, 28, 1))
    rgb = grey28_to_rgb32(x)
    assert rgb.dtype == np.uint8 and rgb.shape == (3, 32, 32, 3)
    for c in range(3):
        assert np.array_equal(rgb[:, 2:30, 2:30, c], x[..., 0])
    border = np.ones((32, 32), dtype=bool)
    border[2:30, 2:30] = False
    assert not rgb[:, border, :].any()


def test_grey_rgb_round_trip_is_exact() -> None:
    x = random_images((50, 28, 28, 1), seed=5)
    assert np.array_equal(rgb32_to_grey28(grey28_to_rgb32(x)), x)


def test_rgb32_to_grey28_uses_bt601_luma() -> None:
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [10, 20, 30]])
    x = np.broadcast_to(colours[:, None, None, :], (5, 32, 32, 3)).astype(np.uint8)
    grey = rgb32_to_grey28(x)
    assert grey.shape == (5, 28, 28, 1) and grey.dtype == np.uint8
    expected = np.floor(colours @ np.array([0.299, 0.587, 0.114]) + 0.5)  # 76.2, 149.7, 29.1, ...
    assert np.array_equal(grey[:, 0, 0, 0], expected.astype(np.uint8))
    assert grey[:, 0, 0, 0].tolist() == [76, 150, 29, 255, 18]


def test_grey_rgb_conversions_reject_bad_input() -> None:
    with pytest.raises(ValueError, match=r"expected shape \(N, 28, 28, 1\)"):
        grey28_to_rgb32(np.zeros((2, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"expected shape \(N, 32, 32, 3\)"):
        rgb32_to_grey28(np.zeros((2, 28, 28, 1), dtype=np.uint8))
    with pytest.raises(ValueError, match="expected uint8"):
        grey28_to_rgb32(np.zeros((2, 28, 28, 1), dtype=np.float64))


# --------------------------------------------------------------------------- synthetic controls


def test_constant_images() -> None:
    one = constant_images(4, (32, 32, 3), 128)
    assert one.shape == (4, 32, 32, 3) and one.dtype == np.uint8 and (one == 128).all()
    per_image = constant_images(3, (28, 28, 1), [0, 100, 255])
    assert per_image[:, :, :, 0].reshape(3, -1).min(axis=1).tolist() == [0, 100, 255]
    assert (per_image.reshape(3, -1).min(axis=1) == per_image.reshape(3, -1).max(axis=1)).all()
    colours = constant_images(2, (4, 4, 3), [[255, 0, 0], [0, 0, 255]])
    assert colours[0, 1, 2].tolist() == [255, 0, 0] and colours[1, 3, 3].tolist() == [0, 0, 255]


@pytest.mark.parametrize("values", [256, -1, 0.5, [1, 2]])
def test_constant_images_rejects_bad_values(values: object) -> None:
    with pytest.raises(ValueError, match="constant_images"):
        constant_images(3, (4, 4, 1), values)  # type: ignore[arg-type]


def test_uniform_noise_images() -> None:
    a = uniform_noise_images(10, (32, 32, 3), seed=0)
    assert a.shape == (10, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, uniform_noise_images(10, (32, 32, 3), seed=0))
    assert not np.array_equal(a, uniform_noise_images(10, (32, 32, 3), seed=1))
    assert a.min() == 0 and a.max() == 255
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        uniform_noise_images(2, (32, 32), seed=0)


def test_quantize_inverts_dequantize_exactly() -> None:
    x = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    for noise in ("uniform", "center"):
        back = quantize(dequantize(x, noise=noise))
        np.testing.assert_array_equal(back, x.permute(0, 2, 3, 1).numpy())
    clipped = quantize(torch.tensor([-3.0, 3.0]).view(1, 2, 1, 1))
    assert clipped.ravel().tolist() == [0, 255]
    with pytest.raises(ValueError, match="float images"):
        quantize(x)


def test_corrupt_replaces_a_fraction_mu_of_subpixels_with_uniform_levels() -> None:
    x = torch.full((64, 3, 32, 32), 7, dtype=torch.uint8)
    assert torch.equal(corrupt(x, 0.0, torch.Generator().manual_seed(0)), x)
    y = corrupt(x, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(y, corrupt(x, 0.3, torch.Generator().manual_seed(0)))
    changed = (y != x).double().mean().item()
    # a replaced level equals 7 with probability 1/256: the changed share is 0.3 * 255/256
    assert abs(changed - 0.3 * 255 / 256) < 0.005
    levels = corrupt(x, 1.0, torch.Generator().manual_seed(1))
    counts = torch.bincount(levels.flatten().long(), minlength=256).double()
    assert counts.min() > 0.7 * counts.mean() and counts.max() < 1.3 * counts.mean()
    with pytest.raises(ValueError, match="mu must be in"):
        corrupt(x, 1.5, torch.Generator())
    with pytest.raises(ValueError, match="uint8"):
        corrupt(x.float(), 0.1, torch.Generator())
