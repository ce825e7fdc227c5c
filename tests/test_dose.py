"""DoSE (Morningstar et al. 2021): the statistics per family, and both scores on cases whose
answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import gaussian_kde

from ood_lib.analysis import dose
from ood_lib.models.base import evaluate
from ood_lib.models.glow import Glow, GlowConfig
from ood_lib.models.vae import VAE, VAEConfig
from tests.conftest import perturb


def test_glow_statistics_sum_the_fine_parts_per_level() -> None:
    one = np.ones(3)
    scores = {"log_px": 9 * one, "log_pz": 5 * one, "log_det": 4 * one,
              "log_pz.L1.scale": 1 * one, "log_pz.L1.eps": 2 * one, "log_pz.top.eps": 2 * one,
              "log_det.L1.actnorm": 0.5 * one, "log_det.L1.coupling": 1.5 * one,
              "log_det.L2.coupling": 2 * one, "latent_norm": 7 * one}
    stats = dose.statistics("glow", scores, {})
    assert {k: float(v[0]) for k, v in stats.items()} == {
        "log_pz.L1": 3.0, "log_pz.top": 2.0, "log_det.L1": 2.0, "log_det.L2": 2.0,
        "latent norm": 7.0}


def test_vae_and_pixelcnn_statistics() -> None:
    v = dose.statistics("vae", {"recon": np.array([-100.0]), "neg_kl": np.array([-20.0]),
                                "log_px": np.array([-115.0]), "iw_gain": np.array([5.0])},
                        {"posterior_entropy": np.array([3.0])})
    assert {k: float(x[0]) for k, x in v.items()} == {
        "rate": 20.0, "distortion": 100.0, "ELBO": -120.0, "posterior entropy": 3.0}
    p = dose.statistics("pixelcnn", {"log_px": np.array([-6.0]), "log_px_c0": np.array([-1.0]),
                                     "log_px_c1": np.array([-2.0]), "log_px_c2": np.array([-3.0]),
                                     "bpd": np.array([1.0])}, {})
    assert list(p) == ["log p", "log p, channel 0", "log p, channel 1", "log p, channel 2"]
    softmax = dose.statistics("pixelcnn", {"log_px": np.array([-6.0]),
                                           "predictive_entropy": np.array([2.5])}, {})
    assert {k: float(x[0]) for k, x in softmax.items()} == {
        "log p": -6.0, "mean predictive entropy": 2.5}
    with pytest.raises(ValueError, match="no DoSE statistics"):
        dose.statistics("flowpp", {}, {})


def test_glow_scores_carry_the_norm_of_every_level_of_z() -> None:
    torch.manual_seed(0)
    model = perturb(Glow(GlowConfig(in_channels=1, image_size=8, levels=2, steps=1, hidden=8)))
    x = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    with torch.no_grad():
        zs = model(model.inputs(x)).zs
    expected = torch.sqrt(sum(z.double().pow(2).flatten(1).sum(1) for z in zs)).numpy()
    # float32 convolutions round differently with another batch size
    scored = evaluate(model, x, batch_size=2)
    np.testing.assert_allclose(scored["latent_norm"], expected, rtol=1e-6)
    parts = model.score_parts(model.inputs(x))
    assert set(parts) - set(model.log_prob_parts(model.inputs(x))) == {"latent_norm"}


def test_posterior_entropy_is_the_diagonal_gaussian_entropy() -> None:
    torch.manual_seed(0)
    model = VAE(VAEConfig(in_channels=1, image_size=8, hidden=8, latent=4, k_eval=2))
    x = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    with torch.no_grad():
        mu, log_sigma = model.encode(model.inputs(x))
    expected = torch.distributions.Normal(mu.double(), log_sigma.double().exp()).entropy().sum(1)
    np.testing.assert_allclose(dose.posterior_entropy(model, x), expected.numpy(), rtol=1e-10)
    assert expected.numpy()[0] == pytest.approx(
        float(log_sigma[0].double().sum()) + 2 * (1 + math.log(2 * math.pi)), rel=1e-10)


def test_dose_kde_is_the_sum_of_per_statistic_log_densities() -> None:
    """Up to one constant (standardising shifts each log-density by log sigma_j), the score is
    -sum_j log q_j(T_j(x)) with a KDE per statistic fitted on the raw statistics."""
    rng = np.random.default_rng(0)
    fit = {"a": rng.normal(100, 10, 400), "b": rng.normal(-3, 0.1, 400)}
    x = {"a": np.array([100.0, 130.0, 90.0]), "b": np.array([-3.0, -3.0, -2.7])}
    by_hand = -(gaussian_kde(fit["a"]).logpdf(x["a"]) + gaussian_kde(fit["b"]).logpdf(x["b"]))
    diff = dose.dose_kde(fit, x) - by_hand
    np.testing.assert_allclose(diff, diff[0], atol=1e-9)
    assert diff[0] == pytest.approx(-np.log(fit["a"].std() * fit["b"].std()), rel=1e-9)
    with pytest.raises(ValueError, match="differ"):
        dose.dose_kde(fit, {"b": x["b"], "a": x["a"]})


def test_dose_svm_flags_points_outside_the_fit_and_about_nu_of_the_fit() -> None:
    rng = np.random.default_rng(1)
    fit = {"a": rng.normal(0, 1, 1000), "b": rng.normal(5, 2, 1000)}
    inside, far = {"a": np.zeros(1), "b": np.full(1, 5.0)}, {"a": np.full(1, 6.0), "b": np.zeros(1)}
    assert dose.dose_svm(fit, far)[0] > 0 > dose.dose_svm(fit, inside)[0]
    # a one-class SVM leaves about a fraction nu of its training points outside (score > 0)
    assert 0.5 * dose.SVM_NU < np.mean(dose.dose_svm(fit, fit) > 0) < 2 * dose.SVM_NU
    assert dose.dose_svm(fit, {"a": np.array([np.inf]), "b": np.zeros(1)})[0] == np.inf
