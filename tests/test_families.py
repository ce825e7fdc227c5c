"""One harness every registered model family passes (normflows-style shared checks).

For each registry name: the declared likelihood kind (continuous flows add the n bits of the
dequantization bin to bits/dim, discrete models do not: getting it wrong moves every number by
8 bits/dim), parts that add up to log_px, bits/dim conversion, deterministic and batch-size
invariant evaluation, and a few training steps through the one training loop that lower the
loss. Each family's own properties are tested in its own file.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ood_lib.models.base import DensityModel, evaluate
from ood_lib.training.loop import TrainConfig, train
from ood_lib.zoo import families

# Pinned here, independently of the classes: which families are flows on dequantized inputs.
EXPECTED_KIND = {"glow": "continuous", "glow_cv": "continuous", "pixelcnn": "discrete",
                 "vae": "discrete"}


def _build(name: str, dataset: str = "fashion_mnist", profile: str = "smoke") -> DensityModel:
    family = families.MODELS[name]
    torch.manual_seed(0)
    return family.model_cls(family.config_cls(**families.model_config(name, dataset, profile)))


def _images(n: int = 12, shape: tuple[int, int, int] = (1, 28, 28)) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    # Smooth-ish images (a random level per row plus noise), not pure noise: learnable.
    rows = torch.randint(0, 200, (n, shape[0], shape[1], 1), generator=g)
    noise = torch.randint(0, 56, (n, *shape), generator=g)
    return (rows + noise).clamp(0, 255).to(torch.uint8)


def test_every_family_is_pinned() -> None:
    assert set(families.MODELS) == set(EXPECTED_KIND)


@pytest.fixture(params=sorted(EXPECTED_KIND))
def name(request: pytest.FixtureRequest) -> str:
    return request.param


def test_likelihood_kind_inputs_and_bits_per_dim(name: str) -> None:
    model = _build(name).eval()
    assert model.likelihood == EXPECTED_KIND[name]
    x = _images(4)
    prepared = model.inputs(x)
    if model.likelihood == "continuous":
        assert prepared.is_floating_point() and prepared.min() >= -0.5 and prepared.max() < 0.5
        # bin centres: (x + 1/2) / 256 - 1/2
        torch.testing.assert_close(prepared, (x.float() + 0.5) / 256 - 0.5)
    else:
        assert prepared.dtype == torch.uint8 and torch.equal(prepared, x)
    scores = evaluate(model, x)
    shift = 8 if EXPECTED_KIND[name] == "continuous" else 0
    np.testing.assert_allclose(scores["bpd"], -scores["log_px"] / (x[0].numel() * math.log(2)) + shift)


def test_parts_add_up_to_log_px(name: str) -> None:
    model = _build(name).eval()
    with torch.no_grad():
        parts = model.log_prob_parts(model.inputs(_images(5)))
    assert model.additive_parts and set(model.additive_parts) <= set(parts)
    total = sum(parts[k].double() for k in model.additive_parts)
    torch.testing.assert_close(total, parts["log_px"].double(), rtol=1e-6, atol=1e-4)


def test_evaluation_is_deterministic_and_batch_size_invariant(name: str) -> None:
    model = _build(name)
    x = _images(12)
    with torch.no_grad():
        model.log_prob_parts(model.inputs(x))  # data-dependent initialisation, where there is one
    a = evaluate(model, x, batch_size=12)
    np.testing.assert_array_equal(a["log_px"], evaluate(model, x, batch_size=12)["log_px"])
    for batch_size in (1, 5):
        np.testing.assert_allclose(evaluate(model, x, batch_size=batch_size)["log_px"],
                                   a["log_px"], rtol=1e-5, atol=1e-3)


def test_a_few_training_steps_lower_the_loss(name: str, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    model = _build(name)
    x = _images(32)
    cfg = TrainConfig(steps=15, batch_size=8, lr=3e-3, warmup_steps=1, eval_every=15,
                      eval_images=8, checkpoint_every=15, init_batch_size=32)
    with torch.no_grad():
        model.log_prob_parts(model.inputs(x))
    before = evaluate(model, x)["bpd"].mean()
    result = train(model, x, cfg, tmp_path, progress=False)
    assert result.n_skipped == 0
    assert evaluate(model, x)["bpd"].mean() < before - 0.02


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
@pytest.mark.parametrize("dataset", ["cifar10", "fashion_mnist"])
def test_every_profile_builds_for_rgb_and_grey(name: str, profile: str, dataset: str) -> None:
    config = families.model_config(name, dataset, profile)
    family = families.MODELS[name]
    assert family.config_cls(**config).to_dict() == config
    if profile != "paper":  # paper-size models are built on a GPU, not in every test run
        model = _build(name, dataset, profile)
        assert sum(p.numel() for p in model.parameters()) > 0
