"""Tests of ood_lib.analysis.explanations: the coupling's prediction is the input it maps to zero,
the per-layer errors are those of a hand-walked flow, and the reparametrized density is the
change of variables of densities known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import betaln, expit
from torch import Tensor, nn

from ood_lib import records
from ood_lib.analysis import explanations as ex
from ood_lib.metrics import auroc
from ood_lib.models.glow import Coupling, Glow, GlowConfig, squeeze
from tests.conftest import perturb

F64 = torch.float64


def _coupling(additive: bool, channels: int = 4, seed: int = 0) -> Coupling:
    torch.manual_seed(seed)
    return perturb(Coupling(channels, hidden=8, additive=additive), seed).eval()


def _glow(seed: int = 0) -> Glow:
    torch.manual_seed(seed)
    return perturb(Glow(GlowConfig(in_channels=3, image_size=8, levels=2, steps=2, hidden=8)),
                   seed).eval()


def _images(n: int, seed: int = 0, size: int = 8) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


class OneCoupling(nn.Module):
    """A flow of a single coupling layer."""

    def __init__(self, coupling: Coupling) -> None:
        super().__init__()
        self.coupling = coupling

    def forward(self, h: Tensor) -> Tensor:
        return self.coupling(h)[0]


# --------------------------------------------------------------------------- couplings


@pytest.mark.parametrize("additive", [False, True])
def test_prediction_is_the_input_the_coupling_maps_to_zero(additive: bool) -> None:
    coupling = _coupling(additive)
    h = torch.randn(3, 4, 5, 5, generator=torch.Generator().manual_seed(1))
    x_a, x_b = h.chunk(2, 1)
    with torch.no_grad():
        x_b_hat = ex.coupling_prediction(coupling, h)
        y = coupling(torch.cat([x_a, x_b_hat], 1))[0]
    assert x_b_hat.shape == x_b.shape
    assert not torch.allclose(x_b_hat, torch.zeros_like(x_b_hat))  # not vacuous
    torch.testing.assert_close(y[:, :2], x_a)  # y_a = x_a
    torch.testing.assert_close(y[:, 2:], torch.zeros_like(x_b), atol=1e-5, rtol=0)  # y_b = 0
    if not additive:  # the affine layer's convention: y_b = (x_b + t) * s, so x_b_hat = -t
        with torch.no_grad():
            shift, _ = coupling._shift_scale(x_a)
        torch.testing.assert_close(x_b_hat, -shift)


@pytest.mark.parametrize("additive", [False, True])
def test_exact_prediction_gives_zero_error(additive: bool) -> None:
    coupling = _coupling(additive)
    x_a = torch.randn(6, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        x_b_hat = ex.coupling_prediction(coupling, torch.cat([x_a, torch.zeros_like(x_a)], 1))
    (error,) = ex.coupling_errors(OneCoupling(coupling), torch.cat([x_a, x_b_hat], 1), batch_size=4)
    assert error.mse == pytest.approx(0.0, abs=1e-10)
    assert error.variance > 0 and error.unexplained == pytest.approx(0.0, abs=1e-8)
    assert (error.index, error.n, error.dims) == (1, 6, 2 * 4 * 4)


def test_errors_match_a_hand_walked_glow() -> None:
    glow = _glow()
    u = glow.inputs(_images(7))
    errors = ex.coupling_errors(glow, u, batch_size=3)  # batches of 3, 3, 1
    assert [e.name for e in errors] == ["L1.step1", "L1.step2", "L2.step1", "L2.step2"]
    assert [e.index for e in errors] == [1, 2, 3, 4]
    # the first coupling's input: squeeze, then actnorm and 1x1 convolution of step 1
    step = glow.levels[0][0]
    with torch.no_grad():
        h = step.layers[1](step.layers[0](squeeze(u))[0])[0]
        x_b = h.chunk(2, 1)[1].double()
        x_b_hat = ex.coupling_prediction(step.layers[2], h).double()
    assert errors[0].mse == pytest.approx(float(((x_b - x_b_hat) ** 2).mean()), rel=1e-6)
    assert errors[0].variance == pytest.approx(float(x_b.var(0, unbiased=False).mean()), rel=1e-6)
    assert errors[0].dims == x_b[0].numel() and errors[0].n == 7
    assert not glow.training  # left as it was


def test_coupling_errors_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="no Coupling"):
        ex.coupling_errors(nn.Identity(), torch.zeros(2, 4, 2, 2))
    with pytest.raises(ValueError, match="model.inputs"):
        ex.coupling_errors(_glow(), _images(2))
    errors = ex.coupling_errors(_glow(), _glow().inputs(_images(2)))
    with pytest.raises(ValueError, match="reference"):
        ex.coupling_table({"a": errors}, "b")
    with pytest.raises(ValueError, match="same layers"):
        ex.coupling_fits(errors, errors[:-1])


def test_coupling_table_and_records() -> None:
    glow = _glow()
    test, ood = (ex.coupling_errors(glow, glow.inputs(_images(5, s))) for s in (0, 1))
    table = ex.coupling_table({"in": test, "out": ood}, "in")
    ref = table[table["set"] == "in"]
    np.testing.assert_allclose(ref["mse / reference variance"], ref["mse / own variance"])
    fits = ex.coupling_fits(test, ood)
    assert [f.ood_mse for f in fits] == [e.mse for e in ood]


# --------------------------------------------------------------------------- latents


def test_latents_standardise_what_the_priors_score() -> None:
    glow = _glow()
    u = glow.inputs(_images(4))
    zs, eps = ex.latents(glow, u)
    with torch.no_grad():
        out = glow(u)
    assert [z.shape for z in zs] == [z.shape for z in out.zs] == [e.shape for e in eps]
    # sum log N(eps; 0, 1) over each level is the forward pass's "eps" part of log p(z)
    for e, name in zip(eps, ["L1", "top"], strict=True):
        log_n = (-0.5 * (math.log(2 * math.pi) + e**2)).sum((1, 2, 3))
        torch.testing.assert_close(log_n, out.parts[f"log_pz.{name}.eps"], rtol=1e-5, atol=1e-4)
    with pytest.raises(TypeError):
        ex.latents(OneCoupling(_coupling(False)), u)


def test_picture_fit_of_latents_that_hold_the_picture_or_not() -> None:
    images = _images(4, seed=6)
    grey = ex.grey_levels(images, 4)  # [4, 4, 4]
    assert torch.allclose(grey[:, 0, 0], images[:, :, :2, :2].double().mean((1, 2, 3)) / 255)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(4, 2, 4, 4, generator=g, dtype=F64)
    # a latent whose first channel is an affine function of the grey level: R^2_adj = 1
    holds = torch.cat([3 * grey[:, None] - 1, noise[:, :1]], 1)
    fitted, r2 = ex.picture_fit(holds, grey)
    np.testing.assert_allclose(r2, 1.0)
    torch.testing.assert_close(fitted, grey)
    # the adjustment: pure noise channels explain about nothing on average
    many = torch.randn(400, 2, 4, 4, generator=g, dtype=F64)
    grey_many = torch.rand(400, 4, 4, generator=g, dtype=F64)
    assert abs(np.mean(ex.picture_fit(many, grey_many)[1])) < 0.05
    # no fit with more channels than positions allow
    assert np.isnan(ex.picture_fit(torch.randn(4, 20, 4, 4, dtype=F64), grey)[1]).all()
    with pytest.raises(ValueError):
        ex.picture_fit(holds, grey[:, :2, :2])
    with pytest.raises(ValueError):
        ex.grey_levels(images, 3)


def test_latent_table() -> None:
    table = ex.latent_table(_glow(), {"x": _images(5)}, batch_size=2)
    assert list(table["level"]) == ["L1", "top"] and (table["images"] == 5).all()
    assert list(table["shape"]) == ["6x4x4", "24x2x2"]
    assert (table["mean eps^2"] > 0).all()
    assert np.isfinite(table["median adjusted R^2"].iloc[0])
    assert np.isnan(table["median adjusted R^2"].iloc[1])  # 4 positions, 24 channels


# --------------------------------------------------------------------------- reparametrization


@pytest.mark.parametrize("gamma", [0.3, 1.0, 2.5])
def test_power_map_of_a_uniform_density(gamma: float) -> None:
    """v ~ U(0, 1)^D has log p = 0; w = v^gamma has density prod (1/gamma) w^(1/gamma - 1)."""
    images = _images(5)
    w = ex.PowerMap(gamma)(ex.unit_scale(images))  # [N, D]
    closed = (-math.log(gamma) + (1 / gamma - 1) * torch.log(w)).sum(1).numpy()
    got = ex.reparametrized_log_px(np.zeros(5), images, ex.PowerMap(gamma))
    np.testing.assert_allclose(got, closed, rtol=1e-10)


@pytest.mark.parametrize(("a", "b"), [(2.0, 5.0), (0.7, 0.7)])
def test_logit_map_of_a_beta_density(a: float, b: float) -> None:
    """v ~ Beta(a, b) per dimension; w = logit(v) has density sigma(w)^a (1 - sigma(w))^b / B(a, b)."""
    images = _images(4, seed=3)
    v = ex.unit_scale(images).numpy()  # [N, D]
    log_px = ((a - 1) * np.log(v) + (b - 1) * np.log1p(-v) - betaln(a, b)).sum(1)
    w = ex.LogitMap(0.0)(torch.from_numpy(v)).numpy()
    closed = (a * np.log(expit(w)) + b * np.log(expit(-w)) - betaln(a, b)).sum(1)
    got = ex.reparametrized_log_px(log_px, images, ex.LogitMap(0.0))
    np.testing.assert_allclose(got, closed, rtol=1e-9)


@pytest.mark.parametrize("f", [ex.PowerMap(0.4), ex.PowerMap(3.0), ex.LogitMap(0.0),
                               ex.LogitMap(0.05)])
def test_log_derivative_is_autograd_and_counts_sum_it(f: ex.PixelMap) -> None:
    v = torch.linspace(0.01, 0.99, 50, dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(f(v).sum(), v)
    torch.testing.assert_close(f.log_abs_derivative(v.detach()), torch.log(grad.abs()))
    images = _images(3, seed=4)
    direct = f.log_abs_derivative(ex.unit_scale(images)).sum(1)
    torch.testing.assert_close(ex.log_jacobian(f, ex.level_counts(images)), direct)
    assert torch.equal(ex.level_counts(images).sum(1), torch.full((3,), 3 * 8 * 8, dtype=F64))


def test_sweep_identity_and_closed_form_gap() -> None:
    rng = np.random.default_rng(0)
    test, ood = (_images(30, seed=5), torch.randint(0, 128, (40, 3, 8, 8), dtype=torch.uint8))
    lp_test, lp_ood = rng.normal(0, 5, 30), rng.normal(3, 5, 40)
    sweep = ex.reparametrization_sweep((lp_test, test), (lp_ood, ood),
                                       [ex.PowerMap(1.0), ex.PowerMap(4.0)])
    identity, power = sweep.iloc[0], sweep.iloc[1]
    assert identity["auroc"] == pytest.approx(auroc(-lp_test, -lp_ood))
    assert identity["gap"] == pytest.approx(lp_ood.mean() - lp_test.mean())
    # gap_gamma = gap_1 - (gamma - 1) (mean sum log v over OOD - over test); D log gamma cancels
    s_test, s_ood = (torch.log(ex.unit_scale(x)).sum(1).mean().item() for x in (test, ood))
    assert power["gap"] == pytest.approx(identity["gap"] - 3.0 * (s_ood - s_test))
    rows = ex.reparametrization_records(sweep)
    assert [r.parameter for r in rows] == [1.0, 4.0] and rows[1].auroc == power["auroc"]


def test_reparametrization_rejects_bad_input() -> None:
    for bad in (lambda: ex.PowerMap(0.0), lambda: ex.PowerMap(-1.0), lambda: ex.LogitMap(0.5),
                lambda: ex.LogitMap(-0.1)):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(ValueError, match="open interval"):
        ex.PowerMap(2.0).log_abs_derivative(torch.tensor([0.0, 0.5]))
    with pytest.raises(ValueError, match="shape"):
        ex.reparametrized_log_px(np.zeros(3), _images(2), ex.PowerMap(2.0))
    with pytest.raises(ValueError, match="uint8"):
        ex.unit_scale(torch.rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match="level counts"):
        ex.log_jacobian(ex.PowerMap(2.0), torch.zeros(2, 10))


def test_crossings() -> None:
    grid = np.array([0.1, 1.0, 10.0, 100.0])
    # values 0, 0, 1, 0: up through 0.5 halfway between 1 and 10, down halfway between 10 and 100
    assert ex.crossings(grid, np.array([0.0, 0.0, 1.0, 0.0]), 0.5) == pytest.approx(
        [10**0.5, 10**1.5])
    assert ex.crossings(grid, np.zeros(4), 0.5) == []
    with pytest.raises(ValueError):
        ex.crossings(grid[::-1], np.zeros(4), 0.5)


def test_explanations_record_round_trips() -> None:
    record = records.Explanations(
        trained_on="cifar10", ood="svhn",
        couplings=[records.CouplingFit(layer=1, name="L1.step1", test_mse=1.0, ood_mse=0.5,
                                       test_variance=1.0, ood_variance=0.4)],
        layers_ood_predicted_better=1,
        reparametrizations=[records.Reparametrization(map="power", parameter=2.0,
                                                      test_log_density=1.0,
                                                      ood_log_density=2.0, auroc=0.1)],
        images={"couplings.test": 5}, models={"glow-cifar10": "key"})
    assert records.from_json(records.Explanations, records.to_json(record)) == record
    assert records.RECORDS["explanations"] is records.Explanations
