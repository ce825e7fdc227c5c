"""Tests of ood_lib.analysis.validity on a log-density that is an exact quadratic plus a known
cubic (every quantity has a closed form), and of the path integral on a shipped Glow."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from ood_lib.analysis import second_order, validity
from ood_lib.analysis.second_order import derivatives, input_units, log_density
from ood_lib.data import store
from ood_lib.zoo import registry

F64 = torch.float64
D = 6


class QuadraticPlusCubic:
    """log p(u) = a.u + 1/2 u'Au + c sum u^3 (rows of u scored independently)."""

    def __init__(self, seed: int = 0, c: float = 0.3) -> None:
        g = torch.Generator().manual_seed(seed)
        self.a = torch.randn(D, generator=g, dtype=F64)
        m = torch.randn(D, D, generator=g, dtype=F64)
        self.big_a = -(m @ m.T) - torch.eye(D, dtype=F64)
        self.c = c

    def __call__(self, u: Tensor) -> Tensor:
        return u @ self.a + 0.5 * ((u @ self.big_a) * u).sum(1) + self.c * (u**3).sum(1)

    def grad(self, x0: Tensor) -> Tensor:
        return self.a + self.big_a @ x0 + 3 * self.c * x0**2

    def hessian(self, x0: Tensor) -> Tensor:
        return self.big_a + torch.diag(6 * self.c * x0)


def _points(n: int, seed: int) -> Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=F64)


def test_shrink_sweep_remainder_and_relative_error_match_their_closed_forms() -> None:
    f = QuadraticPlusCubic()
    x0, x = _points(1, 1)[0], _points(7, 2)
    scales = [0.01, 0.03, 0.1, 0.3, 1.0]
    sweep = validity.shrink_sweep(f, x0, f.grad(x0), f.hessian(x0), x, scales)
    delta = x - x0
    # R(s) = s^3 c mean sum Delta^3, exactly (the cubic's Taylor series stops at order 3)
    cubic = float(f.c * (delta**3).sum(1).mean())
    torch.testing.assert_close(torch.tensor(sweep["remainder"].to_numpy()),
                               torch.tensor([s**3 * cubic for s in scales], dtype=F64),
                               rtol=1e-8, atol=1e-12)
    first = float((delta @ f.grad(x0)).mean())
    second = float(0.5 * ((delta @ f.hessian(x0)) * delta).sum(1).mean())
    expected = [abs(s**3 * cubic) / abs(s * first + s**2 * second + s**3 * cubic) for s in scales]
    assert sweep["relative_error"].to_list() == pytest.approx(expected, rel=1e-6)
    # at least O(s): the relative error over s stays bounded as s -> 0
    ratio = sweep["relative_error"] / sweep["s"]
    assert ratio.iloc[0] <= 2 * ratio.iloc[1]
    c3, s_star = validity.cubic_crossover(sweep, covariance=2.0)
    assert c3 == pytest.approx(cubic, rel=1e-6)
    assert s_star == pytest.approx(abs(2.0 / cubic), rel=1e-6)


def test_covariance_term_at_any_point_is_the_hessian_trace() -> None:
    f = QuadraticPlusCubic(seed=3)
    y = _points(1, 4)[0]
    q, p = _points(9, 5), 0.5 * _points(11, 6)
    sigma_q = torch.cov(q.T, correction=0)
    sigma_p = torch.cov(p.T, correction=0)
    expected = float(0.5 * (f.hessian(y) * (sigma_q - sigma_p)).sum())
    assert validity.covariance_term_at(f, y, q, p, chunk=4) == pytest.approx(expected, rel=1e-10)


def test_krylov_ritz_values_find_both_ends_of_the_spectrum() -> None:
    g = torch.Generator().manual_seed(0)
    m = torch.randn(60, 60, generator=g, dtype=F64)
    sym = m + m.T
    eig = torch.linalg.eigvalsh(sym)
    ritz = validity.krylov_ritz_values(lambda v: v @ sym, 60, block=12, depth=5)
    torch.testing.assert_close(ritz, eig, rtol=1e-8, atol=1e-8)  # the whole space: exact
    # a Hessian-like spectrum: a bulk near 0 with outliers at both ends, in a random basis
    lam = torch.cat([torch.tensor([-50.0, -30.0], dtype=F64),
                     torch.linspace(-5, 1, 56, dtype=F64), torch.tensor([3.0, 8.0], dtype=F64)])
    q = torch.linalg.qr(torch.randn(60, 60, generator=g, dtype=F64)).Q
    sym = q @ torch.diag(lam) @ q.T
    ritz = validity.krylov_ritz_values(lambda v: v @ sym, 60, block=4, depth=4)
    assert float(ritz[0]) == pytest.approx(-50.0, rel=1e-6)
    assert float(ritz[-1]) == pytest.approx(8.0, rel=1e-3)
    assert -50.0 <= float(ritz[0]) and float(ritz[-1]) <= 8.0  # Ritz values interlace
    with pytest.raises(ValueError, match="block"):
        validity.krylov_ritz_values(lambda v: v, 4, block=3, depth=2)


def test_hessian_products_match_the_hessian() -> None:
    f = QuadraticPlusCubic(seed=7)
    y, v = _points(1, 8)[0], _points(3, 9)
    torch.testing.assert_close(second_order.hessian_products(f, y, chunk=2)(v), v @ f.hessian(y))


def test_path_integral_of_a_quadratic_plus_cubic_is_exact_term_by_term() -> None:
    """The integrand along the path is a polynomial of degree 2 in t, so Gauss-Legendre is
    exact; the first- and second-order terms are those of the Taylor expansion at x0, and the
    remainder is exactly the cubic term c sum Delta^3."""
    f = QuadraticPlusCubic()
    x0, x = _points(1, 10)[0], _points(5, 11)
    acc = validity.path_integral(f, x0, x, nodes=2)
    delta = x - x0
    torch.testing.assert_close(acc.integral, acc.measured, rtol=0, atol=1e-12)
    assert float(acc.error.max()) < 1e-12
    torch.testing.assert_close(acc.first_order, delta @ f.grad(x0), rtol=0, atol=1e-12)
    torch.testing.assert_close(acc.second_order,
                               0.5 * ((delta @ f.hessian(x0)) * delta).sum(1), rtol=0, atol=1e-12)
    torch.testing.assert_close(acc.remainder, f.c * (delta**3).sum(1), rtol=0, atol=1e-10)
    other = validity.path_integral(f, x0, 0.5 * x, nodes=2)
    account = validity.gap_account(acc, other)
    parts = account["first_order"] + account["second_order"] + account["remainder"]
    assert parts == pytest.approx(account["integral"], rel=1e-12)
    assert account["measured"] == pytest.approx(account["integral"], rel=1e-10)


def test_rows_must_match_x0() -> None:
    f = QuadraticPlusCubic()
    with pytest.raises(ValueError, match="dimensions"):
        validity.path_integral(f, torch.zeros(D), torch.zeros(2, D + 1))


@pytest.mark.slow
def test_path_integral_reproduces_a_shipped_glow_to_its_stated_error(data_root) -> None:
    """From gradients alone, the path integral gives log p(x) - log p(x0) of a shipped Glow
    (notMNIST) to within a small multiple of its own error estimate."""
    trained = registry.get("glow", "notmnist", "cpu", data_root=data_root, allow_training=False)
    f = log_density(trained.model)
    images = input_units(store.load("notmnist", "test", data_root).tensor()[:4])
    x0 = input_units(store.load("notmnist", "train", data_root).tensor()[:500]).mean(0)
    acc = validity.path_integral(f, x0, images, nodes=8)
    gap = (acc.integral - acc.measured).abs()
    assert bool((gap <= 10 * acc.error + 1e-6 * acc.measured.abs()).all()), (gap, acc.error)
    assert float(acc.measured.abs().min()) > 1.0  # a real difference, not a vacuous one
    # and the shrinking sweep of the same images: the relative error falls with s
    d = derivatives(f, x0, chunk=64)
    sweep = validity.shrink_sweep(f, x0, d.grad, d.hessian, images, [0.01, 0.1, 1.0])
    assert sweep["relative_error"].iloc[0] < sweep["relative_error"].iloc[1]
