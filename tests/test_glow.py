"""Glow: invertibility, exact log-determinants, closed forms, initialisation."""

from __future__ import annotations

import math

import pytest
import torch

from ood_lib.models.base import bits_per_dim
from ood_lib.models.glow import (
    ActNorm,
    Coupling,
    FlowStep,
    Glow,
    GlowConfig,
    InvConv1x1,
    gaussian_log_p,
    squeeze,
    unsqueeze,
)
from tests.conftest import perturb


def _layers(channels: int = 4) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        "actnorm": ActNorm(channels),
        "invconv_lu": InvConv1x1(channels, lu=True),
        "invconv_plain": InvConv1x1(channels, lu=False),
        "coupling_affine": Coupling(channels, hidden=8),
        "coupling_additive": Coupling(channels, hidden=8, additive=True),
        "flowstep": FlowStep(channels, hidden=8, additive=False, lu=True),
    }


def _small_glow(**kw) -> Glow:
    torch.manual_seed(0)
    cfg = dict(in_channels=1, image_size=4, levels=2, steps=2, hidden=8)
    return Glow(GlowConfig(**{**cfg, **kw}))


@pytest.mark.parametrize("name", list(_layers()))
def test_layer_inverts(name: str) -> None:
    layer = perturb(_layers()[name])
    x = torch.randn(5, 4, 6, 6)
    y, _ = layer(x)
    assert not torch.allclose(y, x, atol=1e-3), "layer should not be the identity after perturbing"
    torch.testing.assert_close(layer.inverse(y), x, atol=1e-5, rtol=1e-5)


def _autograd_log_det(f, x: torch.Tensor) -> torch.Tensor:
    """log|det J| of ``f`` at a single input ``x`` (flattened), by autograd, float64."""
    jac = torch.autograd.functional.jacobian(lambda v: f(v.view_as(x)).flatten(), x.flatten())
    return torch.linalg.slogdet(jac)[1]


@pytest.mark.parametrize("name", list(_layers()))
def test_layer_log_det_matches_autograd_jacobian(name: str) -> None:
    layer = perturb(_layers()[name]).double()
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    _, log_det = layer(x)
    expected = _autograd_log_det(lambda v: layer(v)[0], x)
    torch.testing.assert_close(log_det[0], expected, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("additive", [False, True])
def test_full_glow_inverts_and_log_det_matches_jacobian(additive: bool) -> None:
    model = perturb(_small_glow(additive=additive)).double()
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64) - 0.5
    out = model(x)
    torch.testing.assert_close(model.inverse(out.zs), x, atol=1e-10, rtol=1e-10)

    def flat_latents(v: torch.Tensor) -> torch.Tensor:
        return torch.cat([z.flatten() for z in model(v).zs])

    expected = _autograd_log_det(flat_latents, x)
    torch.testing.assert_close(out.log_det[0], expected, atol=1e-8, rtol=1e-8)


def test_constant_volume_glow_has_input_independent_log_det() -> None:
    model = perturb(_small_glow(additive=True))
    out = model(torch.rand(8, 1, 4, 4) - 0.5)
    assert torch.allclose(out.log_det, out.log_det[0].expand(8))


def test_float32_round_trip_of_cifar_sized_glow() -> None:
    torch.manual_seed(0)
    model = Glow(GlowConfig(levels=3, steps=2, hidden=16))
    x = torch.rand(4, 3, 32, 32) - 0.5
    out = model(x)  # actnorm initialises on this batch
    out = model(x)
    assert (model.inverse(out.zs) - x).abs().max() < 1e-4


def test_identity_flow_gives_closed_form_gaussian_bpd() -> None:
    """With K=0 steps and untrained priors, Glow is a permutation of x scored by N(0, I)."""
    model = _small_glow(steps=0)
    x = torch.rand(3, 1, 4, 4) - 0.5
    out = model(x)
    d = x[0].numel()
    log_px = (-0.5 * math.log(2 * math.pi) - 0.5 * x**2).flatten(1).sum(1)
    torch.testing.assert_close(out.log_px, log_px)
    torch.testing.assert_close(out.log_det, torch.zeros(3))
    expected_bpd = (0.5 * math.log2(2 * math.pi) + (x**2).flatten(1).mean(1) / (2 * math.log(2))) + 8
    torch.testing.assert_close(bits_per_dim(out.log_px, d), expected_bpd)


def test_actnorm_initialisation_standardises_channels() -> None:
    x = 3.0 + 2.0 * torch.randn(64, 5, 4, 4)
    y, _ = ActNorm(5)(x)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=(0, 2, 3), unbiased=False), torch.ones(5), atol=1e-4, rtol=0)


def test_squeeze_is_inverted_by_unsqueeze() -> None:
    x = torch.randn(2, 3, 8, 8)
    assert squeeze(x).shape == (2, 12, 4, 4)
    torch.testing.assert_close(unsqueeze(squeeze(x)), x, atol=0, rtol=0)


def test_sampling_shape_and_temperature() -> None:
    model = perturb(_small_glow())
    g = torch.Generator().manual_seed(0)
    cold = model.sample(16, temperature=0.0, generator=g)
    assert cold.shape == (16, 1, 4, 4)
    torch.testing.assert_close(cold, cold[:1].expand_as(cold))  # T=0: the mode path, no noise
    warm = model.sample(16, temperature=1.0, generator=g)
    assert warm.std(0).mean() > 0


def test_bad_inputs_raise_clear_errors() -> None:
    model = _small_glow()
    with pytest.raises(ValueError, match="expects inputs"):
        model(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="NaN"):
        model(torch.full((2, 1, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="divisible"):
        GlowConfig(in_channels=1, image_size=28, levels=3)


@pytest.mark.parametrize("additive", [False, True])
def test_per_level_and_per_layer_parts_sum_to_the_two_terms(additive: bool) -> None:
    """FlowOutput.parts split log_det by level and layer type and log_pz by level, from the
    same forward pass; they add up to log_det and log_pz."""
    model = perturb(_small_glow(additive=additive, levels=3, image_size=8)).double()
    out = model(torch.rand(6, 1, 8, 8, dtype=torch.float64) - 0.5)
    expected = {f"log_det.L{level}.{kind}" for level in (1, 2, 3)
                for kind in ("actnorm", "invconv", "coupling")}
    expected |= {f"log_pz.{p}.{t}" for p in ("L1", "L2", "top") for t in ("scale", "eps")}
    assert set(out.parts) == expected
    det = sum(v for k, v in out.parts.items() if k.startswith("log_det."))
    pz = sum(v for k, v in out.parts.items() if k.startswith("log_pz."))
    torch.testing.assert_close(det, out.log_det, atol=1e-12, rtol=0)
    torch.testing.assert_close(pz, out.log_pz, atol=1e-12, rtol=0)
    parts = model.log_prob_parts(torch.rand(2, 1, 8, 8, dtype=torch.float64) - 0.5)
    torch.testing.assert_close(parts["log_px"], sum(parts[k] for k in model.additive_parts))


def test_actnorm_and_invconv_log_dets_do_not_depend_on_the_input() -> None:
    """Their OOD - test gap is exactly zero: identical values for any two inputs."""
    model = perturb(_small_glow(levels=2, image_size=8))
    a = model(torch.rand(5, 1, 8, 8) - 0.5).parts
    b = model(0.1 * torch.randn(5, 1, 8, 8)).parts
    for name in a:
        if name.endswith((".actnorm", ".invconv")):
            assert torch.equal(a[name], b[name]) and torch.equal(a[name], a[name][0].expand(5))
        elif name.endswith(".coupling"):
            assert not torch.allclose(a[name], b[name])


def test_constant_volume_glow_coupling_parts_are_zero() -> None:
    model = perturb(_small_glow(additive=True, levels=2, image_size=8))
    out = model(torch.rand(4, 1, 8, 8) - 0.5)
    for name, value in out.parts.items():
        if name.endswith(".coupling"):
            assert torch.equal(value, torch.zeros(4))


def test_gaussian_log_p_terms_sum_to_the_normal_log_density() -> None:
    x, mean, log_std = torch.randn(3, 4, dtype=torch.float64), torch.randn(4).double(), torch.randn(4).double()
    scale, eps = gaussian_log_p(x, mean, log_std)
    expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(x)
    torch.testing.assert_close(scale + eps, expected)
    torch.testing.assert_close(scale, -log_std.expand(3, 4))


def test_step_parts_sum_to_the_step_in_either_memory_layout() -> None:
    """FlowStep.forward_parts returns the three layers' log-determinants; they sum to the
    step's, and inputs stored channels first or channels last give the same step."""
    step = perturb(FlowStep(8, hidden=16, additive=False, lu=True))
    x = torch.randn(3, 8, 6, 6)
    y, log_det = step(x)
    y_cl, parts = step.forward_parts(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(y_cl, y, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sum(parts), log_det, atol=1e-4, rtol=1e-5)


def test_zero_conv_halves_are_the_even_and_odd_channels() -> None:
    head = perturb(Coupling(8, hidden=16)).nn[-1]
    h = torch.randn(2, 16, 5, 5)
    even, odd = head.halves(h)
    out = head(h)
    torch.testing.assert_close(even, out[:, 0::2])
    torch.testing.assert_close(odd, out[:, 1::2])


def test_squeeze_is_the_channel_major_patch_reshape_stored_channels_last() -> None:
    x = torch.randn(2, 3, 8, 8)
    b, c, h, w = x.shape
    reference = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, 4, 4)
    y = squeeze(x)
    assert torch.equal(y, reference) and y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(unsqueeze(y), x)
