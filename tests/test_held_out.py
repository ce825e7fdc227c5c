"""The held-out split: what it holds, that no model trains on it, and that fits refuse anything
else; the training options that came with it (cosine schedule, CPU time); the paired bootstrap."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ood_lib import catalogue, paths, scoring
from ood_lib.data import files, store
from ood_lib.metrics import auroc, paired_bootstrap_auroc_difference
from ood_lib.models.glow import Glow, GlowConfig
from ood_lib.training.loop import LOG_FILE, TrainConfig, train
from ood_lib.zoo import registry


@pytest.mark.parametrize(("dataset", "start", "stop"), [("cifar10", 45_000, 50_000),
                                                        ("fashion_mnist", 55_000, 60_000)])
def test_held_out_split_is_the_last_official_training_images(data_root: Path, dataset: str,
                                                             start: int, stop: int) -> None:
    val = store.load_named(f"{dataset}_val", data_root)
    train_split = store.load(dataset, "train", data_root)
    assert (val.split, val.n) == ("val", stop - start)
    np.testing.assert_array_equal(val.index, np.arange(start, stop))
    assert train_split.n == start and train_split.index.max() == start - 1
    assert val.official_size == val.n and train_split.coverage == 1.0


def test_notmnist_held_out_split_is_the_even_half_of_its_test_split(data_root: Path) -> None:
    test, val = store.load("notmnist", "test", data_root), store.load("notmnist", "val", data_root)
    np.testing.assert_array_equal(val.x, test.x[0::2])
    odd = store.fit_evaluation_split(test)
    np.testing.assert_array_equal(odd.index, test.index[1::2])
    assert np.intersect1d(odd.index, val.index).size == 0 and odd.n + val.n == test.n


def test_datasets_without_a_held_out_split_say_so(data_root: Path) -> None:
    with pytest.raises(files.UnknownDatasetError, match="SVHN has no held-out split"):
        store.load("svhn", "val", data_root)
    with pytest.raises(files.UnknownDatasetError, match="'<dataset>_<split>'"):
        store.load_named("cifar10", data_root)


def test_fits_refuse_test_splits_training_images_and_held_out_images_a_model_saw(
        data_root: Path) -> None:
    val = store.load("cifar10", "val", data_root)
    assert store.check_fit_split(val, (0, 45_000)) is val
    with pytest.raises(store.FitDataError, match="never a test split"):
        store.check_fit_split(store.load("cifar10", "test", data_root), (0, 45_000))
    with pytest.raises(store.FitDataError, match="never training images"):
        store.check_fit_split(store.load("cifar10", "train", data_root), (0, 45_000))
    # a model whose record predates the split trained on the held-out images
    with pytest.raises(store.FitDataError, match="include held-out images"):
        store.check_fit_split(val, None)
    with pytest.raises(store.FitDataError, match="include held-out images"):
        store.check_fit_split(val, (40_000, 46_000))


def _records() -> dict[str, dict]:
    return json.loads((paths.checkpoints_dir() / "manifest.json").read_text())


def test_no_current_shipped_model_trained_on_the_held_out_split(data_root: Path) -> None:
    """Every shipped cpu record either names a training range disjoint from the held-out
    split, or is an old checkpoint that the current code can only load as a stale stand-in
    (its key is not the key the registry asks for)."""
    splits = {d: registry.training_split(d, "cpu", data_root) for d in catalogue.HELD_OUT}
    for key, r in _records().items():
        if r["dataset"] not in catalogue.HELD_OUT:
            continue
        start, stop = catalogue.HELD_OUT[r["dataset"]]
        if "index_range" in r["train_data"]:
            lo, hi = r["train_data"]["index_range"]
            assert hi <= start or lo >= stop, key
        else:
            spec = registry.make_spec(r["model"], r["dataset"], "cpu", splits[r["dataset"]],
                                      r["seed"], r["train_config"].get("noise_fraction", 0.0))
            assert spec.key != key


def test_the_cpu_training_split_leaves_the_held_out_images_out(data_root: Path) -> None:
    split = registry.training_split("cifar10", "cpu", data_root)
    spec = registry.make_spec("glow", "cifar10", "cpu", split)
    assert spec.train_data["index_range"] == [0, 45_000]
    # notMNIST has no held-out training images: its keys (and shipped models) are unchanged
    nm = registry.make_spec("glow", "notmnist", "cpu", registry.training_split("notmnist", "cpu",
                                                                                data_root))
    assert "index_range" not in nm.train_data and nm.key in _records()


def test_a_stale_stand_in_gets_no_fitted_scores(data_root: Path) -> None:
    """A model trained on all 50,000 CIFAR-10 training images may not be fitted on cifar10_val:
    with_held_out leaves the fit set out and says why."""
    spec = registry.legacy_spec(registry.make_spec(
        "glow", "cifar10", "cpu", registry.training_split("cifar10", "cpu", data_root)))
    record = _records()[spec.key]
    assert "index_range" not in record["train_data"]
    trained = registry.TrainedModel(model=None, spec=spec, record=record, log=pd.DataFrame(),
                                    path=Path("."), stale="old")
    with pytest.raises(store.FitDataError):
        trained.fit_split(store.load("cifar10", "val", data_root))
    pair = scoring.ScoredPair(trained, {r: None for r in ("train", "test", "ood")},
                              {r: {} for r in ("train", "test", "ood")})
    fitted = scoring.with_held_out(pair, "smoke", data_root)
    assert "val" not in fitted.sets and "include held-out images" in fitted.fit_note


@pytest.mark.parametrize(("model", "shipped"), [("pixelcnn", "pixelcnn-cifar10-cpu-c75a305015"),
                                               ("vae", "vae-cifar10-cpu-ee110c510c"),
                                               ("glow_cv", "glow_cv-cifar10-cpu-d76e3cd044")])
def test_the_model_a_retrained_one_replaced_is_found_across_a_new_architecture(
        data_root: Path, model: str, shipped: str) -> None:
    """The cpu CIFAR-10 PixelCNN and VAE were retrained with new architectures: the model each
    replaced (another configuration, all 50,000 images) is still their stale stand-in and
    predecessor; CV-Glow kept its configuration and finds its own."""
    spec = registry.make_spec(model, "cifar10", "cpu",
                              registry.training_split("cifar10", "cpu", data_root))
    old = registry.legacy_spec(spec)
    assert old is not None and old.key == shipped and shipped in _records()
    assert (old.model_config == spec.model_config) == (model == "glow_cv")
    assert "index_range" not in _records()[shipped]["train_data"]


def test_cosine_schedule_and_unchanged_keys_at_the_default() -> None:
    cfg = TrainConfig(steps=1_100, warmup_steps=100, lr=1e-3, lr_schedule="cosine")
    assert cfg.lr_at(0) == pytest.approx(1e-5)
    assert cfg.lr_at(99) == pytest.approx(1e-3)
    assert cfg.lr_at(600) == pytest.approx(5e-4)  # half-way through the decay
    assert cfg.lr_at(1_100) == pytest.approx(0.0, abs=1e-12)
    constant = TrainConfig(steps=1_100, warmup_steps=100)
    assert constant.lr_at(1_000) == 1e-3
    assert "lr_schedule" not in constant.to_dict() and cfg.to_dict()["lr_schedule"] == "cosine"
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(steps=10, lr_schedule="step")


def test_every_log_row_has_process_cpu_time(tmp_path: Path) -> None:
    model = Glow(GlowConfig(in_channels=1, image_size=8, levels=1, steps=1, hidden=8))
    x = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(steps=6, batch_size=16, eval_every=2, checkpoint_every=3, init_batch_size=16)
    result = train(model, x, cfg, tmp_path, progress=False)
    log = pd.read_csv(tmp_path / LOG_FILE)
    assert (log["cpu_s"] > 0).all() and log["cpu_s"].is_monotonic_increasing
    assert result.cpu_s == pytest.approx(log["cpu_s"].iloc[-1], rel=0.5)


def test_paired_bootstrap_reproduces_a_hand_worked_case() -> None:
    """Detector a scores the two OOD images 1 and -1 against test images at 0: AUROC 1/2.
    Detector b scores both at 1: AUROC 1. A paired resample of the OOD images draws (1, 1),
    (-1, -1) or a mixed pair with probabilities 1/4, 1/4, 1/2, so the difference is 0, -1 or
    -1/2: the 95% interval is [-1, 0] around the point -1/2, and the resamples average -1/2."""
    test, ood_a, ood_b = np.zeros(2), np.array([1.0, -1.0]), np.array([1.0, 1.0])
    point, lo, hi = paired_bootstrap_auroc_difference(test, ood_a, test, ood_b, n_boot=4_000)
    assert (point, lo, hi) == (-0.5, -1.0, 0.0)
    assert point == auroc(test, ood_a) - auroc(test, ood_b)
    # identical detectors: every paired resample differs by exactly 0
    rng = np.random.default_rng(0)
    s_in, s_out = rng.normal(size=50), rng.normal(0.5, 1, size=40)
    assert paired_bootstrap_auroc_difference(s_in, s_out, s_in, s_out, n_boot=50) == (0, 0, 0)
    with pytest.raises(ValueError, match="same images"):
        paired_bootstrap_auroc_difference(s_in, s_out, s_in[:10], s_out, n_boot=5)
    assert math.isfinite(point)


@pytest.mark.slow
def test_a_model_that_predates_the_split_loads_only_as_a_flagged_stand_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_root: Path) -> None:
    """Forge the checkpoint of a model trained before the held-out split existed (its record
    without an index range) and check that the registry loads it only as a stale stand-in, with
    a warning, a predecessor of nothing, and no fits on the held-out split."""
    monkeypatch.setenv("OOD_BUILD_DIR", str(tmp_path / "build"))
    fresh = registry.get("glow", "fashion_mnist", "smoke", data_root=data_root, progress=False)
    root = registry.checkpoint_root("smoke")
    old = dataclasses.replace(fresh.spec, train_data={
        k: v for k, v in fresh.spec.train_data.items() if k != "index_range"})
    (root / fresh.key).rename(root / old.key)
    record = {**fresh.record, "key": old.key, "train_data": {
        k: v for k, v in fresh.record["train_data"].items() if k != "index_range"}}
    (root / old.key / "record.json").write_text(json.dumps(record))
    (root / "manifest.json").write_text(json.dumps({old.key: record}))
    assert registry.legacy_spec(fresh.spec).key == old.key
    with pytest.warns(registry.StaleModelWarning, match="retrain it with"):
        stale = registry.get("glow", "fashion_mnist", "smoke", data_root=data_root,
                             allow_training=False)
    assert stale.key == old.key and "fashion_mnist_val included" in stale.stale
    assert registry.predecessor(stale) is None
    with pytest.raises(store.FitDataError, match="include held-out images"):
        stale.fit_split(store.load("fashion_mnist", "val", data_root))
    with pytest.raises(registry.CheckpointError):  # nothing stands in for another seed
        registry.get("glow", "fashion_mnist", "smoke", seed=5, data_root=data_root,
                     allow_training=False)
