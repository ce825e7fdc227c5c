"""WAIC ensembles: members at the headline budget, or every member at a shorter one with the
shipped run itself as member 0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ood_lib.zoo import ensemble, families, registry


def test_the_cpu_cifar10_ensemble_is_shorter_and_the_others_are_not() -> None:
    cifar = ensemble.ensemble_for("cifar10", "cpu")
    assert cifar.seeds == (0, 1, 2) and cifar.steps is not None
    assert cifar.steps < families.train_config("glow", "cifar10", "cpu").steps
    assert ensemble.ensemble_for("cifar10", "smoke").full_budget
    assert ensemble.ensemble_for("fashion_mnist", "cpu").full_budget
    assert ensemble.ensemble_for("svhn", "cpu") is None
    # the seeds of headline-budget Glows (the spread over seeds): never a shorter ensemble's
    assert ensemble.headline_seeds("cifar10", "cpu") == (0,)
    assert ensemble.headline_seeds("notmnist", "cpu") == (0, 1, 2)


@pytest.mark.slow
def test_a_shorter_ensemble_scores_its_own_member_0(build: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Every member of a shorter ensemble, member 0 included, is scored at its budget: member 0
    is the shipped run at that step (a snapshot), not the shipped model."""
    steps = families.train_config("glow", "notmnist", "smoke").eval_every
    monkeypatch.setattr(ensemble, "ensemble_for",
                        lambda dataset, profile: ensemble.Ensemble((0, 1), steps=steps))
    monkeypatch.setattr(ensemble.background, "datasets", lambda model: ())  # no ratio here
    own = registry.get("glow", "notmnist", "smoke", progress=False)
    bundle = ensemble.companions("glow", "notmnist", "smoke", allow_training=True)
    assert bundle.member_0.key == own.key + f".step{steps}"
    assert [m.spec.seed for m in bundle.ensemble] == [0, 1]
    assert all(m.record["steps"] == steps for m in bundle.ensemble)
    scored = {m.key: np.full(3, float(i)) for i, m in enumerate(bundle.ensemble)}
    out = bundle.log_px(lambda m: scored[m.key], own_log_px=np.full(3, -99.0))
    np.testing.assert_array_equal(out["log_px_members"], [[0.0] * 3, [1.0] * 3])
    # without every member there is no WAIC: the missing one is named with its command
    monkeypatch.setattr(ensemble, "ensemble_for",
                        lambda dataset, profile: ensemble.Ensemble((0, 1, 5), steps=steps))
    partial = ensemble.companions("glow", "notmnist", "smoke", allow_training=False)
    assert not partial.ensemble
    assert any("seed 5" in line and "ood_lib.zoo.ensemble" in line for line in partial.left_out)
