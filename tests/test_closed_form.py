"""Tests of ood_lib.analysis.closed_form: on linear flows with actnorm and generic 1x1 weights
(no signed permutations: every form is exact for those, so a test on them proves nothing), the
exact within-pixel and all-levels forms equal 1/2 Tr{H Delta} from Hessian-vector products;
the paper's two readings are reported against it and agree only for signed permutations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from ood_lib.analysis import closed_form as cf
from ood_lib.analysis.second_order import derivatives, log_density
from ood_lib.models.glow import ActNorm, Glow, GlowConfig, InvConv1x1, squeeze
from tests.conftest import perturb

F64 = torch.float64


def linear_glow(levels: int, sigma: float, seed: int = 0) -> Glow:
    """A constant-volume Glow whose couplings and priors are still at their initial values
    (additive couplings = identity, split priors = N(0, I)), with random actnorm scales and
    biases and generic 1x1 matrices, in float64 and with top prior N(0, sigma^2): exactly the
    idealised linear model of ood_lib.analysis.closed_form."""
    torch.manual_seed(seed)
    model = Glow(GlowConfig(in_channels=3, image_size=4, levels=levels, steps=2, hidden=8,
                            additive=True))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ActNorm):
                m.initialized.fill_(True)
                m.logs.copy_(0.5 * torch.randn(m.logs.shape, generator=g))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
            if isinstance(m, InvConv1x1):
                perturb(m, seed=seed + 2)
        model.double()
        model.top_log_std.fill_(math.log(sigma))
    return model


def covariance_difference(d: int, seed: int) -> Tensor:
    """Sigma_q - Sigma_p, two random full covariances: cross-pixel and cross-channel entries."""
    g = torch.Generator().manual_seed(seed)
    a, b = (torch.randn(d, 2 * d, generator=g, dtype=F64) / d for _ in range(2))
    return a @ a.T - b @ b.T


def hvp_trace(model: Glow, delta: Tensor) -> float:
    """1/2 Tr{H Delta} with H built from Hessian-vector products at a random point (H is
    constant for a linear flow)."""
    x0 = 0.2 * torch.randn(delta.shape[0], generator=torch.Generator().manual_seed(9), dtype=F64)
    h = derivatives(log_density(model), x0, chunk=16).hessian
    return float(0.5 * (h * delta).sum())


def test_within_pixel_form_is_the_hvp_trace_of_a_one_level_linear_flow() -> None:
    sigma = 0.7
    model = linear_glow(levels=1, sigma=sigma)
    shape = model.input_shape
    delta = covariance_difference(48, seed=3)
    exact = hvp_trace(model, delta)
    form = cf.within_pixel_form(cf.pixel_matrix(model), delta, shape, sigma)
    assert form == pytest.approx(exact, rel=1e-10, abs=1e-10)
    # without actnorm the matrix is another one, and the form is wrong
    no_actnorm = cf.within_pixel_form(cf.pixel_matrix(model, actnorm=False), delta, shape, sigma)
    assert no_actnorm != pytest.approx(exact, rel=1e-3)


def test_all_levels_form_is_the_hvp_trace_of_a_two_level_linear_flow() -> None:
    model = linear_glow(levels=2, sigma=1.0, seed=4)
    delta = covariance_difference(48, seed=5)
    exact = hvp_trace(model, delta)
    form = cf.all_levels_form(cf.linear_flow_matrix(model), delta)
    assert form == pytest.approx(exact, rel=1e-10, abs=1e-10)
    # level 1 alone misses the second level's mixing
    level_one = cf.within_pixel_form(cf.pixel_matrix(model), delta, model.input_shape)
    assert level_one != pytest.approx(exact, rel=1e-3)


def test_linear_flow_matrix_reproduces_the_latents_of_a_linear_flow() -> None:
    model = linear_glow(levels=2, sigma=1.0, seed=6)
    x = torch.randn(3, *model.input_shape, dtype=F64)
    l_matrix = cf.linear_flow_matrix(model)
    zeros = torch.zeros(1, *model.input_shape, dtype=F64)
    with torch.no_grad():
        z = torch.cat([t.flatten(1) for t in model(x).zs], 1)
        z0 = torch.cat([t.flatten(1) for t in model(zeros).zs], 1)
    torch.testing.assert_close(z - z0, x.flatten(1) @ l_matrix.T, rtol=1e-12, atol=1e-12)


def test_readings_report_their_error_and_are_exact_for_signed_permutations() -> None:
    """Per-pixel variances only (diagonal Delta): the diagonal form is the HVP trace of the
    idealised level-1 model without actnorm; the row and column readings differ from it for
    generic matrices (their errors are printed) and equal it for signed permutations."""
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(4, 4, generator=g, dtype=F64) for _ in range(3)]
    var_q, var_p = (torch.rand(4, 2, 2, generator=g, dtype=F64) for _ in range(2))
    forms = cf.diagonal_forms(weights, var_q, var_p, sigma=0.5)
    m = torch.linalg.multi_dot(weights[::-1])
    # 1/2 Tr{H Delta} with H = -blockdiag(M^T M) / sigma^2, Delta diagonal
    direct = float(-0.5 / 0.25 * ((m.T @ m).diagonal()[:, None, None] * (var_q - var_p)).sum())
    assert forms["diagonal"] == pytest.approx(direct, rel=1e-12)
    for reading in ("row", "column"):
        error = forms[reading] / forms["diagonal"] - 1
        print(f"{reading} reading: relative error {error:+.3f}")
        assert abs(error) > 1e-2
    perms = [torch.eye(4, dtype=F64)[torch.randperm(4, generator=g)] for _ in range(3)]
    perms[1] = -perms[1]
    forms = cf.diagonal_forms(perms, var_q, var_p)
    assert forms["row"] == pytest.approx(forms["diagonal"], rel=1e-12)
    assert forms["column"] == pytest.approx(forms["diagonal"], rel=1e-12)


def test_row_and_column_readings_are_transposes() -> None:
    g = torch.Generator().manual_seed(1)
    weights = [torch.randn(3, 3, generator=g, dtype=F64) for _ in range(2)]
    r = cf.readings(weights)
    torch.testing.assert_close(r["column"], cf.readings([w.T for w in weights])["row"])


def test_level_one_layout_is_glow_squeeze() -> None:
    shape = (3, 4, 6)
    x = torch.randn(1, *shape)
    idx = cf.level_one_layout(shape)
    torch.testing.assert_close(x.flatten()[idx], squeeze(x)[0].flatten(), rtol=0, atol=0)


def test_forms_refuse_mismatched_shapes() -> None:
    model = linear_glow(levels=1, sigma=1.0)
    with pytest.raises(ValueError, match=r"\[D, D\]"):
        cf.within_pixel_form(cf.pixel_matrix(model), torch.zeros(5, 5), model.input_shape)
    with pytest.raises(ValueError, match="4C"):
        cf.within_pixel_form(torch.eye(3), torch.zeros(48, 48), model.input_shape)
    with pytest.raises(ValueError, match="channels"):
        cf.diagonal_forms([torch.eye(4)], torch.zeros(3, 2, 2), torch.zeros(3, 2, 2))
