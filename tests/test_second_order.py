"""Tests of ood_lib.analysis.second_order: the expansion is exact where log p is quadratic and
the HVP Hessian is autograd's (the closed forms: tests/test_closed_form.py; where the expansion
holds: tests/test_validity.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from ood_lib.analysis.second_order import (
    Derivatives,
    Moments,
    blend_grey,
    contrast,
    derivatives,
    expand,
    gap,
    input_units,
    log_density,
    moments,
)
from ood_lib.models.glow import Glow, GlowConfig
from ood_lib.transforms import dequantize, grey
from tests.conftest import perturb

F64 = torch.float64
LOG_2PI = math.log(2 * math.pi)


def _spd(d: int, g: torch.Generator) -> Tensor:
    """A random symmetric positive definite d x d matrix."""
    a = torch.randn(d, d, generator=g, dtype=F64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=F64)


class LinearFlow(nn.Module):
    """log p(x) = log N(A x + b; 0, I) + log|det A|: an exactly quadratic log-density."""

    likelihood = "continuous"

    def __init__(self, a: Tensor, b: Tensor, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.a, self.b, self.input_shape = nn.Parameter(a), nn.Parameter(b), shape

    def log_prob_parts(self, x: Tensor) -> dict[str, Tensor]:
        z = x.flatten(1) @ self.a.T + self.b
        d = z.shape[1]
        log_px = -0.5 * (z**2).sum(1) - 0.5 * d * LOG_2PI + torch.linalg.slogdet(self.a)[1]
        return {"log_px": log_px}


class Discrete(nn.Module):
    likelihood = "discrete"
    input_shape = (1, 2, 2)


def _diagonal_moments(x0: Tensor, var_map: Tensor) -> Moments:
    """Moments with mean x0 (equal means) and diagonal covariance given by a [C, H, W] map."""
    return Moments(mean=x0.clone(), cov=torch.diag(var_map.flatten()), n=1,
                   shape=tuple(var_map.shape))


# --------------------------------------------------------------------------- data statistics


def test_input_units_are_dequantized_bin_centres() -> None:
    x = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8)
    for n_bits in (8, 5):
        expected = dequantize(x, n_bits, noise="center").to(F64).flatten(1)
        torch.testing.assert_close(input_units(x, n_bits), expected, rtol=0, atol=0)


def test_moments_match_torch_cov_with_1_over_n() -> None:
    x = torch.randint(0, 256, (37, 2, 3, 3), dtype=torch.uint8)
    m = moments(x, chunk=10)
    u = input_units(x)
    assert (m.n, m.shape) == (37, (2, 3, 3))
    torch.testing.assert_close(m.mean, u.mean(0), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(m.cov, torch.cov(u.T, correction=0), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(m.var_map, u.var(0, correction=0).view(2, 3, 3))


# --------------------------------------------------------------------------- expansion


def test_expansion_is_exact_for_a_linear_flow() -> None:
    g = torch.Generator().manual_seed(1)
    shape = (2, 2, 2)
    d = 8
    a = torch.randn(d, d, generator=g, dtype=F64) + 2 * torch.eye(d, dtype=F64)
    b = torch.randn(d, generator=g, dtype=F64)
    model = LinearFlow(a, b, shape)
    mu_q, mu_p = (0.2 * torch.randn(d, generator=g, dtype=F64) for _ in range(2))
    cov_q, cov_p = _spd(d, g), _spd(d, g)
    x0 = 0.1 * torch.randn(d, generator=g, dtype=F64)

    def exact(mu: Tensor, cov: Tensor) -> float:
        # E_q[log N(Ax+b; 0, I)] = -D/2 log 2pi - 1/2 (||A mu + b||^2 + Tr(A Sigma A^T))
        e = -0.5 * d * LOG_2PI - 0.5 * ((a @ mu + b).square().sum() + torch.trace(a @ cov @ a.T))
        return float(e + torch.linalg.slogdet(a)[1])

    deriv = derivatives(log_density(model), x0, chunk=3)
    q = expand(deriv, x0, Moments(mu_q, cov_q, n=1, shape=shape))
    p = expand(deriv, x0, Moments(mu_p, cov_p, n=1, shape=shape))
    assert q.total == pytest.approx(exact(mu_q, cov_q), rel=1e-12)
    assert p.total == pytest.approx(exact(mu_p, cov_p), rel=1e-12)
    terms = gap(q, p)
    assert terms["total"] == pytest.approx(exact(mu_q, cov_q) - exact(mu_p, cov_p), rel=1e-10)
    # the terms the paper assumes away are not zero here, so its term alone is not the gap
    assert abs(terms["first_order"]) > 1e-3 and abs(terms["mean_shift"]) > 1e-3
    assert terms["paper"] == terms["covariance"] != pytest.approx(terms["total"], rel=1e-3)
    # H = -A^T A exactly
    torch.testing.assert_close(deriv.hessian, -a.T @ a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("additive", [False, True])
def test_float32_hessian_agrees_with_float64_and_comes_back_float64(additive: bool) -> None:
    torch.manual_seed(0)
    cfg = GlowConfig(in_channels=1, image_size=4, levels=2, steps=2, hidden=8, additive=additive)
    model = perturb(Glow(cfg))
    x0 = torch.rand(16, generator=torch.Generator().manual_seed(2), dtype=F64) - 0.5
    d64 = derivatives(log_density(model), x0, chunk=5)
    d32 = derivatives(log_density(model, dtype=torch.float32), x0, chunk=5, dtype=torch.float32)
    assert d32.hessian.dtype == d32.grad.dtype == F64
    scale = d64.hessian.abs().max()
    assert (d32.hessian - d64.hessian).abs().max() < 1e-4 * scale
    assert (d32.hessian - d64.hessian).abs().max() > 0  # really computed in float32
    torch.testing.assert_close(d32.grad, d64.grad, rtol=1e-4, atol=1e-4 * d64.grad.abs().max())


def test_gap_refuses_expansions_around_different_points() -> None:
    model = LinearFlow(torch.eye(4, dtype=F64), torch.zeros(4, dtype=F64), (1, 2, 2))
    m = Moments(torch.zeros(4, dtype=F64), torch.eye(4, dtype=F64), n=1, shape=(1, 2, 2))
    f = log_density(model)
    x0, x1 = torch.zeros(4, dtype=F64), torch.ones(4, dtype=F64)
    with pytest.raises(ValueError):
        gap(expand(derivatives(f, x0), x0, m), expand(derivatives(f, x1), x1, m))


@pytest.mark.parametrize("additive", [False, True])
def test_hvp_hessian_of_tiny_glow_matches_autograd(additive: bool) -> None:
    torch.manual_seed(0)
    cfg = GlowConfig(in_channels=1, image_size=4, levels=2, steps=2, hidden=8, additive=additive)
    model = perturb(Glow(cfg))
    f = log_density(model)
    x0 = torch.rand(16, generator=torch.Generator().manual_seed(2), dtype=F64) - 0.5
    d = derivatives(f, x0, chunk=5)

    def f1(x: Tensor) -> Tensor:
        return f(x[None])[0]

    expected = torch.autograd.functional.hessian(f1, x0)
    assert d.n_hvp == 16 and d.hessian.shape == (16, 16) and d.seconds > 0
    assert expected.abs().max() > 1e-2  # not a trivial Hessian
    torch.testing.assert_close(d.hessian, expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(d.hessian, d.hessian.T, rtol=0, atol=0)
    x = x0.clone().requires_grad_(True)
    torch.testing.assert_close(d.grad, torch.autograd.grad(f1(x), x)[0], rtol=1e-10, atol=1e-10)
    assert d.log_p_x0 == pytest.approx(float(f1(x0)), rel=1e-12)


# --------------------------------------------------------------------------- maps and images


def test_contrast() -> None:
    x = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8)
    mean = x.double().mean(0)
    assert torch.equal(contrast(x, 1.0, mean), x)
    flat = contrast(x, 0.0, mean)
    assert flat.dtype == torch.uint8
    assert torch.equal(flat, mean.round().to(torch.uint8).expand_as(x))
    for a in (0.5, 3.0, -1.0):
        y = contrast(x, a, mean)
        assert y.dtype == torch.uint8 and y.shape == x.shape
        expected = (mean + a * (x.double() - mean)).round().clamp(0, 255)
        torch.testing.assert_close(y.double(), expected, rtol=0, atol=0)
    assert contrast(x, 3.0, mean).max() == 255 and contrast(x, 3.0, mean).min() == 0
    # lower contrast, lower variance
    assert contrast(x, 0.5, mean).double().var(0).sum() < x.double().var(0).sum()


def test_blend_grey_runs_from_the_images_to_their_grey_version() -> None:
    x = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    assert torch.equal(blend_grey(x, 0.0), x)
    assert torch.equal(blend_grey(x, 1.0), grey(x))
    half = blend_grey(x, 0.5)
    expected = (0.5 * x.double() + 0.5 * grey(x).double()).round()
    torch.testing.assert_close(half.double(), expected, rtol=0, atol=0)
    # the channels draw together: less variance across channels within each pixel
    assert half.double().var(1).sum() < x.double().var(1).sum()
    with pytest.raises(ValueError, match="t must be"):
        blend_grey(x, 1.5)


def test_grey() -> None:
    x = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    y = grey(x)
    assert y.dtype == torch.uint8 and y.shape == x.shape
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 0], y[:, 2])
    r, g, b = x.double().unbind(1)
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    assert (y[:, 0].double() - luma).abs().max() <= 0.5 + 1e-9
    assert torch.equal(y[:, 0], torch.floor(luma + 0.5 + 1e-9).to(torch.uint8))
    same = x[:, :1].expand_as(x)  # grey images stay themselves
    assert torch.equal(grey(same), same)


# --------------------------------------------------------------------------- guards


def test_log_density_needs_a_continuous_model() -> None:
    with pytest.raises(ValueError):
        log_density(Discrete())


def test_derivatives_leave_the_callers_model_unchanged() -> None:
    torch.manual_seed(0)
    model = perturb(Glow(GlowConfig(in_channels=1, image_size=4, levels=2, steps=1, hidden=8)))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    d = derivatives(log_density(model), torch.zeros(16, dtype=F64), chunk=8)
    assert isinstance(d, Derivatives) and d.hessian.dtype == F64
    after = model.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
    assert next(model.parameters()).dtype == torch.float32
    assert all(p.requires_grad for p in model.parameters()) and model.training
