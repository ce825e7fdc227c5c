r"""The models scored beside a run's own: its WAIC ensemble and its likelihood-ratio background.

**WAIC** (Choi, Jang & Alemi 2018) needs $M \ge 2$ models of the same data trained
independently: the book's ensembles are the shipped Glow (seed 0) and Glows trained with the
seeds in :data:`ENSEMBLE_SEEDS` and the same configuration and budget; train them with::

    python -m ood_lib.zoo.ensemble --profile cpu [--retrain]

(one member: ``python -m ood_lib.zoo.registry train --profile cpu --model glow --dataset notmnist
--seed 1``).

A seed sets the initialisation, the batch order and the dequantization noise
(:mod:`ood_lib.training.loop`), so the members differ in everything but data and configuration.

**The background model** of the likelihood ratio is :func:`ood_lib.zoo.background.get`'s, for
the families of :data:`ood_lib.zoo.background.FAMILIES` (PixelCNN and Glow).

:func:`companions` gathers both for a run; :meth:`Companions.log_px` scores them on an image
set through the content-keyed cache.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ood_lib import catalogue
from ood_lib.zoo import background, registry
from ood_lib.zoo.registry import TrainedModel

# The family of the ensembles, and training set -> its seeds (seed 0 is the shipped model).
ENSEMBLE_MODEL = "glow"
ENSEMBLE_SEEDS: dict[str, tuple[int, ...]] = {"fashion_mnist": (0, 1, 2), "notmnist": (0, 1, 2)}


@dataclass(frozen=True)
class Companions:
    """A run's background model (or ``None``) and the *other* members of its ensemble."""

    background: TrainedModel | None = None
    members: tuple[TrainedModel, ...] = ()
    # Companions left out, one line each naming the score that needs it, why (missing, or a
    # stale stand-in beside a retrained model) and the command that trains it.
    left_out: tuple[str, ...] = ()

    def log_px(self, score: Callable[[TrainedModel], np.ndarray],
                    own_log_px: np.ndarray) -> dict[str, np.ndarray]:
        """``log_px_bg`` (the background model's per-image log-likelihoods) and
        ``log_px_members`` (``[M, N]``: ``own_log_px``, the run's own, then each other
        member's), for the companions the run has; ``score(model)`` gives a companion's
        per-image log-likelihoods of the images in question."""
        out = {}
        if self.background is not None:
            out["log_px_bg"] = score(self.background)
        if self.members:
            out["log_px_members"] = np.stack([own_log_px] + [score(m) for m in self.members])
        return out


def companions(model: str, dataset: str, profile: str, data_root: str | Path | None = None,
               allow_training: bool | None = None) -> Companions:
    """The companions of ``model`` (seed 0) trained on ``dataset``: its background model where
    :func:`ood_lib.zoo.background.datasets` lists the training set for the family, and for a Glow
    its ensemble's other members where :data:`ENSEMBLE_SEEDS` lists them. Missing checkpoints
    are trained where allowed (``None``: see :func:`ood_lib.zoo.registry.training_allowed`); else
    the companion is left out, with a line saying which score needs it and the command that
    trains it. A stale companion beside a retrained model is left out the same way."""
    has_background = model in background.FAMILIES and dataset in background.datasets(model)
    seeds = ENSEMBLE_SEEDS.get(dataset, ())[1:] if model == ENSEMBLE_MODEL else ()
    if not has_background and not seeds:
        return Companions()
    own = registry.get(model, dataset, profile, data_root=data_root,
                       allow_training=allow_training, progress=False)
    left_out = []

    def usable(m: TrainedModel, line: str) -> bool:
        # never a companion of an older configuration beside a retrained model (a stale
        # model's companions are as stale as it is, and the chapters say so)
        if m.stale is not None and own.stale is None:
            left_out.append(line)
            return False
        return True

    bg = None
    if has_background:
        try:
            bg = background.get(model, dataset, profile, data_root, allow_training)[0]
        except registry.CheckpointError as exc:
            left_out.append(f"likelihood ratio: {exc}")
    if bg is not None and not usable(bg, (
            f"likelihood ratio: the background model {bg.key} is a stale stand-in, trained "
            f"before the held-out split; choose and train it anew with "
            f"`{background.command(model, dataset, profile)}`")):
        bg = None
    members = []
    for s in seeds:
        try:
            members.append(registry.get(model, dataset, profile, seed=s, data_root=data_root,
                                        allow_training=allow_training, progress=False))
        except registry.CheckpointError:
            left_out.append(f"WAIC: no ensemble member with seed {s}; train it with "
                            f"`{registry.train_command(model, dataset, profile, seed=s)}`")
    members = [m for m in members if usable(m, f"WAIC: {m.stale}")]
    return Companions(background=bg, members=tuple(members), left_out=tuple(left_out))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the Glow ensembles' extra members.")
    parser.add_argument("--profile", default="cpu", choices=catalogue.PROFILES)
    parser.add_argument("--data-root")
    parser.add_argument("--retrain", action="store_true", help="delete and retrain the members")
    args = parser.parse_args(argv)
    for dataset, seeds in ENSEMBLE_SEEDS.items():
        for seed in seeds[1:]:
            trained = registry.get(ENSEMBLE_MODEL, dataset, args.profile, seed=seed,
                                   data_root=args.data_root, allow_training=True,
                                   retrain=args.retrain)
            print(f"{trained.key} (seed {seed}): final {trained.record['final_bpd']}")


if __name__ == "__main__":
    main()
