"""Profiles: how big each model is and how long it trains, per compute budget.

- ``smoke``: CI. Tiny models, a few dozen steps on a 2,000-image subset; seconds per chapter.
  Its numbers test the pipeline, not the paper.
- ``cpu``: real results on a 2-core CPU. Each model trains in at most ~40 minutes there; the
  checkpoints trained under this profile ship with the repository (``checkpoints/``).
- ``paper``: the configuration of the Glow paper (L=3, K=32, 512 hidden channels, Adamax
  lr 1e-3) for a GPU.

A model is named by ``(model, dataset, profile)``; :mod:`ood_lib.registry` turns that into
a checkpoint. New model families add a builder there and a row to ``MODEL_CONFIGS`` here.
"""

from __future__ import annotations

from ood_lib.train import TrainConfig

PROFILES = ("smoke", "cpu", "paper")

# In-distribution training sets and the OOD test set each is paired with in the paper.
PAIRS: dict[str, str] = {"fashion_mnist": "mnist", "notmnist": "mnist", "cifar10": "svhn"}

# Images used for training per profile (None = the whole train split available).
TRAIN_IMAGES: dict[str, int | None] = {"smoke": 2_000, "cpu": None, "paper": None}

_GLOW_SIZE = {  # (levels, steps K, hidden) by (profile, image kind)
    ("smoke", "grey"): (2, 2, 16),
    ("smoke", "rgb"): (2, 2, 16),
    ("cpu", "grey"): (2, 8, 96),
    ("cpu", "rgb"): (3, 8, 128),
    ("paper", "grey"): (2, 32, 512),
    ("paper", "rgb"): (3, 32, 512),
}

_TRAIN = {
    "smoke": dict(steps=30, batch_size=16, warmup_steps=10, eval_every=10, eval_images=64,
                  checkpoint_every=15, init_batch_size=64),
    "cpu": dict(batch_size=64, warmup_steps=200, eval_every=250, eval_images=500,
                checkpoint_every=250, init_batch_size=256),
    "paper": dict(steps=100_000, batch_size=64, warmup_steps=5_000, eval_every=1_000,
                  eval_images=2_000, checkpoint_every=1_000, init_batch_size=512),
}

# Steps of the cpu profile per training set, sized for ~40 minutes or less on 2 cores.
_CPU_STEPS = {"fashion_mnist": 6_000, "notmnist": 4_000, "cifar10": 3_500}

IMAGE_GEOMETRY = {  # dataset -> (channels, size)
    "cifar10": (3, 32), "svhn": (3, 32),
    "mnist": (1, 28), "fashion_mnist": (1, 28), "notmnist": (1, 28),
}


def _check(profile: str, dataset: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    if dataset not in IMAGE_GEOMETRY:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {tuple(IMAGE_GEOMETRY)}")


def model_config(model: str, dataset: str, profile: str) -> dict:
    """Keyword arguments of the model's constructor config."""
    _check(profile, dataset)
    channels, size = IMAGE_GEOMETRY[dataset]
    if model not in ("glow", "glow_cv"):
        raise ValueError(f"unknown model {model!r}; known: 'glow', 'glow_cv'")
    levels, steps, hidden = _GLOW_SIZE[(profile, "rgb" if channels == 3 else "grey")]
    return dict(in_channels=channels, image_size=size, levels=levels, steps=steps,
                hidden=hidden, additive=model == "glow_cv", lu=True, learn_top=True)


def train_config(model: str, dataset: str, profile: str) -> TrainConfig:
    """Optimisation settings; the same for every model family of a profile."""
    _check(profile, dataset)
    kwargs = dict(_TRAIN[profile])
    if profile == "cpu":
        kwargs["steps"] = _CPU_STEPS[dataset]
    return TrainConfig(**kwargs)
