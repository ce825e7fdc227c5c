"""The model registry: stable keys, train-then-load, manifest records, corrupt checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ood_lib import catalogue, paths
from ood_lib.data import store
from ood_lib.models.base import evaluate
from ood_lib.models.glow import Glow, GlowConfig
from ood_lib.training.loop import TrainConfig, train
from ood_lib.zoo import families, registry


def test_key_depends_on_everything_that_sets_the_weights(data_root: Path) -> None:
    split = registry.training_split("fashion_mnist", "smoke", data_root)
    base = registry.make_spec("glow", "fashion_mnist", "smoke", split)
    assert base.key == registry.make_spec("glow", "fashion_mnist", "smoke", split).key
    assert base.key.startswith("glow-fashion_mnist-smoke-")
    others = [
        registry.make_spec("glow_cv", "fashion_mnist", "smoke", split),
        registry.make_spec("glow", "fashion_mnist", "smoke", split, seed=1),
        registry.make_spec("glow", "fashion_mnist", "smoke", split.subset(100)),
        registry.make_spec("glow", "fashion_mnist", "smoke", split, noise_fraction=0.2),
        registry.make_spec("glow", "fashion_mnist", "smoke", split, noise_fraction=0.2, l2=10.0),
    ]
    assert len({base.key, *(s.key for s in others)}) == 6
    # a background model's command names its noise level and penalty; clean models' configs
    # hold neither
    assert others[-2].command.endswith("--noise-fraction 0.2")
    assert others[-1].command.endswith("--noise-fraction 0.2 --l2 10")
    assert not {"noise_fraction", "l2"} & set(base.train_config.to_dict())


def test_shipped_checkpoint_keys_are_unchanged() -> None:
    """Every checkpoint of checkpoints/manifest.json keeps its key under the current code: the
    configuration fields added after it was trained (noise_fraction, lr_schedule and l2 of the
    training config, the families' optional model fields) stay out of the hashed dicts at
    their defaults, so the key recomputed from its record is the one it was saved under."""
    manifest = json.loads((paths.checkpoints_dir() / "manifest.json").read_text())
    assert manifest
    for key, r in manifest.items():
        if key.endswith(registry.SNAPSHOT_SUFFIX.format(steps=r["steps"])):  # a snapshot
            key = key.removesuffix(registry.SNAPSHOT_SUFFIX.format(steps=r["steps"]))
        family = families.MODELS[r["model"]]
        assert family.config_cls(**r["model_config"]).to_dict() == r["model_config"], key
        cfg = TrainConfig(**r["train_config"])
        assert cfg.to_dict() == r["train_config"], key
        spec = registry.ModelSpec(r["model"], r["dataset"], r["profile"], r["seed"],
                                  r["model_config"], cfg,
                                  {k: v for k, v in r["train_data"].items()
                                   if k not in ("coverage", "source")})
        assert spec.key == key


@pytest.mark.slow
def test_a_short_run_is_the_start_of_the_full_run(build: Path) -> None:
    """train_partial stops a run early; get() then resumes it to the same weights as a run
    trained in one go (the likelihood-ratio mu selection relies on this)."""
    net, path, first = registry.train_partial("glow", "notmnist", "smoke", stop_at=12,
                                              noise_fraction=0.2, progress=False)
    assert first.steps == 12 and first.cpu_s > 0 and first.log[-1]["step"] == 10
    assert (path / "train_state.pt").exists() and not (path / "model.pt").exists()
    resumed = registry.get("glow", "notmnist", "smoke", noise_fraction=0.2, progress=False)
    assert resumed.path == path and resumed.record["train_config"]["noise_fraction"] == 0.2
    # a background model's training never reads the test OOD set (MNIST), not even to log it
    assert "mnist_test_bpd" not in resumed.record["final_bpd"]
    # the short run of a finished model is trained anew beside it, to the same weights
    again, short, run = registry.train_partial("glow", "notmnist", "smoke", stop_at=12,
                                               noise_fraction=0.2, progress=False)
    assert short == path.with_name(path.name + registry.SHORT_RUN_SUFFIX) and run.steps == 12
    assert (path / "model.pt").exists()
    for a, b in zip(net.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    straight = registry.get("glow", "notmnist", "smoke", noise_fraction=0.2, retrain=True,
                            progress=False)
    for a, b in zip(resumed.model.state_dict().values(), straight.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)


CMD = "python -m the-caller's-command"


@pytest.mark.slow
def test_a_snapshot_is_the_shipped_run_at_that_step(build: Path) -> None:
    """snapshot() keeps a run's weights at a step as a checkpoint of its own: the weights of
    the first steps of the shipped run (replayed and checked against its log), with a record
    of that step; a replay whose log differs from the shipped one is refused."""
    full = registry.get("glow", "notmnist", "smoke", progress=False)
    steps = families.train_config("glow", "notmnist", "smoke").eval_every
    assert steps < full.record["steps"]
    snap = registry.snapshot("glow", "notmnist", "smoke", steps, CMD, progress=False)
    assert snap.key == full.key + f".step{steps}" and snap.record["steps"] == steps
    assert snap.record["sha256"] != full.record["sha256"]
    assert list(snap.log["step"])[-1] == steps
    assert snap.record["final_bpd"]["notmnist_test_bpd"] == pytest.approx(
        float(full.log.loc[full.log["step"] == steps, "notmnist_test_bpd"].iloc[0]))
    # only the weights are kept: no resumable state, no training folder beside it
    assert not (snap.path / "train_state.pt").exists()
    assert not full.path.with_name(full.key + registry.SHORT_RUN_SUFFIX).exists()
    again = registry.snapshot("glow", "notmnist", "smoke", steps, CMD, allow_training=False)
    assert again.record["sha256"] == snap.record["sha256"]
    # a replay that does not reproduce the shipped log is another run: refused
    log = full.log.copy()
    log.loc[0, "train_bpd"] += 1e-6
    log.to_csv(full.path / "log.csv", index=False)
    with pytest.raises(registry.CheckpointError, match="differs from its shipped log"):
        registry.snapshot("glow", "notmnist", "smoke", steps + families.train_config(
            "glow", "notmnist", "smoke").eval_every, CMD, progress=False)
    with pytest.raises(registry.CheckpointError, match=f"Train it with `{CMD}`"):
        registry.snapshot("glow", "notmnist", "smoke", 2 * steps, CMD, allow_training=False)
    for unlogged in (steps + 1, full.record["steps"]):  # no log row, or the end itself
        with pytest.raises(ValueError, match="logged step before the end"):
            registry.snapshot("glow", "notmnist", "smoke", unlogged, CMD)
    # retrain: deleted and trained again (a replay on this machine: the same weights)
    log.loc[0, "train_bpd"] -= 1e-6
    full.log.to_csv(full.path / "log.csv", index=False)
    (snap.path / "left by the first").write_text("")
    retrained = registry.snapshot("glow", "notmnist", "smoke", steps, CMD, retrain=True,
                                  progress=False)
    assert retrained.record["sha256"] == snap.record["sha256"]
    assert not (retrained.path / "left by the first").exists()


@pytest.mark.slow
def test_smoke_model_trains_once_then_loads(build: Path) -> None:
    first = registry.get("glow", "notmnist", "smoke", progress=False)
    assert first.path.parent == build / "build" / "checkpoints"
    record = json.loads((first.path / "record.json").read_text())
    assert record["steps"] == families.train_config("glow", "notmnist", "smoke").steps
    assert set(record["final_bpd"]) == {"train_bpd", "notmnist_train_bpd", "notmnist_test_bpd",
                                      "mnist_test_bpd"}
    assert not (first.path / "train_state.pt").exists()
    again = registry.get("glow", "notmnist", "smoke", allow_training=False, progress=False)
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert len(again.log) == len(first.log) > 0


@pytest.mark.slow
def test_corrupt_or_missing_checkpoint_is_a_clear_error(build: Path) -> None:
    with pytest.raises(registry.CheckpointError, match="no checkpoint for model .glow."):
        registry.get("glow", "notmnist", "smoke", allow_training=False, progress=False)
    trained = registry.get("glow", "notmnist", "smoke", progress=False)
    with (trained.path / "model.pt").open("ab") as f:
        f.write(b"corrupt")
    with pytest.raises(registry.CheckpointError, match="sha256.*--retrain"):
        registry.get("glow", "notmnist", "smoke", progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", sorted(catalogue.PAIRS))
def test_shipped_cpu_checkpoints_match_the_current_code(dataset: str, data_root: Path) -> None:
    """The committed cpu models load without retraining: their keys still match the cpu
    profile's configuration and data coverage, and their weights match their sha256."""
    trained = registry.get("glow", dataset, "cpu", data_root=data_root, allow_training=False,
                           progress=False)
    assert trained.record["steps"] == trained.spec.train_config.steps
    assert trained.record["n_skipped"] == 0
    assert len(trained.log) == trained.spec.train_config.steps // trained.spec.train_config.eval_every
    # Same numbers as when it was trained: the final monitored test bits/dim of its record.
    cfg = trained.spec.train_config
    test = store.load(dataset, "test", data_root).subset(cfg.eval_images).tensor()
    bpd = evaluate(trained.model, test)["bpd"].mean()
    assert bpd == pytest.approx(trained.record["final_bpd"][f"{dataset}_test_bpd"], abs=1e-5)


def test_cpu_build_never_trains_by_surprise(build: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cpu model without a checkpoint is an error naming the model, its key and the command
    that trains it, unless training is asked for; smoke models train."""
    monkeypatch.delenv(catalogue.TRAIN_MISSING_ENV, raising=False)
    with pytest.raises(registry.CheckpointError) as err:
        registry.get("glow", "notmnist", "cpu", progress=False)
    split = registry.training_split("notmnist", "cpu")
    key = registry.make_spec("glow", "notmnist", "cpu", split).key
    message = str(err.value)
    assert key in message and "'glow'" in message
    assert "python -m ood_lib.zoo.registry train --profile cpu --model glow --dataset notmnist" in message
    assert "--train-missing" in message
    assert not (build / "checkpoints" / key).exists()
    assert registry.training_allowed("smoke") and not registry.training_allowed("paper")
    monkeypatch.setenv(catalogue.TRAIN_MISSING_ENV, "1")
    assert registry.training_allowed("cpu")


@pytest.mark.slow
def test_paper_profile_constructs_and_trains_a_few_steps(tmp_path: Path, data_root: Path) -> None:
    cfg = families.model_config("glow", "cifar10", "paper")
    assert (cfg["levels"], cfg["steps"], cfg["hidden"]) == (3, 32, 512)
    paper = families.train_config("glow", "cifar10", "paper")
    assert (paper.optimizer, paper.lr) == ("adamax", 1e-3)
    torch.manual_seed(0)
    model = Glow(GlowConfig(**cfg))
    images = store.load("cifar10", "test", data_root).subset(32).tensor()
    short = TrainConfig(**{**paper.to_dict(), "steps": 3, "batch_size": 2,
                           "init_batch_size": 32, "eval_every": 3, "eval_images": 2})
    result = train(model, images, short, tmp_path, progress=False)
    assert result.steps == 3 and result.n_skipped == 0
    assert all(np.isfinite(v) for v in result.log[-1].values())


def test_unknown_names_raise() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        families.model_config("pixelcnn9000", "cifar10", "cpu")
    with pytest.raises(ValueError, match="unknown profile"):
        families.model_config("glow", "cifar10", "laptop")
