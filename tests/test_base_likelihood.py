"""Bits/dim against closed forms, at 8 bits and at reduced bit depth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ood_lib.models.base import bits_per_dim, copy_as, evaluate
from ood_lib.models.glow import Glow, GlowConfig


def test_uniform_density_on_the_cube_gives_n_bits() -> None:
    # p = 1 on [-1/2, 1/2)^D: every bin has mass 2^(-nD), i.e. exactly n bits per dimension.
    assert bits_per_dim(0.0, n_dims=3072, n_bits=8) == 8.0
    assert bits_per_dim(0.0, n_dims=784, n_bits=5) == 5.0
    # doubling the density everywhere saves one bit per image, 1/D bit per dimension
    assert bits_per_dim(math.log(2.0), n_dims=4) == pytest.approx(8 - 0.25)


@pytest.mark.parametrize("n_bits", [8, 5])
def test_evaluate_matches_the_gaussian_closed_form(n_bits: int) -> None:
    """A Glow with K=0 steps scores x by N(0, I); evaluation uses the bin centres."""
    model = Glow(GlowConfig(in_channels=1, image_size=4, levels=2, steps=0))
    model.n_bits = n_bits
    x = torch.randint(0, 256, (6, 1, 4, 4), dtype=torch.uint8)
    levels = (x >> (8 - n_bits)).double()
    centre = (levels + 0.5) / 2**n_bits - 0.5
    log_px = (-0.5 * math.log(2 * math.pi) - 0.5 * centre**2).flatten(1).sum(1)
    expected = -log_px / (16 * math.log(2)) + n_bits
    got = evaluate(model, x)
    np.testing.assert_allclose(got["bpd"], expected.numpy(), rtol=1e-6)
    np.testing.assert_allclose(got["log_px"], got["log_pz"] + got["log_det"])


def test_copy_as_float64_scores_like_the_model_and_leaves_it_untouched() -> None:
    model = Glow(GlowConfig(in_channels=1, image_size=8, levels=2, steps=2, hidden=8)).eval()
    x = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    with torch.no_grad():
        model.log_prob_parts(model.inputs(x))  # actnorm initialised
        model64 = copy_as(model)
        lp32 = model.log_prob_parts(model.inputs(x))["log_px"]
        lp64 = model64.log_prob_parts(model64.inputs(x).double())["log_px"]
    assert next(model.parameters()).dtype == torch.float32
    assert all(p.requires_grad for p in model.parameters())
    assert lp64.dtype == torch.float64 and not any(p.requires_grad for p in model64.parameters())
    np.testing.assert_allclose(lp64.numpy(), lp32.double().numpy(), rtol=1e-5)
