"""Likelihood-ratio background models: the mu choice on a validation pair that is not the test
pair, the chosen run continued, the others removed, and no surprise training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ood_lib import background, ensemble, profiles, registry


@pytest.fixture
def build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_root: Path) -> Path:
    monkeypatch.setenv("OOD_BUILD_DIR", str(tmp_path / "build"))
    monkeypatch.setenv("OOD_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("OOD_DATA_ROOT", str(data_root))
    monkeypatch.delenv(registry.TRAIN_MISSING_ENV, raising=False)
    return tmp_path


def test_validation_ood_is_never_the_test_ood_set() -> None:
    for dataset, val_ood in background.VALIDATION_OOD.items():
        assert val_ood not in (dataset, profiles.PAIRS[dataset])


@pytest.mark.slow
def test_mu_is_chosen_by_validation_auroc_and_the_rest_removed(
        build: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(background, "MU_GRID", (0.1, 0.3))
    trained, record = background.get("notmnist", "smoke")
    grid = {c["mu"]: c["validation_auroc"] for c in record["grid"]}
    assert set(grid) == {0.1, 0.3} and record["mu"] == max(grid, key=lambda m: (grid[m], -m))
    assert record["validation_ood"].startswith("FashionMNIST-Test")
    assert record["select_steps"] < record["full_steps"] == trained.record["steps"]
    assert trained.record["train_config"]["noise_fraction"] == record["mu"]
    root = build / "build" / "checkpoints"
    assert json.loads((root / "background-notmnist.json").read_text()) == record
    # the losing candidate's partial run is gone; the winner finished (no resumable state left)
    runs = [p for p in root.iterdir() if p.is_dir()]
    noised = [p for p in runs if "noise_fraction" in json.loads((p / "record.json").read_text()
                                                                 )["train_config"]]
    assert noised == [trained.path] and len(runs) == 2  # the background and the foreground
    again, _ = background.get("notmnist", "smoke", allow_training=False)
    assert again.key == trained.key
    bundle = ensemble.companions("glow", "notmnist", "smoke")
    assert bundle.background.key == trained.key
    assert [m.spec.seed for m in bundle.members] == list(ensemble.ENSEMBLE_SEEDS["notmnist"][1:])
    assert ensemble.companions("vae", "notmnist", "smoke") == ensemble.Companions()
    background.discard("notmnist", "smoke")  # what --retrain starts with
    assert not (root / "background-notmnist.json").exists() and not trained.path.exists()


def test_a_missing_cpu_background_is_a_clear_error(build: Path) -> None:
    with pytest.raises(registry.CheckpointError,
                       match="python -m ood_lib.background --profile cpu --dataset cifar10"):
        background.get("cifar10", "cpu")
