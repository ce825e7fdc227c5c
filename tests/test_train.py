"""The training loop: it learns, it resumes bit-identically, it survives non-finite steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ood_lib import data
from ood_lib.likelihood import evaluate
from ood_lib.models.base import DensityModel
from ood_lib.models.glow import Glow, GlowConfig
from ood_lib.train import (
    LOG_FILE,
    MAX_CONSECUTIVE_SKIPS,
    STATE_FILE,
    TrainConfig,
    TrainingDiverged,
    batch_indices,
    train,
)

CFG = TrainConfig(steps=24, batch_size=16, lr=2e-3, warmup_steps=4, eval_every=8,
                  eval_images=32, checkpoint_every=8, init_batch_size=64)


@pytest.fixture(scope="module")
def images(data_root: Path) -> torch.Tensor:
    """256 real Fashion-MNIST test images, uint8 [N, 1, 28, 28]."""
    return data.load("fashion_mnist", "test", data_root).subset(256).tensor()


def _glow() -> Glow:
    torch.manual_seed(0)
    return Glow(GlowConfig(in_channels=1, image_size=28, levels=2, steps=2, hidden=16))


def test_a_few_dozen_steps_lower_the_loss(images: torch.Tensor, tmp_path: Path) -> None:
    model = _glow()
    result = train(model, images, CFG, tmp_path, monitor={"held_out": images[:64]}, progress=False)
    log = pd.read_csv(tmp_path / LOG_FILE)
    assert list(log["step"]) == [8, 16, 24]
    assert log["train_bpd"].iloc[-1] < log["train_bpd"].iloc[0] - 0.3
    assert log["held_out_bpd"].iloc[-1] < log["held_out_bpd"].iloc[0]
    assert result.n_skipped == 0


def test_resume_continues_bit_identically(images: torch.Tensor, tmp_path: Path) -> None:
    straight = _glow()
    train(straight, images, CFG, tmp_path / "straight", progress=False)

    interrupted = _glow()
    first = train(interrupted, images, CFG, tmp_path / "resumed", stop_at=10, progress=False)
    assert first.steps == 10 and (tmp_path / "resumed" / STATE_FILE).exists()
    resumed = _glow()  # a fresh process would rebuild the model from scratch
    result = train(resumed, images, CFG, tmp_path / "resumed", progress=False)
    assert result.steps == CFG.steps
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"{name} differs after resume"
    log_a = pd.read_csv(tmp_path / "straight" / LOG_FILE).drop(columns=["wall_s", "cpu_s"])
    log_b = pd.read_csv(tmp_path / "resumed" / LOG_FILE).drop(columns=["wall_s", "cpu_s"])
    pd.testing.assert_frame_equal(log_a, log_b)


class _Flaky(DensityModel):
    """A Glow whose loss is NaN on chosen calls (counted from 0, after initialisation)."""

    likelihood = "continuous"

    def __init__(self, bad_calls: set[int]) -> None:
        super().__init__()
        self.glow, self.bad_calls, self.calls = _glow(), bad_calls, -1

    def log_prob_parts(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = self.glow.log_prob_parts(x)
        if self.training:
            self.calls += 1
            if self.calls in self.bad_calls:
                parts["log_px"] = parts["log_px"] * float("nan")
        return parts


def test_non_finite_steps_are_skipped_and_counted(images: torch.Tensor, tmp_path: Path) -> None:
    model = _Flaky(bad_calls={3, 11})
    cfg = TrainConfig(**{**CFG.to_dict(), "steps": 16})
    result = train(model, images, cfg, tmp_path, progress=False)
    assert result.n_skipped == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert result.log[-1]["n_skipped"] == 2


def test_a_diverged_model_stops_with_a_clear_error(images: torch.Tensor, tmp_path: Path) -> None:
    model = _Flaky(bad_calls=set(range(2, 1000)))
    cfg = TrainConfig(**{**CFG.to_dict(), "steps": 100})
    with pytest.raises(TrainingDiverged, match=f"{MAX_CONSECUTIVE_SKIPS} non-finite steps in a row"):
        train(model, images, cfg, tmp_path, progress=False)


def test_batches_cover_each_epoch_once() -> None:
    seen = torch.cat([batch_indices(100, s, 10, seed=3) for s in range(10)])
    assert sorted(seen.tolist()) == list(range(100))
    assert not torch.equal(batch_indices(100, 0, 10, 3), batch_indices(100, 10, 10, 3))


def test_evaluation_is_deterministic(images: torch.Tensor) -> None:
    model = _glow()
    model(torch.zeros(2, 1, 28, 28))  # initialise actnorm
    a = evaluate(model, images[:40], batch_size=16)
    assert {"log_px", "log_pz", "log_det", "bpd", "log_pz.top.eps", "log_det.L1.coupling"} <= set(a)
    np.testing.assert_array_equal(a["bpd"], evaluate(model, images[:40], batch_size=16)["bpd"])
    np.testing.assert_allclose(a["bpd"], evaluate(model, images[:40], batch_size=40)["bpd"],
                               rtol=0, atol=1e-5)


def test_bad_config_and_inputs_raise() -> None:
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(steps=1, optimizer="sgd")
    with pytest.raises(ValueError, match="uint8"):
        evaluate(_glow(), torch.zeros(2, 1, 28, 28))
