"""The model registry: stable keys, train-then-load, manifest records, corrupt checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ood_lib import profiles, registry
from ood_lib.glow import Glow, GlowConfig


@pytest.fixture
def build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_root: Path) -> Path:
    monkeypatch.setenv("OOD_BUILD_DIR", str(tmp_path / "build"))
    monkeypatch.setenv("OOD_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("OOD_DATA_ROOT", str(data_root))
    return tmp_path


def test_key_depends_on_everything_that_sets_the_weights(data_root: Path) -> None:
    split = registry.training_split("fashion_mnist", "smoke", data_root)
    base = registry.make_spec("glow", "fashion_mnist", "smoke", split)
    assert base.key == registry.make_spec("glow", "fashion_mnist", "smoke", split).key
    assert base.key.startswith("glow-fashion_mnist-smoke-")
    others = [
        registry.make_spec("glow_cv", "fashion_mnist", "smoke", split),
        registry.make_spec("glow", "fashion_mnist", "smoke", split, seed=1),
        registry.make_spec("glow", "fashion_mnist", "smoke", split.subset(100)),
    ]
    assert len({base.key, *(s.key for s in others)}) == 4


def test_smoke_model_trains_once_then_loads(build: Path) -> None:
    first = registry.get("glow", "notmnist", "smoke", progress=False)
    assert first.path.parent == build / "build" / "checkpoints"
    record = json.loads((first.path / "record.json").read_text())
    assert record["steps"] == profiles.train_config("glow", "notmnist", "smoke").steps
    assert set(record["final_bpd"]) == {"train_bpd", "notmnist_test_bpd", "mnist_test_bpd"}
    assert not (first.path / "train_state.pt").exists()
    again = registry.get("glow", "notmnist", "smoke", allow_training=False, progress=False)
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert len(again.log) == len(first.log) > 0


def test_corrupt_or_missing_checkpoint_is_a_clear_error(build: Path) -> None:
    with pytest.raises(registry.CheckpointError, match="training is disabled"):
        registry.get("glow", "notmnist", "smoke", allow_training=False, progress=False)
    trained = registry.get("glow", "notmnist", "smoke", progress=False)
    with (trained.path / "model.pt").open("ab") as f:
        f.write(b"corrupt")
    with pytest.raises(registry.CheckpointError, match="sha256"):
        registry.get("glow", "notmnist", "smoke", progress=False)


def test_paper_profile_constructs_and_runs_a_step() -> None:
    cfg = profiles.model_config("glow", "cifar10", "paper")
    assert (cfg["levels"], cfg["steps"], cfg["hidden"]) == (3, 32, 512)
    assert profiles.train_config("glow", "cifar10", "paper").optimizer == "adamax"
    torch.manual_seed(0)
    model = Glow(GlowConfig(**cfg))
    x = torch.rand(2, 3, 32, 32) - 0.5
    loss = -model(x).log_px.mean()
    loss.backward()
    assert torch.isfinite(loss)


def test_unknown_names_raise() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        profiles.model_config("pixelcnn9000", "cifar10", "cpu")
    with pytest.raises(ValueError, match="unknown profile"):
        profiles.model_config("glow", "cifar10", "laptop")
