"""The model registry: stable keys, train-then-load, manifest records, corrupt checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ood_lib import data, profiles, registry
from ood_lib.glow import Glow, GlowConfig
from ood_lib.train import TrainConfig, train


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


@pytest.mark.parametrize("dataset", sorted(profiles.PAIRS))
def test_shipped_cpu_checkpoints_match_the_current_code(dataset: str, data_root: Path) -> None:
    """The committed cpu models load without retraining: their keys still match the cpu
    profile's configuration and data coverage, and their weights match their sha256."""
    trained = registry.get("glow", dataset, "cpu", data_root=data_root, allow_training=False,
                           progress=False)
    assert trained.record["steps"] == trained.spec.train_config.steps
    assert trained.record["n_skipped"] == 0
    assert len(trained.log) == trained.spec.train_config.steps // trained.spec.train_config.eval_every


def test_paper_profile_constructs_and_trains_a_few_steps(tmp_path: Path, data_root: Path) -> None:
    cfg = profiles.model_config("glow", "cifar10", "paper")
    assert (cfg["levels"], cfg["steps"], cfg["hidden"]) == (3, 32, 512)
    paper = profiles.train_config("glow", "cifar10", "paper")
    assert (paper.optimizer, paper.lr) == ("adamax", 1e-3)
    torch.manual_seed(0)
    model = Glow(GlowConfig(**cfg))
    images = data.load("cifar10", "test", data_root).subset(32).tensor()
    short = TrainConfig(**{**paper.to_dict(), "steps": 3, "batch_size": 2,
                           "init_batch_size": 32, "eval_every": 3, "eval_images": 2})
    result = train(model, images, short, tmp_path, progress=False)
    assert result.steps == 3 and result.n_skipped == 0
    assert all(np.isfinite(v) for v in result.log[-1].values())


def test_unknown_names_raise() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        profiles.model_config("pixelcnn9000", "cifar10", "cpu")
    with pytest.raises(ValueError, match="unknown profile"):
        profiles.model_config("glow", "cifar10", "laptop")
