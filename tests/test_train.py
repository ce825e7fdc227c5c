"""The training loop: it learns, it resumes bit-identically, it survives non-finite steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ood_lib.data import store
from ood_lib.models.base import DensityModel, evaluate
from ood_lib.models.glow import Glow, GlowConfig
from ood_lib.models.pixelcnn import MaskedConv2d
from ood_lib.training.loop import (
    LOG_FILE,
    MAX_CONSECUTIVE_SKIPS,
    STATE_FILE,
    TrainConfig,
    TrainingDiverged,
    batch_indices,
    kernel_weights,
    l2_penalty,
    train,
)

CFG = TrainConfig(steps=24, batch_size=16, lr=2e-3, warmup_steps=4, eval_every=8,
                  eval_images=32, checkpoint_every=8, init_batch_size=64)


@pytest.fixture(scope="module")
def images(data_root: Path) -> torch.Tensor:
    """256 real Fashion-MNIST test images, uint8 [N, 1, 28, 28]."""
    return store.load("fashion_mnist", "test", data_root).subset(256).tensor()


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


# --- the L2 weight penalty (Ren et al.'s background models) -------------------------------------


class _Tiny(torch.nn.Module):
    """A convolution, a linear layer, a masked convolution and parameters that are no kernel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)  # kernel [2, 1, 3, 3]: 18 weights
        self.linear = torch.nn.Linear(3, 1)  # kernel [1, 3]: 3 weights
        groups = torch.arange(2)
        self.masked = MaskedConv2d(groups, groups, (1, 1), mask_type="A")  # keeps 1 of 4 taps
        self.scale = torch.nn.Parameter(torch.full((4,), 7.0))  # like actnorm: not a kernel
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.fill_(5.0)
            self.linear.weight.fill_(2.0)
            self.linear.bias.fill_(5.0)
            self.masked.weight.fill_(3.0)
            self.masked.bias.fill_(5.0)


def test_l2_penalty_by_hand() -> None:
    """lambda sum_w w^2 / (D ln 2) over the kernels alone: 18 ones, 3 twos and the one tap of
    the masked 1x1 convolution that mask A keeps (input group 0 -> output group 1), a 3."""
    model = _Tiny()
    assert int(model.masked.mask.sum()) == 1
    sum_sq = 18 * 1.0 + 3 * 2.0**2 + 1 * 3.0**2  # = 39; biases (5) and scale (7) left out
    penalty = l2_penalty(model, 10.0, 784)
    assert float(penalty.detach()) == pytest.approx(10.0 * sum_sq / (784 * np.log(2)), rel=1e-6)
    # the gradient is 2 lambda w / (D ln 2) on kept kernel entries and nothing elsewhere
    penalty.backward()
    factor = 2 * 10.0 / (784 * np.log(2))
    assert torch.allclose(model.conv.weight.grad, torch.full_like(model.conv.weight, factor))
    assert torch.allclose(model.masked.weight.grad, 3.0 * factor * model.masked.mask)
    assert model.conv.bias.grad is None and model.scale.grad is None


def test_glow_kernels_leave_out_actnorm_the_1x1_convolutions_and_the_prior() -> None:
    """In a Glow the penalty reaches the coupling networks' and split priors' convolutions only:
    actnorm, the invertible 1x1 convolutions (LU factors), the top prior and every bias get no
    gradient from it."""
    model = _glow()
    l2_penalty(model, 1.0, 784).backward()
    touched = {name for name, p in model.named_parameters()
               if p.grad is not None and p.grad.abs().sum() > 0}
    assert touched and all(name.endswith("weight") for name in touched)
    assert not any(part in name for name in touched
                   for part in ("actnorm", "invconv", "lower", "upper", "log_s", "top_"))
    n_kernels = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert len(kernel_weights(model)) == n_kernels  # zero-initialised ones included


def test_l2_is_left_out_of_the_config_dict_at_its_default() -> None:
    """l2 = 0 (every model trained before it existed) adds nothing to the dict hashed into
    checkpoint keys; l2 > 0 is recorded; a negative lambda is refused."""
    assert "l2" not in CFG.to_dict()
    with_l2 = TrainConfig(**{**CFG.to_dict(), "l2": 10.0})
    assert with_l2.to_dict()["l2"] == 10.0 and TrainConfig(**with_l2.to_dict()) == with_l2
    with pytest.raises(ValueError, match="l2"):
        TrainConfig(steps=10, l2=-1.0)


@pytest.mark.slow
def test_training_with_l2_shrinks_the_kernels_and_logs_the_penalty_apart(
        images: torch.Tensor, tmp_path: Path) -> None:
    """The same run with a large lambda ends with smaller kernels; its running train bits/dim
    is the likelihood term alone (the penalty, logged beside it, is not in it)."""
    cfg = TrainConfig(**{**CFG.to_dict(), "steps": 8})
    plain, penalised = _glow(), _glow()
    train(plain, images, cfg, tmp_path / "plain", progress=False)
    big = TrainConfig(**{**cfg.to_dict(), "l2": 1e4})
    train(penalised, images, big, tmp_path / "l2", progress=False)

    def norm(m: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(sum(w.square().sum() for w in kernel_weights(m)))

    assert norm(penalised) < norm(plain)
    log = pd.read_csv(tmp_path / "l2" / LOG_FILE)
    assert "l2_penalty" in log and "l2_penalty" not in pd.read_csv(tmp_path / "plain" / LOG_FILE)
    assert (log["l2_penalty"] > 0).all()
    # a penalty of this size would dwarf the bits/dim if it were counted in train_bpd
    assert (log["train_bpd"] < log["l2_penalty"]).all() and (log["train_bpd"] < 20).all()
