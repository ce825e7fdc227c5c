r"""Background models for the likelihood ratio (Ren et al., NeurIPS 2019), chosen as they chose
them: a noise level $\mu$ crossed with an L2 weight penalty $\lambda$.

The log-likelihood of a model trained on images mixes two things: *background* statistics
shared by natural images (smooth regions, local correlations, the share of flat pixels) and
the *semantic* content of the training set. Ren et al. train a second model, the background
model $p_{\text{bg}}$, on training images in which a fraction $\mu$ of the subpixels is
replaced by uniform noise (:func:`ood_lib.transforms.corrupt`), with an L2 penalty of weight
$\lambda$ on its kernel weights (:func:`ood_lib.training.loop.l2_penalty`). The noise destroys the
semantics and keeps much of the background, so the background term cancels in the likelihood
ratio; with the book's convention (larger = more OOD) the score is

$$s(x) = \log p_{\text{bg}}(x) - \log p(x) = -\text{LLR}(x)$$

(:func:`ood_lib.scores.likelihood_ratio`).

**Same family, same configuration.** The background model is the foreground model's family
with the foreground's registry configuration (model size, optimiser, budget, seed, training
images); only $\mu$ and $\lambda$ differ, and the foreground has $\mu = \lambda = 0$. The
families are :data:`FAMILIES`: the autoregressive PixelCNN, the model class of Ren et al.
(PixelCNN++), is the main row; Glow/Glow the second.

**The grid** is Ren et al.'s released one, $\mu \in$ :data:`MU_GRID` crossed with
$\lambda \in$ :data:`L2_GRID`. Each candidate is trained for the first :data:`SELECT_FRACTION`
of the full step budget (its own run stopped early, :func:`ood_lib.zoo.registry.train_partial`)
and scored on a *validation* pair; the candidate with the highest validation AUROC of the
ratio wins (ties: the smaller $\mu$, then the smaller $\lambda$). Its run continues to the full
budget (exact resume: the short run *is* its first steps) and the other candidates' runs are
deleted.

**The validation pairs** are Ren et al.'s: the in-distribution side is the first
:data:`VALIDATION_IMAGES` images of the held-out split (which neither model trained on; for
notMNIST the even positions of its test split, see :mod:`ood_lib.data`); the OOD side
(:data:`VALIDATION_OOD`) is notMNIST for Fashion-MNIST and, for CIFAR-10, the *next* as many
held-out CIFAR-10 images in grey (:func:`ood_lib.transforms.grey`: BT.601 luma in
all three channels). notMNIST, which they did not run, is validated against Fashion-MNIST. The
test OOD sets (MNIST, SVHN) are never read while choosing: not to score, and not to monitor a
background model's training (:func:`ood_lib.zoo.registry.get` leaves them out of its log).

**The edge rule.** The grid is extended along $\mu$ (to :data:`MU_EXTENSION`: 0.05 below,
0.5 above) only when the choice lands on its edge. :func:`edge` says so and names the
extension; the command never trains it on its own: ``--extend`` does, then chooses again over
the extended grid. A build that may train (``smoke``, ``--train-missing``) follows the whole
rule, extension included.

**Records.** Every grid point's validation AUROC, the choice and the edge are kept as
``background-<family>-<dataset>.json`` beside the checkpoints, written after each candidate
(a killed run resumes where it stopped; a scored candidate is never trained or scored again).
The Glow backgrounds shipped before this rule, ``background-<dataset>.json``, chose $\mu$ alone
(no penalty) on the first *training* images against Fashion-MNIST for CIFAR-10; :func:`selection`
still reads them, as records of the old rule (``rule`` = :data:`OLD_RULE`).

Train a grid, its choice and the chosen model (``--grid-only``: the candidates alone, which
need no foreground, ``--shard K/N`` to share them among N processes; ``--extend``: the
extension of an edge choice)::

    python -m ood_lib.zoo.background --profile cpu --model pixelcnn --dataset cifar10
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from ood_lib import catalogue
from ood_lib.catalogue import FAMILY_NAMES
from ood_lib.data import image_sets, store
from ood_lib.data.image_sets import EvalSet
from ood_lib.metrics import auroc
from ood_lib.models.base import DensityModel, evaluate
from ood_lib.scores import likelihood_ratio
from ood_lib.training.loop import LOG_FILE
from ood_lib.transforms import grey
from ood_lib.zoo import families, registry
from ood_lib.zoo.registry import CheckpointError, TrainedModel

# Families with background models: the main row (Ren et al.'s model class) first.
FAMILIES = ("pixelcnn", "glow")
# Ren et al.'s released grid: noise level mu x L2 penalty lambda (nats per image, Keras l2).
MU_GRID = (0.1, 0.2, 0.3)
L2_GRID = (0.0, 10.0, 100.0)
# The mu added below or above MU_GRID when the choice lands on its edge (at most these).
MU_EXTENSION = (0.05, 0.5)
# Share of the full step budget each candidate is trained for before the choice.
SELECT_FRACTION = 0.25
# Training set -> the OOD side of its validation pair (never its test OOD partner); GREY: the
# training set's own held-out images after those of the in-distribution side, in grey.
GREY = "grey"
VALIDATION_OOD = {"fashion_mnist": "notmnist", "notmnist": "fashion_mnist", "cifar10": GREY}
VALIDATION_IMAGES = {"smoke": 64, "cpu": 1_000, "paper": 2_000}
# The rule of this module and the one of the Glow choices shipped before it, as records name them.
RULE = "mu x lambda, held-out images (Ren et al.)"
OLD_RULE = "mu alone, training images"


def datasets(family: str) -> tuple[str, ...]:
    """The training sets ``family`` has background models for: those it is trained on."""
    return tuple(d for d in families.MODELS[family].cpu_steps if d in VALIDATION_OOD)


def command(family: str, dataset: str, profile: str, option: str = "") -> str:
    """The shell command that runs the rule for one family and training set."""
    return (f"python -m ood_lib.zoo.background --profile {profile} --model {family} "
            f"--dataset {dataset}" + (f" {option}" if option else ""))


def selection_path(family: str, dataset: str, profile: str) -> Path:
    """Where the record of the choice for ``family`` on ``dataset`` is kept."""
    return registry.checkpoint_root(profile) / f"background-{family}-{dataset}.json"


def old_selection_path(dataset: str, profile: str) -> Path:
    """Where the old rule kept its choice for the Glow on ``dataset``."""
    return registry.checkpoint_root(profile) / f"background-{dataset}.json"


def steps(family: str, dataset: str, profile: str) -> tuple[int, int]:
    """``(short, full)``: the steps of a candidate's short run and of the full run."""
    full = families.train_config(family, dataset, profile).steps
    return max(1, round(SELECT_FRACTION * full)), full


def grid_points(extension: Sequence[float] = ()) -> list[tuple[float, float]]:
    """The candidates ``(mu, lambda)``: :data:`MU_GRID` and the ``extension`` crossed with
    :data:`L2_GRID`, in increasing order."""
    return [(mu, l2) for mu in sorted({*MU_GRID, *extension}) for l2 in L2_GRID]


def candidate_keys(family: str, dataset: str, profile: str, points: Sequence[tuple[float, float]],
                   data_root: str | Path | None = None) -> dict[tuple[float, float], str]:
    """The run key of the background model of each grid point ``(mu, lambda)``: the
    foreground's spec with ``mu`` and ``l2`` (the training split read once for all points)."""
    split = registry.training_split(dataset, profile, data_root)
    return {(mu, l2): registry.make_spec(family, dataset, profile, split, noise_fraction=mu,
                                         l2=l2).key for mu, l2 in points}


def validation_sets(foreground: TrainedModel, profile: str, data_root: str | Path | None = None
                    ) -> tuple[EvalSet, EvalSet]:
    """The validation pair of the foreground model's training set (see the module docstring),
    in its geometry: the first ``n`` held-out images (which ``foreground`` must not have
    trained on, :meth:`~ood_lib.zoo.registry.TrainedModel.fit_split`) and the first ``n`` of the
    :data:`VALIDATION_OOD` set, or held-out images ``n`` to ``2n`` in grey."""
    dataset = foreground.spec.dataset
    if dataset not in VALIDATION_OOD:
        raise ValueError(f"no validation OOD set for {dataset!r}; known: {sorted(VALIDATION_OOD)}")
    channels, _ = catalogue.geometry(dataset)
    held_out = foreground.fit_split(store.load(dataset, "val", data_root))
    return _validation_pair(dataset, held_out, channels, VALIDATION_IMAGES[profile], data_root)


def _validation_pair(dataset: str, held_out: store.Split, channels: int, n: int,
                     data_root: str | Path | None = None) -> tuple[EvalSet, EvalSet]:
    if VALIDATION_OOD[dataset] != GREY:
        other = store.load(VALIDATION_OOD[dataset], "test", data_root)
        return (_named(image_sets.from_split(held_out, "validation", channels, n), n),
                _named(image_sets.from_split(other, "validation OOD", channels, n), n))
    if held_out.n < 2 * n:
        raise ValueError(f"{held_out.label} holds {held_out.n:,} images; the validation pair "
                         f"needs {2 * n:,}")
    both = image_sets.from_split(held_out, "validation", channels, 2 * n)
    val_in = replace(both, images=both.images[:n],
                     coverage=f"first {n:,} of {held_out.n:,} here")
    # grey(x): BT.601 luma Y = 0.299 R + 0.587 G + 0.114 B in all three channels
    val_ood = EvalSet(f"{both.name}-grey", f"{held_out.label} in grey", "validation OOD",
                      grey(both.images[n:]), f"images {n + 1:,}-{2 * n:,} of {held_out.n:,} "
                      f"here, BT.601 luma in all three channels")
    return _named(val_in, n), _named(val_ood, n)


def _named(eval_set: EvalSet, n: int) -> EvalSet:
    """``eval_set`` named apart from the whole split (the score cache is keyed by set name)."""
    return replace(eval_set, name=f"{eval_set.name}-first{n}")


# --- records ----------------------------------------------------------------------------------


def selection(family: str, dataset: str, profile: str) -> dict | None:
    """The record of the choice for ``family`` on ``dataset`` (this rule's; for a Glow without
    one, the old rule's, in the same shape with ``rule`` = :data:`OLD_RULE`), or ``None``.

    Keys: ``rule``, ``family``, ``dataset``, ``profile``, ``foreground`` (the key of the model
    it was chosen for), ``select_steps``, ``full_steps``, ``validation_in``,
    ``validation_ood``, ``grid`` (one entry per candidate: ``mu``, ``l2``, ``key``,
    ``validation_auroc``), ``choice`` (``mu``, ``l2``, ``key``, or ``None`` before the choice)
    and ``edge`` (:func:`edge` of the choice, or ``None``)."""
    path = selection_path(family, dataset, profile)
    if path.exists():
        return json.loads(path.read_text())
    return old_selection(dataset, profile) if family == "glow" else None


def old_selection(dataset: str, profile: str) -> dict | None:
    """The old rule's record for the Glow on ``dataset`` in the shape of :func:`selection`
    (``rule`` = :data:`OLD_RULE`, every ``l2`` 0), or ``None``; its edge is reported but
    was never extended."""
    old = old_selection_path(dataset, profile)
    if not old.exists():
        return None
    raw = json.loads(old.read_text())
    grid = [{"mu": c["mu"], "l2": 0.0, "key": None, "validation_auroc": c["validation_auroc"]}
            for c in raw["grid"]]
    return {"rule": OLD_RULE, "family": raw["model"], "dataset": dataset, "profile": profile,
            "foreground": raw["foreground"], "select_steps": raw["select_steps"],
            "full_steps": raw["full_steps"], "validation_in": raw["validation_in"],
            "validation_ood": raw["validation_ood"], "grid": grid,
            "choice": {"mu": raw["mu"], "l2": 0.0, "key": None},
            "edge": edge(grid, raw["mu"], extend=False)}


def _save(record: dict) -> None:
    path = selection_path(record["family"], record["dataset"], record["profile"])
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)


def best(grid: list[dict]) -> dict:
    """The grid entry with the highest validation AUROC (ties: smaller mu, then smaller
    lambda)."""
    return max(grid, key=lambda c: (c["validation_auroc"], -c["mu"], -c["l2"]))


def edge(grid: list[dict], mu: float, extend: bool = True) -> dict | None:
    """Whether ``mu``, the chosen noise level, lies on an edge of the ``grid``'s noise levels:
    ``None`` if not, else ``{"side": "lower" | "upper", "extend_mu": m}`` with ``m`` the
    nearest level of :data:`MU_EXTENSION` beyond that edge (``None``: none is left, or
    ``extend=False`` for a rule that is not extended)."""
    mus = sorted({c["mu"] for c in grid})
    side = "lower" if mu == mus[0] else "upper" if mu == mus[-1] else None
    if side is None:
        return None
    beyond = [m for m in MU_EXTENSION if (m < mus[0] if side == "lower" else m > mus[-1])]
    nearest = (max if side == "lower" else min)(beyond) if beyond and extend else None
    return {"side": side, "extend_mu": nearest}


def pending_extension(record: dict) -> float | None:
    """The $\\mu$ the edge rule still asks to add to ``record``'s grid, or ``None``."""
    return record["edge"]["extend_mu"] if record["edge"] else None


def unfinished(record: dict) -> str | None:
    """What ``record`` (this rule's) still lacks before its chosen model can be completed,
    with the command that does it; ``None`` when nothing is missing."""
    family, dataset, profile = record["family"], record["dataset"], record["profile"]
    n = len(grid_points(record["extension"]))
    if record["choice"] is None or len(record["grid"]) < n:
        return (f"{len(record['grid'])} of the {n} grid candidates are scored; continue with "
                f"`{command(family, dataset, profile)}`")
    extend_mu = pending_extension(record)
    if extend_mu is not None:
        c = record["choice"]
        return (f"the choice (μ = {c['mu']:g}, λ = {c['l2']:g}) lies on the "
                f"{record['edge']['side']} edge of the μ grid: add μ = {extend_mu:g} with "
                f"`{command(family, dataset, profile, '--extend')}`")
    return None


# --- the rule --------------------------------------------------------------------------------


def foreground(family: str, dataset: str, profile: str, data_root: str | Path | None = None,
               allow_training: bool | None = None) -> TrainedModel:
    """The foreground model the background is chosen for; a stale stand-in is refused (its
    background would be chosen against a model of another configuration)."""
    fg = registry.get(family, dataset, profile, data_root=data_root,
                      allow_training=allow_training, progress=False)
    if fg.stale:
        raise CheckpointError(f"the foreground model is a stale stand-in ({fg.stale}); its "
                              f"background is chosen against the retrained model")
    return fg


def train_grid(family: str, dataset: str, profile: str, data_root: str | Path | None = None,
               extend: bool = False, shard: tuple[int, int] = (0, 1),
               progress: bool = True) -> None:
    """Train every candidate's short run that is not scored yet (resuming killed ones), without
    scoring it: the part of the rule that needs no foreground model. ``extend``: the
    extension the saved choice asks for too (:func:`pending_extension`). ``shard`` ``(k, n)``:
    only the grid points whose position (from 0) is ``k`` modulo ``n``, so that ``n`` processes
    share one grid without training a candidate twice."""
    k, n = shard
    if not 0 <= k < n:
        raise ValueError(f"shard {k}/{n}: need 0 <= k < n")
    record = selection(family, dataset, profile)
    ours = record is not None and record["rule"] == RULE
    extension = [*record["extension"]] if ours else []
    if extend and ours and pending_extension(record) is not None:
        extension.append(pending_extension(record))
    scored = {(c["mu"], c["l2"]) for c in record["grid"]} if ours else set()
    short, full = steps(family, dataset, profile)
    points = grid_points(extension)
    for i, (mu, l2) in enumerate(points, 1):
        if (i - 1) % n != k:
            continue
        if (mu, l2) not in scored:
            registry.train_partial(family, dataset, profile, short, data_root=data_root,
                                   noise_fraction=mu, l2=l2, progress=progress)
        print(f"[{i}/{len(points)}] μ = {mu:g}, λ = {l2:g}: "
              + ("scored" if (mu, l2) in scored else f"trained to step {short:,} of {full:,}"))


def select(family: str, dataset: str, profile: str, data_root: str | Path | None = None,
           extend: bool = False, allow_training: bool | None = None,
           progress: bool = True) -> dict:
    """Score every candidate not scored yet (training what is missing of its short run), then
    choose; with ``extend``, follow the edge rule (:func:`edge`) until the choice is inside the
    grid or the extension is spent. The record is saved after each candidate and returned.
    ``allow_training`` concerns the foreground (:func:`foreground`)."""
    fg = foreground(family, dataset, profile, data_root, allow_training)
    val_in, val_ood = validation_sets(fg, profile, data_root)
    short, full = steps(family, dataset, profile)
    header = {"rule": RULE, "family": family, "dataset": dataset, "profile": profile,
              "foreground": fg.key, "select_steps": short, "full_steps": full,
              "validation_in": f"{val_in.label}: {val_in.coverage}",
              "validation_ood": f"{val_ood.label}: {val_ood.coverage}"}
    record = selection(family, dataset, profile)
    if record is None or record["rule"] != RULE:
        record = {**header, "grid": [], "extension": [], "choice": None, "edge": None}
    elif any(record[k] != v for k, v in header.items()):
        changed = [k for k, v in header.items() if record[k] != v]
        raise CheckpointError(
            f"{selection_path(family, dataset, profile)} was made with another {', '.join(changed)}"
            f"; start again with `{command(family, dataset, profile, '--retrain')}`")
    fg_log_px = {v.role: evaluate(fg.model, v.images)["log_px"] for v in (val_in, val_ood)}
    while True:
        points = grid_points(record["extension"])
        for mu, l2 in points:
            if any((c["mu"], c["l2"]) == (mu, l2) for c in record["grid"]):
                continue
            net, path, run = registry.train_partial(family, dataset, profile, short,
                                                    data_root=data_root, noise_fraction=mu,
                                                    l2=l2, progress=progress)
            # each candidate's CPU time is kept in the record: the losers' folders are deleted
            record["grid"].append({"mu": mu, "l2": l2, "key": path.name.removesuffix(
                registry.SHORT_RUN_SUFFIX), "validation_auroc": validation_auroc(
                net, fg_log_px, val_in, val_ood), "cpu_s": round(run.cpu_s, 1)})
            if path.name.endswith(registry.SHORT_RUN_SUFFIX):  # a finished model's short run
                shutil.rmtree(path)
            _save(record)
            if progress:
                print(f"[{len(record['grid'])}/{len(points)}] μ = {mu:g}, λ = {l2:g}: "
                      f"validation AUROC {record['grid'][-1]['validation_auroc']:.3f}")
        chosen = best(record["grid"])
        record["choice"] = {k: chosen[k] for k in ("mu", "l2", "key")}
        record["edge"] = edge(record["grid"], chosen["mu"])
        _save(record)
        if not extend or pending_extension(record) is None:
            return record
        record["extension"].append(pending_extension(record))


def validation_auroc(background: DensityModel, fg_log_px: dict[str, np.ndarray],
                     val_in: EvalSet, val_ood: EvalSet) -> float:
    """AUROC of the ratio $s(x) = \\log p_{\\text{bg}}(x) - \\log p(x)$ on the validation pair,
    the OOD side positive; ``fg_log_px``: the foreground's log-likelihoods by set role."""
    s = {v.role: likelihood_ratio(fg_log_px[v.role], evaluate(background, v.images)["log_px"])
         for v in (val_in, val_ood)}
    return auroc(s[val_in.role], s[val_ood.role])


def complete(record: dict, data_root: str | Path | None = None,
             progress: bool = True) -> TrainedModel:
    """Delete the runs of the candidates that lost and train the chosen one to the full budget
    (resuming its short run); a choice the rule has not finished with is an error naming the
    command that finishes it (:func:`unfinished`)."""
    problem = unfinished(record)
    if problem:
        raise CheckpointError(problem)
    root = registry.checkpoint_root(record["profile"])
    for c in record["grid"]:
        if c["key"] != record["choice"]["key"]:
            shutil.rmtree(root / c["key"], ignore_errors=True)
    c = record["choice"]
    return registry.get(record["family"], record["dataset"], record["profile"],
                        data_root=data_root, allow_training=True, noise_fraction=c["mu"],
                        l2=c["l2"], progress=progress)


def get(family: str, dataset: str, profile: str, data_root: str | Path | None = None,
        allow_training: bool | None = None) -> tuple[TrainedModel, dict]:
    """The background model of ``family`` on ``dataset`` and the record of its choice (this
    rule's; for a Glow without one, the old rule's). Where training is allowed
    (:func:`ood_lib.zoo.registry.training_allowed`) the whole rule runs first, extension included;
    else what is missing is a :class:`~ood_lib.zoo.registry.CheckpointError` naming the command."""
    allowed = registry.training_allowed(profile) if allow_training is None else allow_training
    if allowed:
        record = select(family, dataset, profile, data_root, extend=True, allow_training=True,
                        progress=False)
        return complete(record, data_root, progress=False), record
    record = selection(family, dataset, profile)
    if record is None:
        raise CheckpointError(
            f"no background {FAMILY_NAMES[family]} for {dataset} under {profile!r} "
            f"({selection_path(family, dataset, profile).name} is missing): train its grid, "
            f"the choice and the chosen model with `{command(family, dataset, profile)}` "
            f"(`--grid-only` trains the candidates alone, before the foreground exists)")
    if record["rule"] == RULE and unfinished(record):
        raise CheckpointError(f"background {FAMILY_NAMES[family]} for {dataset}: "
                              f"{unfinished(record)}")
    c = record["choice"]
    try:
        trained = registry.get(family, dataset, profile, data_root=data_root,
                               allow_training=False, progress=False, noise_fraction=c["mu"],
                               l2=c["l2"])
    except CheckpointError:
        raise CheckpointError(
            f"background {FAMILY_NAMES[family]} for {dataset}: the chosen model (μ = "
            f"{c['mu']:g}, λ = {c['l2']:g}) is not trained to its full budget; continue with "
            f"`{command(family, dataset, profile)}`") from None
    return trained, record


def discard(family: str, dataset: str, profile: str, data_root: str | Path | None = None) -> None:
    """Delete this rule's record for ``family`` on ``dataset`` and the run of every candidate
    it could have (extension included); the old rule's record stays."""
    root = registry.checkpoint_root(profile)
    for key in candidate_keys(family, dataset, profile, grid_points(MU_EXTENSION),
                              data_root).values():
        for name in (key, key + registry.SHORT_RUN_SUFFIX):
            shutil.rmtree(root / name, ignore_errors=True)
    selection_path(family, dataset, profile).unlink(missing_ok=True)


# --- tables ----------------------------------------------------------------------------------


def grid_matrix(record: dict) -> pd.DataFrame:
    """The validation AUROC of each grid point of ``record``: rows μ, columns λ."""
    return (pd.DataFrame(record["grid"])
            .pivot_table(index="mu", columns="l2", values="validation_auroc")
            .rename_axis(index="μ", columns="λ"))


def grid_frame(records: dict[tuple[str, str], dict]) -> pd.DataFrame:
    """One row per grid point of the saved ``records`` (keyed by ``(family, dataset)``): the
    rule, the validation pair, the short runs' length, μ, λ, the validation AUROC and whether
    it is the choice."""
    return pd.DataFrame([
        {"family": FAMILY_NAMES[f], "trained on": catalogue.DISPLAY_NAMES[d], "rule": r["rule"],
         "validation in-distribution": r["validation_in"], "validation OOD": r["validation_ood"],
         "short runs (steps)": f"{r['select_steps']:,} of {r['full_steps']:,}",
         "μ": c["mu"], "λ": c["l2"], "validation AUROC": c["validation_auroc"],
         "chosen": r["choice"] is not None and (c["mu"], c["l2"]) == (r["choice"]["mu"],
                                                                       r["choice"]["l2"])}
        for (f, d), r in records.items() for c in r["grid"]])


def grid_progress(family: str, dataset: str, profile: str,
                  data_root: str | Path | None = None) -> tuple[int, int]:
    """``(trained, total)``: how many of the grid's candidates (:func:`grid_points`) have their
    short run trained (their training log reaches the short run's last step), before any is
    scored."""
    short, _ = steps(family, dataset, profile)
    root = registry.checkpoint_root(profile)
    trained = 0
    keys = candidate_keys(family, dataset, profile, grid_points(), data_root)
    for key in keys.values():
        log = root / key / LOG_FILE
        if log.exists() and int(pd.read_csv(log)["step"].max()) >= short:
            trained += 1
    return trained, len(keys)


def status(family: str, dataset: str, profile: str, foreground_key: str) -> str:
    """One sentence on the background of ``family`` on ``dataset``: the rule and the choice,
    whether the choice is on an edge, whether it was made for another foreground than
    ``foreground_key`` (the model it is paired with), and what is missing with the command
    that trains it."""
    record = selection(family, dataset, profile)
    name = f"{FAMILY_NAMES[family]} on {catalogue.DISPLAY_NAMES[dataset]}"
    if record is None:
        done, total = grid_progress(family, dataset, profile)
        if not done:
            return (f"{name}: no background model yet; train it with "
                    f"`{command(family, dataset, profile)}`.")
        short, _ = steps(family, dataset, profile)
        return (f"{name}: no background model yet; {done} of {total} candidates' short runs "
                f"({short:,} steps) are trained; continue with "
                f"`{command(family, dataset, profile, '--grid-only')}`, then score, choose and "
                f"complete with `{command(family, dataset, profile)}`.")
    parts = []
    if record["choice"] is not None:
        c = record["choice"]
        parts.append(f"chosen μ = {c['mu']:g}, λ = {c['l2']:g}")
        if record["edge"]:
            parts.append(f"on the {record['edge']['side']} edge of the μ grid"
                         + ("" if pending_extension(record) is not None
                            else " (not extended: " + ("the old rule had no extension"
                                                       if record["rule"] == OLD_RULE
                                                       else "the extension is spent") + ")"))
    if record["rule"] == RULE and record["extension"]:
        parts.append("the grid extended to μ = " + ", ".join(f"{m:g}" for m in record["extension"])
                     + " by the edge rule")
    if record["rule"] == OLD_RULE:
        parts.append(f"chosen under the old rule ({OLD_RULE}, no weight penalty), which the "
                     f"current one replaces: `{command(family, dataset, profile)}`")
    if record["foreground"] != foreground_key:
        parts.append(f"stale: chosen for the foreground {record['foreground']}, which has "
                     f"since been replaced")
    problem = unfinished(record) if record["rule"] == RULE else None
    if problem:
        parts.append(problem)
    return f"{name}: " + "; ".join(parts) + "."


# --- the old rule's CIFAR-10 inversion, measured -----------------------------------------------

# The old rule's validation OOD set per training set (its in-distribution side: the first
# training images).
OLD_VALIDATION_OOD = {"fashion_mnist": "notmnist", "notmnist": "fashion_mnist",
                      "cifar10": "fashion_mnist"}


def old_rule_models(dataset: str, profile: str, data_root: str | Path | None = None
                    ) -> tuple[TrainedModel, TrainedModel] | None:
    """``(foreground, background)``: the Glows of the old rule's choice for ``dataset``, each
    the checkpoint of that choice: the shipped model, or the one its retrained version replaced
    (:func:`ood_lib.zoo.registry.predecessor`); ``None`` if there is no such choice or either
    checkpoint is missing."""
    record = old_selection(dataset, profile)
    if record is None:
        return None
    try:
        fg = registry.get("glow", dataset, profile, data_root=data_root, allow_training=False,
                          progress=False)
        bg = registry.get("glow", dataset, profile, data_root=data_root, allow_training=False,
                          progress=False, noise_fraction=record["choice"]["mu"])
    except CheckpointError:
        return None
    fg = fg if fg.key == record["foreground"] else registry.predecessor(fg)
    # a retrained background of the same mu (this rule's) stands where the old one was
    bg = bg if bg.stale or not registry.legacy_spec(bg.spec) else registry.predecessor(bg)
    found = fg is not None and bg is not None and fg.key == record["foreground"]
    return (fg, bg) if found else None


def inversion_sets(dataset: str, profile: str, data_root: str | Path | None = None,
                   old_rule: bool = True) -> list[EvalSet]:
    """The sets that explain a choice on ``dataset``: the old rule's validation pair (the first
    training images, :data:`OLD_VALIDATION_OOD`; only with ``old_rule``), this rule's
    validation pair, and the test pair; the first :data:`VALIDATION_IMAGES` images of each, in
    the training set's geometry."""
    channels, _ = catalogue.geometry(dataset)
    n = VALIDATION_IMAGES[profile]
    held_out = store.load(dataset, "val", data_root)
    old = [(store.load(dataset, "train", data_root), "old validation (in)"),
           (store.load(OLD_VALIDATION_OOD[dataset], "test", data_root), "old validation (OOD)")]
    new = _validation_pair(dataset, held_out, channels, n, data_root)
    test = [(store.load(dataset, "test", data_root), "test (in)"),
            (store.load(catalogue.PAIRS[dataset], "test", data_root), "test (OOD)")]
    return ([_named(image_sets.from_split(s, role, channels, n), n) for s, role in old
             if old_rule]
            + [replace(new[0], role="validation (in)"), replace(new[1], role="validation (OOD)")]
            + [_named(image_sets.from_split(s, role, channels, n), n) for s, role in test])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Choose mu and lambda (Ren et al.'s grid) and train the background models.")
    parser.add_argument("--profile", default="cpu", choices=catalogue.PROFILES)
    parser.add_argument("--model", action="append", choices=FAMILIES,
                        help="family (default: every one)")
    parser.add_argument("--dataset", action="append", choices=sorted(VALIDATION_OOD),
                        help="training set (default: every one the family is trained on)")
    parser.add_argument("--data-root")
    parser.add_argument("--grid-only", action="store_true",
                        help="train the candidates' short runs only (no foreground needed)")
    parser.add_argument("--shard", default="0/1", metavar="K/N",
                        help="with --grid-only: the grid points at positions k modulo n only "
                             "(n processes share a grid)")
    parser.add_argument("--extend", action="store_true",
                        help="add the noise level the edge rule asks for, then choose again")
    parser.add_argument("--retrain", action="store_true",
                        help="delete the record and every candidate's run, then start again")
    args = parser.parse_args(argv)
    try:
        shard = tuple(int(v) for v in args.shard.split("/"))
        if len(shard) != 2 or not 0 <= shard[0] < shard[1]:
            raise ValueError
    except ValueError:
        parser.error(f"--shard takes K/N with 0 <= K < N, got {args.shard!r}")
    failed = []
    for family in args.model or FAMILIES:
        for dataset in args.dataset or datasets(family):
            if dataset not in datasets(family):
                parser.error(f"{family} is not trained on {dataset}")
            short, full = steps(family, dataset, args.profile)
            print(f"== background {FAMILY_NAMES[family]} on {dataset} ({args.profile}): "
                  f"{len(grid_points())} candidates of {short:,} steps, then the choice's "
                  f"{full:,}")
            if args.retrain:
                discard(family, dataset, args.profile, args.data_root)
            if args.grid_only:
                train_grid(family, dataset, args.profile, args.data_root, args.extend, shard)
                continue
            try:
                record = select(family, dataset, args.profile, args.data_root, extend=args.extend)
            except CheckpointError as exc:  # no usable foreground: say so, go on with the rest
                print(f"error: {exc}. (`--grid-only` trains the candidates without it.)")
                failed.append(f"{family} on {dataset}")
                continue
            print(f"validation AUROC ({record['validation_in']} against "
                  f"{record['validation_ood']}):")
            print(grid_matrix(record).to_string(float_format="{:.3f}".format))
            print(status(family, dataset, args.profile, record["foreground"]))
            if unfinished(record) is None:
                trained = complete(record, args.data_root)
                print(f"{trained.key}: final {trained.record['final_bpd']} -> {trained.path}")
    if failed:
        parser.exit(2, f"not done: {', '.join(failed)}\n")


if __name__ == "__main__":
    main()
