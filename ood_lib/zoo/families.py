"""The model families of the book and their configurations: one entry per family (its class, its
sizes per profile and image kind, its ``cpu`` step budget), and the model and training
configuration of "family M on dataset D under profile P" that :mod:`ood_lib.zoo.registry`
hashes into the model's key. A new family is one module in :mod:`ood_lib.models` plus one
entry in :data:`MODELS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ood_lib import catalogue
from ood_lib.models import glow, pixelcnn, vae
from ood_lib.models.base import DensityModel
from ood_lib.training import profiles
from ood_lib.training.loop import TrainConfig


@dataclass(frozen=True)
class Family:
    """A model family: its class, its config dataclass, its size per ``(profile, image kind)``,
    its ``cpu`` step budget per training set, and config fields fixed for this registry name."""

    model_cls: type[DensityModel]
    config_cls: type
    sizes: dict[tuple[str, str], dict]
    cpu_steps: dict[str, int]  # its keys are the training sets the family is trained on
    fixed: dict = field(default_factory=dict)
    train_overrides: dict = field(default_factory=dict)  # TrainConfig fields, cpu and paper
    # Samples drawn once when training ends and kept with the checkpoint (for families whose
    # sampling is too slow to run in a book build: thousands of sequential passes).
    n_samples: int = 0


# Registry name -> family. A new family is one module in ood_lib.models plus one entry here.
MODELS: dict[str, Family] = {
    "glow": Family(glow.Glow, glow.GlowConfig, glow.SIZES, glow.CPU_STEPS,
                   dict(additive=False, lu=True, learn_top=True)),
    # The constant-volume Glow of the paper's Section 4: additive couplings, log|det| constant.
    "glow_cv": Family(glow.Glow, glow.GlowConfig, glow.SIZES, glow.CPU_STEPS,
                      dict(additive=True, lu=True, learn_top=True)),
    "pixelcnn": Family(pixelcnn.PixelCNN, pixelcnn.PixelCNNConfig, pixelcnn.SIZES,
                       pixelcnn.CPU_STEPS, n_samples=36),
    "vae": Family(vae.VAE, vae.VAEConfig, vae.SIZES, vae.CPU_STEPS,
                  train_overrides=vae.TRAIN_OVERRIDES, n_samples=64),
}


def _family(model: str) -> Family:
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; registered: {sorted(MODELS)}")
    return MODELS[model]


def model_config(model: str, dataset: str, profile: str) -> dict:
    """Keyword arguments of the model's config dataclass (hashed into its key)."""
    family = _family(model)
    catalogue.check(profile, dataset)
    channels, size = catalogue.geometry(dataset)
    kwargs = dict(in_channels=channels, image_size=size,
                  **family.sizes[(profile, catalogue.image_kind(dataset))], **family.fixed)
    return family.config_cls(**kwargs).to_dict()


def train_config(model: str, dataset: str, profile: str, noise_fraction: float = 0.0,
                 l2: float = 0.0) -> TrainConfig:
    """The training configuration: the profile's, with the family's ``cpu`` step budget and,
    outside ``smoke``, its overrides; ``noise_fraction`` > 0 and ``l2`` (the weight penalty's
    lambda) >= 0 for a likelihood-ratio background model (:mod:`ood_lib.zoo.background`)."""
    family = _family(model)
    config = profiles.train_config(dataset, profile, family.cpu_steps).to_dict()
    if profile != "smoke":
        config.update(family.train_overrides)
    return TrainConfig(**config, noise_fraction=noise_fraction, l2=l2)
