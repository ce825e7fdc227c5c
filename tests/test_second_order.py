"""Tests of ood_lib.analysis.second_order: the expansion is exact where log p is quadratic, the
HVP Hessian is autograd's, and the constant-volume closed form is the HVP form of its model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from ood_lib import data, registry
from ood_lib.analysis import second_order as so
from ood_lib.analysis.second_order import (
    Derivatives,
    Moments,
    closed_forms,
    contrast,
    derivatives,
    expand,
    gap,
    grey,
    input_units,
    log_density,
    mixing_matrix,
    moments,
    squeezed,
)
from ood_lib.models.glow import ActNorm, Glow, GlowConfig, InvConv1x1, squeeze
from ood_lib.transforms import dequantize
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


class PixelLinear(nn.Module):
    """The idealised constant-volume Glow: an optional squeeze, then z_hw = M x_hw at every
    pixel with M = W_K ... W_1, then N(0, sigma^2 I)."""

    likelihood = "continuous"

    def __init__(self, weights: list[Tensor], sigma: float, shape: tuple[int, int, int],
                 squeeze_first: bool = False) -> None:
        super().__init__()
        self.m = nn.Parameter(mixing_matrix(weights))
        self.sigma, self.input_shape, self.squeeze_first = sigma, shape, squeeze_first

    def log_prob_parts(self, x: Tensor) -> dict[str, Tensor]:
        if self.squeeze_first:
            x = squeeze(x)
        z = torch.einsum("ij,bjhw->bihw", self.m, x)
        log_n = -0.5 * (z / self.sigma) ** 2 - math.log(self.sigma) - 0.5 * LOG_2PI
        n_pixels = x.shape[2] * x.shape[3]
        return {"log_px": log_n.flatten(1).sum(1) + n_pixels * torch.linalg.slogdet(self.m)[1]}


class Discrete(nn.Module):
    likelihood = "discrete"
    input_shape = (1, 2, 2)


def _diagonal_moments(x0: Tensor, var_map: Tensor) -> Moments:
    """Moments with mean x0 (equal means) and diagonal covariance given by a [C, H, W] map."""
    return Moments(mean=x0.clone(), cov=torch.diag(var_map.flatten()), n=1,
                   shape=tuple(var_map.shape))


def _predicted_gap(model: nn.Module, x0: Tensor, var_q: Tensor, var_p: Tensor) -> dict:
    d = derivatives(log_density(model), x0, chunk=5)
    return gap(expand(d, x0, _diagonal_moments(x0, var_q)),
               expand(d, x0, _diagonal_moments(x0, var_p)))


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


# --------------------------------------------------------------------------- closed forms


def _variance_maps(shape: tuple[int, int, int], seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return tuple(0.01 + 0.05 * torch.rand(shape, generator=g, dtype=F64) for _ in range(2))


def test_closed_form_equals_hvp_form_for_per_pixel_linear_model() -> None:
    g = torch.Generator().manual_seed(3)
    shape, sigma = (3, 2, 2), 0.7
    var_q, var_p = _variance_maps(shape, 4)
    x0 = 0.1 * torch.randn(12, generator=g, dtype=F64)
    general = [torch.randn(3, 3, generator=g, dtype=F64) for _ in range(3)]
    hvp = _predicted_gap(PixelLinear(general, sigma, shape), x0, var_q, var_p)
    forms = closed_forms(general, var_q, var_p, sigma)
    assert forms["exact"] == pytest.approx(hvp["covariance_diagonal"], rel=1e-10)
    assert forms["exact"] == pytest.approx(hvp["covariance"], rel=1e-10)  # diagonal covariances
    assert forms["paper"] != pytest.approx(forms["exact"], rel=1e-2)  # alpha_c^2 != ||M[:,c]||^2

    perms = [torch.eye(3, dtype=F64)[torch.randperm(3, generator=g)] for _ in range(3)]
    perms[1] = -perms[1]  # a signed permutation: row sums -1, alpha_c^2 still 1
    hvp = _predicted_gap(PixelLinear(perms, sigma, shape), x0, var_q, var_p)
    forms = closed_forms(perms, var_q, var_p, sigma)
    assert forms["paper"] == pytest.approx(forms["exact"], rel=1e-12)
    assert forms["exact"] == pytest.approx(hvp["covariance_diagonal"], rel=1e-10)


def test_closed_form_on_squeezed_maps_is_the_hvp_form_of_a_level_one_glow() -> None:
    """A one-level constant-volume Glow with identity actnorm and couplings is exactly the
    idealised model on squeezed channels: the closed form with its invconv_weights() and
    squeezed() variance maps is its HVP form (this pins the matrix order and channel layout)."""
    torch.manual_seed(0)
    sigma = 0.8
    cfg = GlowConfig(in_channels=1, image_size=4, levels=1, steps=3, hidden=8, additive=True)
    model = Glow(cfg)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ActNorm):
                m.initialized.fill_(True)  # bias 0, logs 0: the identity
            if isinstance(m, InvConv1x1):  # move off a rotation, so ||M[:, c]||^2 != 1
                perturb(m, seed=5)
        model.double()  # float64 weights and log sigma, as the float64 copy computes them
        model.top_log_std.fill_(math.log(sigma))
    var_q, var_p = _variance_maps((1, 4, 4), 6)
    x0 = torch.rand(16, generator=torch.Generator().manual_seed(7), dtype=F64) - 0.5
    hvp = _predicted_gap(model, x0, var_q, var_p)
    forms = closed_forms(model.invconv_weights(), squeezed(var_q), squeezed(var_p), sigma)
    assert forms["exact"] == pytest.approx(hvp["covariance_diagonal"], rel=1e-10)
    assert forms["paper"] != pytest.approx(forms["exact"], rel=1e-2)
    # the same through the test's own model of it
    hvp_ideal = _predicted_gap(
        PixelLinear(model.invconv_weights(), sigma, (1, 4, 4), squeeze_first=True),
        x0, var_q, var_p)
    assert hvp_ideal["covariance"] == pytest.approx(hvp["covariance"], rel=1e-10)


# --------------------------------------------------------------------------- maps and images


def test_squeezed_matches_glow_squeeze_element_by_element() -> None:
    x = torch.randn(3, 4, 6)
    out = squeezed(x)
    assert out.shape == (12, 2, 3)
    for c in range(3):
        for i in range(2):
            for j in range(2):
                for h in range(2):
                    for w in range(3):
                        assert out[4 * c + 2 * i + j, h, w] == x[c, 2 * h + i, 2 * w + j]
    torch.testing.assert_close(out, squeeze(x[None])[0], rtol=0, atol=0)


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


def test_path_integral_of_a_quadratic_plus_cubic_is_exact_term_by_term() -> None:
    """log p(u) = a.u + 1/2 u'Au + c sum u^3: the integrand along the path is a polynomial of
    degree 2 in t, so Gauss-Legendre is exact; the first- and second-order terms are those of
    the Taylor expansion at x0, and the remainder is exactly the cubic term c sum Delta^3."""
    g = torch.Generator().manual_seed(0)
    d = 6
    a = torch.randn(d, generator=g, dtype=torch.float64)
    m = torch.randn(d, d, generator=g, dtype=torch.float64)
    big_a, c = -(m @ m.T) - torch.eye(d, dtype=torch.float64), 0.3

    def f(u: torch.Tensor) -> torch.Tensor:
        return u @ a + 0.5 * ((u @ big_a) * u).sum(1) + c * (u**3).sum(1)

    x0 = torch.randn(d, generator=g, dtype=torch.float64)
    x = torch.randn(5, d, generator=g, dtype=torch.float64)
    acc = so.path_integral(f, x0, x, nodes=2)
    delta = x - x0
    torch.testing.assert_close(acc.integral, acc.measured, rtol=0, atol=1e-12)
    assert float(acc.error.max()) < 1e-12
    g0 = a + big_a @ x0 + 3 * c * x0**2
    h0 = big_a + torch.diag(6 * c * x0)
    torch.testing.assert_close(acc.first_order, delta @ g0, rtol=0, atol=1e-12)
    torch.testing.assert_close(acc.second_order, 0.5 * ((delta @ h0) * delta).sum(1), rtol=0,
                               atol=1e-12)
    torch.testing.assert_close(acc.remainder, c * (delta**3).sum(1), rtol=0, atol=1e-10)


@pytest.mark.slow
def test_path_integral_reproduces_a_shipped_glow_to_its_stated_error(data_root) -> None:
    """From gradients alone, the path integral gives log p(x) - log p(x0) of a shipped Glow
    (notMNIST) to within a small multiple of its own error estimate."""
    trained = registry.get("glow", "notmnist", "cpu", data_root=data_root, allow_training=False)
    f = so.log_density(trained.model)
    images = so.input_units(data.load("notmnist", "test", data_root).tensor()[:4])
    x0 = so.input_units(data.load("notmnist", "train", data_root).tensor()[:500]).mean(0)
    acc = so.path_integral(f, x0, images, nodes=8)
    gap = (acc.integral - acc.measured).abs()
    assert bool((gap <= 10 * acc.error + 1e-6 * acc.measured.abs()).all()), (gap, acc.error)
    assert float(acc.measured.abs().min()) > 1.0  # a real difference, not a vacuous one
