r"""The models scored beside a run's own: its WAIC ensemble and its likelihood-ratio background.

**WAIC** (Choi, Jang & Alemi 2018) needs $M \ge 2$ models of the same data trained
independently: the book's ensembles (:data:`ENSEMBLES`) are Glows of one configuration and
one budget, seeds 0, 1, 2. At the headline budget member 0 is the shipped Glow and the others
are trained as it was. Where the headline run is too long to train three times (CIFAR-10,
about two CPU-hours each), every member stops at a shorter budget: member 0 is then the
headline run itself at that step (:func:`ood_lib.zoo.registry.snapshot` replays it and checks
the replay against the shipped log), never a different run. Train them with::

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

ENSEMBLE_MODEL = "glow"  # the family of the ensembles


@dataclass(frozen=True)
class Ensemble:
    """A WAIC ensemble: its members' seeds (member 0 first) and their training budget in steps
    (``None``: the headline budget, member 0 the shipped model)."""

    seeds: tuple[int, ...]
    steps: int | None = None

    @property
    def full_budget(self) -> bool:
        return self.steps is None

    @property
    def trained_seeds(self) -> tuple[int, ...]:
        """The seeds trained for the ensemble: all but 0 at the headline budget (member 0 is
        the shipped model), all of them at a shorter one."""
        return self.seeds[1:] if self.full_budget else self.seeds


# Training set -> its ensemble, under the cpu profile (smoke and paper train every member to
# the headline budget: see ensemble_for).
ENSEMBLES: dict[str, Ensemble] = {"fashion_mnist": Ensemble((0, 1, 2)),
                                  "notmnist": Ensemble((0, 1, 2)),
                                  "cifar10": Ensemble((0, 1, 2), steps=2_500)}


def ensemble_for(dataset: str, profile: str) -> Ensemble | None:
    """The WAIC ensemble of the Glow trained on ``dataset`` under ``profile`` (``None``: none).
    A shorter budget is a cpu-profile compromise: under smoke and paper every member trains to
    the headline budget."""
    e = ENSEMBLES.get(dataset)
    return e if e is None or profile == "cpu" else Ensemble(e.seeds)


def headline_seeds(dataset: str, profile: str, seed: int = 0) -> tuple[int, ...]:
    """The seeds of the Glows trained on ``dataset`` at the headline budget: the ensemble's,
    where it has that budget, else ``seed`` alone."""
    e = ensemble_for(dataset, profile)
    return e.seeds if e is not None and e.full_budget else (seed,)


def member(dataset: str, profile: str, seed: int, data_root: str | Path | None = None,
           allow_training: bool | None = None, retrain: bool = False) -> TrainedModel:
    """One member of ``dataset``'s ensemble: the Glow of ``seed`` at the ensemble's budget
    (``retrain``: delete it and train it again)."""
    e = ensemble_for(dataset, profile)
    if e is None or seed not in e.seeds:
        raise ValueError(f"no WAIC ensemble member with seed {seed} for {dataset!r}")
    if e.full_budget:
        return registry.get(ENSEMBLE_MODEL, dataset, profile, seed=seed, data_root=data_root,
                            allow_training=allow_training, retrain=retrain, progress=False)
    return registry.snapshot(ENSEMBLE_MODEL, dataset, profile, e.steps,
                             _member_command(dataset, profile, seed), seed=seed,
                             data_root=data_root, allow_training=allow_training,
                             retrain=retrain, progress=False)


@dataclass(frozen=True)
class Companions:
    """A run's background model (or ``None``) and the *other* members of its ensemble; and its
    member 0 where that is not the run's own model (an ensemble at a shorter budget)."""

    background: TrainedModel | None = None
    members: tuple[TrainedModel, ...] = ()
    member_0: TrainedModel | None = None
    # Companions left out, one line each naming the score that needs it, why (missing, or a
    # stale stand-in beside a retrained model) and the command that trains it.
    left_out: tuple[str, ...] = ()

    def log_px(self, score: Callable[[TrainedModel], np.ndarray],
                    own_log_px: np.ndarray) -> dict[str, np.ndarray]:
        """``log_px_bg`` (the background model's per-image log-likelihoods) and
        ``log_px_members`` (``[M, N]``: member 0's, which is ``own_log_px``, the run's own,
        unless the ensemble has its own :attr:`member_0`, then each other member's), for the
        companions the run has; ``score(model)`` gives a companion's per-image
        log-likelihoods of the images in question."""
        out = {}
        if self.background is not None:
            out["log_px_bg"] = score(self.background)
        if self.members:
            first = own_log_px if self.member_0 is None else score(self.member_0)
            out["log_px_members"] = np.stack([first] + [score(m) for m in self.members])
        return out

    @property
    def ensemble(self) -> tuple[TrainedModel, ...]:
        """The ensemble's members other than the run's own model (all of them at a shorter
        budget), for tables."""
        return ((self.member_0,) if self.member_0 else ()) + self.members


def companions(model: str, dataset: str, profile: str, data_root: str | Path | None = None,
               allow_training: bool | None = None) -> Companions:
    """The companions of ``model`` (seed 0) trained on ``dataset``: its background model where
    :func:`ood_lib.zoo.background.datasets` lists the training set for the family, and for a Glow
    its ensemble's members where :func:`ensemble_for` has an ensemble. Missing checkpoints
    are trained where allowed (``None``: see :func:`ood_lib.zoo.registry.training_allowed`); else
    the companion is left out, with a line saying which score needs it and the command that
    trains it. A stale companion beside a retrained model is left out the same way."""
    has_background = model in background.FAMILIES and dataset in background.datasets(model)
    e = ensemble_for(dataset, profile) if model == ENSEMBLE_MODEL else None
    seeds = e.trained_seeds if e is not None else ()
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
            members.append(member(dataset, profile, s, data_root, allow_training))
        except registry.CheckpointError:
            left_out.append(f"WAIC: no ensemble member with seed {s}; train it with "
                            f"`{_member_command(dataset, profile, s)}`")
    members = [m for m in members if usable(m, f"WAIC: {m.stale}")]
    if len(members) < len(seeds):  # WAIC needs every member: none is scored with fewer
        members = []
    member_0 = members.pop(0) if members and not e.full_budget else None
    return Companions(background=bg, members=tuple(members), member_0=member_0,
                      left_out=tuple(left_out))


def _member_command(dataset: str, profile: str, seed: int) -> str:
    e = ensemble_for(dataset, profile)
    if e.full_budget:
        return registry.train_command(ENSEMBLE_MODEL, dataset, profile, seed=seed)
    return f"python -m ood_lib.zoo.ensemble --profile {profile} --dataset {dataset}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the Glow ensembles' extra members.")
    parser.add_argument("--profile", default="cpu", choices=catalogue.PROFILES)
    parser.add_argument("--data-root")
    parser.add_argument("--dataset", action="append", choices=sorted(ENSEMBLES))
    parser.add_argument("--retrain", action="store_true",
                        help="delete and retrain the members at the headline budget")
    args = parser.parse_args(argv)
    for dataset in args.dataset or list(ENSEMBLES):
        e = ensemble_for(dataset, args.profile)
        for seed in e.trained_seeds:
            trained = member(dataset, args.profile, seed, args.data_root, allow_training=True,
                             retrain=args.retrain)
            print(f"{trained.key} (seed {seed}, {trained.record['steps']:,} steps): final "
                  f"{trained.record['final_bpd']}")


if __name__ == "__main__":
    main()
