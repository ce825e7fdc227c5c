"""Profiles: how big each model is and how long it trains, per compute budget.

- ``smoke``: CI. Tiny models, a few dozen steps on a 2,000-image subset; seconds per chapter.
  Its numbers test the pipeline, not the paper.
- ``cpu``: real results on a 2-core CPU. Each model trains on one thread, the CIFAR-10 models
  for up to ~2 h 20 min, the others for ~40 minutes or less; the checkpoints trained under this
  profile ship with the repository (``checkpoints/``).
- ``paper``: the configuration of the Glow paper (L=3, K=32, 512 hidden channels, Adamax
  lr 1e-3) for a GPU.

A model is named by ``(model, dataset, profile)``; :mod:`ood_lib.zoo.registry` turns that into
a checkpoint. Each model family sets its own size per profile and image kind and its ``cpu``
step budget (``SIZES`` and ``CPU_STEPS`` in its module under :mod:`ood_lib.models`); the
optimisation settings below are shared by every family.
"""

from __future__ import annotations

from ood_lib import catalogue
from ood_lib.training.loop import TrainConfig

# Images used for training per profile (None = the whole train split available).
TRAIN_IMAGES: dict[str, int | None] = {"smoke": 2_000, "cpu": None, "paper": None}

_TRAIN = {
    "smoke": dict(steps=30, batch_size=16, warmup_steps=10, eval_every=10, eval_images=64,
                  checkpoint_every=15, init_batch_size=64),
    "cpu": dict(batch_size=64, warmup_steps=200, eval_every=250, eval_images=500,
                checkpoint_every=250, init_batch_size=256),
    "paper": dict(steps=100_000, batch_size=64, warmup_steps=5_000, eval_every=1_000,
                  eval_images=2_000, checkpoint_every=1_000, init_batch_size=512),
}

# Learning-rate schedule per training set outside smoke. The CIFAR-10 models, retrained for
# ~2 h on the reduced split, decay with a cosine. Fashion-MNIST keeps the constant rate: at its
# 6,000-step budget the Glow trained with a cosine decay on the reduced split ended at 3.959
# test bits/dim (first 500 test images) against 3.784 for the constant rate, the decay cutting
# progress short (its log: benchmarks/pilots/fashion_mnist_glow_cosine/). notMNIST's models
# keep the constant rate too (their keys stay).
LR_SCHEDULES: dict[str, str] = {"cifar10": "cosine"}

# Bits/dim each profile's CIFAR-10 models were retrained to reach, on all offline
# CIFAR-10-Test images, within ~2 h 20 min of one CPU thread each: targets set before the
# retraining from power-law fits to the earlier runs' logs, not results. The scorecard shows each
# model against its target (met, or the shortfall beside its learning curve).
BPD_TARGETS: dict[str, dict[tuple[str, str], float]] = {
    "cpu": {("glow", "cifar10"): 3.85, ("glow_cv", "cifar10"): 3.90,
            ("pixelcnn", "cifar10"): 4.2, ("vae", "cifar10"): 5.2},
}


def train_config(dataset: str, profile: str, cpu_steps: dict[str, int]) -> TrainConfig:
    """Optimisation settings of a profile; under ``cpu`` the step budget is the model
    family's (``cpu_steps[dataset]``), sized for at most ~2 h 20 min of one CPU thread."""
    catalogue.check(profile, dataset)
    kwargs = dict(_TRAIN[profile])
    if profile != "smoke":
        kwargs["lr_schedule"] = LR_SCHEDULES.get(dataset, "constant")
    if profile == "cpu":
        if dataset not in cpu_steps:
            raise ValueError(f"this model family has no cpu step budget for {dataset!r} "
                             f"(it is trained on {sorted(cpu_steps)})")
        kwargs["steps"] = cpu_steps[dataset]
    return TrainConfig(**kwargs)
