r"""Background models for the likelihood ratio (Ren et al., NeurIPS 2019), and their noise level.

The log-likelihood of a model trained on images mixes two things: *background* statistics
shared by natural images (smooth regions, local correlations, the share of flat pixels) and
the *semantic* content of the training set. Ren et al. train a second model of the same
architecture, the background model $p_{\text{bg}}$, on training images in which a fraction
$\mu$ of the subpixels is replaced by uniform noise (:func:`ood_lib.transforms.corrupt`). The
noise destroys the semantics and keeps much of the background, so the background term cancels
in the likelihood ratio; with the book's convention (larger = more OOD) the score is

$$s(x) = \log p_{\text{bg}}(x) - \log p(x) = -\text{LLR}(x)$$

(:func:`ood_lib.analysis.remedies.likelihood_ratio`).

**Choosing $\mu$**, once per in-distribution set, from :data:`MU_GRID` with short runs: each
candidate's background run is trained for its first :data:`SELECT_FRACTION` of the steps (the
full run stopped early, :func:`ood_lib.registry.train_partial`) and scored on a *validation*
pair: the first :data:`VALIDATION_IMAGES` images of the held-out split (which neither model
trained on; for notMNIST the even positions of its test split, see :mod:`ood_lib.data`)
against a validation OOD set that is **not** the test OOD set (:data:`VALIDATION_OOD`; MNIST
and SVHN are never looked at). The choices shipped before the held-out split existed used the
first training images instead; their records name the foreground model they were made for. The
candidate with the largest validation AUROC wins (ties: the smaller $\mu$); its run continues
to the full budget of the foreground model (exact resume: the short run *is* its first steps)
and the other candidates' runs are deleted. The choice and every candidate's validation AUROC
are kept as ``background-<dataset>.json`` beside the checkpoints; :func:`get` reads it.

Ren et al. also add L2 weight decay to the background model; the book's background models use
the foreground model's training configuration unchanged (only the inputs differ).

Run the selection and the training from the command line::

    python -m ood_lib.background --profile cpu --dataset fashion_mnist
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd

from ood_lib import data, profiles, registry, scoring
from ood_lib.analysis.remedies import likelihood_ratio
from ood_lib.likelihood import evaluate
from ood_lib.metrics import auroc
from ood_lib.registry import CheckpointError, TrainedModel

MODEL = "glow"
MU_GRID = (0.1, 0.2, 0.3)
# Share of the full step budget each candidate is trained for before the choice.
SELECT_FRACTION = 0.25
# In-distribution set -> the OOD set used to choose mu (never the test OOD partner).
VALIDATION_OOD = {"fashion_mnist": "notmnist", "notmnist": "fashion_mnist",
                  "cifar10": "fashion_mnist"}
VALIDATION_IMAGES = {"smoke": 64, "cpu": 1_000, "paper": 2_000}


def selection_path(dataset: str, profile: str) -> Path:
    """Where the choice of $\\mu$ for ``dataset`` is kept (beside the checkpoints)."""
    return registry.checkpoint_root(profile) / f"background-{dataset}.json"


def validation_sets(foreground: TrainedModel, profile: str, data_root: str | Path | None = None
                    ) -> tuple[scoring.EvalSet, scoring.EvalSet]:
    """The validation pair of the foreground model's training set: the first images of its
    held-out split (which ``foreground`` must not have trained on,
    :meth:`~ood_lib.registry.TrainedModel.fit_split`) and of :data:`VALIDATION_OOD`'s test
    split, in the training set's geometry."""
    dataset = foreground.spec.dataset
    if dataset not in VALIDATION_OOD:
        raise ValueError(f"no validation OOD set for {dataset!r}; known: {sorted(VALIDATION_OOD)}")
    channels, _ = profiles.IMAGE_GEOMETRY[dataset]
    n = VALIDATION_IMAGES[profile]
    held_out = foreground.fit_split(data.load(dataset, "val", data_root))
    return (scoring.from_split(held_out, "validation", channels, n),
            scoring.from_split(data.load(VALIDATION_OOD[dataset], "test", data_root),
                               "validation OOD", channels, n))


def select(dataset: str, profile: str, data_root: str | Path | None = None,
           progress: bool = True) -> dict:
    """Choose $\\mu$ for ``dataset`` (see the module docstring), save and return the record."""
    foreground = registry.get(MODEL, dataset, profile, data_root=data_root)
    val_in, val_ood = validation_sets(foreground, profile, data_root)
    fg = {s.role: evaluate(foreground.model, s.images)["log_px"] for s in (val_in, val_ood)}
    steps = registry.train_config(MODEL, dataset, profile).steps
    stop_at = max(1, round(SELECT_FRACTION * steps))
    candidates = []
    for mu in MU_GRID:
        net, path = registry.train_partial(MODEL, dataset, profile, stop_at, data_root=data_root,
                                           noise_fraction=mu, progress=progress)
        s = {v.role: likelihood_ratio(fg[v.role], evaluate(net, v.images)["log_px"])
             for v in (val_in, val_ood)}
        candidates.append({"mu": mu, "validation_auroc": auroc(s["validation"], s["validation OOD"]),
                           "path": path})
    best = max(candidates, key=lambda c: (c["validation_auroc"], -c["mu"]))
    for c in candidates:
        if c is not best:
            shutil.rmtree(c["path"])
    record = {
        "dataset": dataset, "profile": profile, "model": MODEL, "mu": best["mu"],
        "grid": [{"mu": c["mu"], "validation_auroc": c["validation_auroc"]} for c in candidates],
        "select_steps": stop_at, "full_steps": steps,
        "validation_in": f"{val_in.label}: {val_in.coverage}",
        "validation_ood": f"{val_ood.label}: {val_ood.coverage}",
        "foreground": foreground.key,
    }
    selection_path(dataset, profile).write_text(json.dumps(record, indent=1))
    return record


def choice(dataset: str, profile: str) -> dict:
    """The saved record of the $\\mu$ choice for ``dataset`` (see :func:`select`), or a
    :class:`~ood_lib.registry.CheckpointError` naming the command that makes it."""
    path = selection_path(dataset, profile)
    if not path.exists():
        raise CheckpointError(
            f"no background model for {dataset!r} under {profile!r}: {path} is missing. "
            f"Choose its noise level and train it with `python -m ood_lib.background "
            f"--profile {profile} --dataset {dataset}`.")
    return json.loads(path.read_text())


def get(dataset: str, profile: str, data_root: str | Path | None = None,
        allow_training: bool | None = None) -> tuple[TrainedModel, dict]:
    """The background Glow of ``dataset`` and the record of its $\\mu$ choice; chosen and
    trained first where training is allowed (:func:`ood_lib.registry.training_allowed`), else
    :class:`~ood_lib.registry.CheckpointError`."""
    allowed = registry.training_allowed(profile) if allow_training is None else allow_training
    if allowed and not selection_path(dataset, profile).exists():
        select(dataset, profile, data_root, progress=False)
    record = choice(dataset, profile)
    trained = registry.get(MODEL, dataset, profile, data_root=data_root,
                           allow_training=allowed, noise_fraction=record["mu"])
    return trained, record


def discard(dataset: str, profile: str, data_root: str | Path | None = None) -> None:
    """Delete the choice of $\\mu$ for ``dataset`` and every candidate's checkpoint folder."""
    split = registry.training_split(dataset, profile, data_root)
    for mu in MU_GRID:
        spec = registry.make_spec(MODEL, dataset, profile, split, noise_fraction=mu)
        shutil.rmtree(registry.checkpoint_root(profile) / spec.key, ignore_errors=True)
    selection_path(dataset, profile).unlink(missing_ok=True)


def grid_table(records: dict[str, dict]) -> pd.DataFrame:
    """One row per training set of the saved choices ``records`` (keyed by training set): the
    validation pair, the short runs' length, each candidate's validation AUROC and the choice."""
    return pd.DataFrame([
        {"trained on": data.DISPLAY_NAMES[d], "validation in-distribution": r["validation_in"],
         "validation OOD": r["validation_ood"],
         "short runs (steps)": f"{r['select_steps']:,} of {r['full_steps']:,}",
         **{f"AUROC, μ = {c['mu']:g}": c["validation_auroc"] for c in r["grid"]},
         "chosen μ": r["mu"]}
        for d, r in records.items()])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Choose mu and train the background Glows.")
    parser.add_argument("--profile", default="cpu", choices=profiles.PROFILES)
    parser.add_argument("--dataset", action="append", choices=sorted(VALIDATION_OOD))
    parser.add_argument("--data-root")
    parser.add_argument("--retrain", action="store_true",
                        help="delete the choice and every candidate's run, then choose again")
    args = parser.parse_args(argv)
    for dataset in args.dataset or list(VALIDATION_OOD):
        if args.retrain:
            discard(dataset, args.profile, args.data_root)
        if not selection_path(dataset, args.profile).exists():
            record = select(dataset, args.profile, args.data_root)
            print(f"{dataset}: mu = {record['mu']}; validation AUROC per mu: "
                  + ", ".join(f"{c['mu']}: {c['validation_auroc']:.3f}" for c in record["grid"]))
        trained, _ = get(dataset, args.profile, args.data_root, allow_training=True)
        print(f"{trained.key}: final {trained.record['final_bpd']} -> {trained.path}")


if __name__ == "__main__":
    main()
