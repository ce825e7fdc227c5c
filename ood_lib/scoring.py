r"""Scoring the book's image sets under a trained model: per-image scores through a content-keyed
cache, and the scored pairs the chapters use (the numbers behind the paper's Figures 1, 2, 4).

The sets come from :mod:`ood_lib.data.image_sets`. :func:`score` evaluates a set once per model and
caches the per-image arrays (``log_px``, every part the model returns, ``bpd``) in the profile's
results folder, so later chapters (decomposition, second order, remedies, scorecard) reuse them.
The cache is keyed by content: an entry stores the sha256 of the checkpoint, the sha256 of the
exact uint8 images scored (after conversion to the model's geometry) and :data:`SCORER_VERSION`; an
entry that does not match all three is recomputed, never returned. The entry's file is named by
that key alone (:func:`cache_name`), not by the set's name, so two chapters that score the same
images under the same model share one entry whatever they call the set. Scores that are not finite
(a float32 overflow on an absurd input) are kept as they are: :func:`finite_mean` and the metrics
say how they count.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

from ood_lib import catalogue, paper, records, results
from ood_lib.data import store
from ood_lib.data.image_sets import MAX_IMAGES, EvalSet, from_split, paper_sets
from ood_lib.metrics import auroc
from ood_lib.models.base import evaluate
from ood_lib.zoo import registry
from ood_lib.zoo.registry import TrainedModel

# Bump whenever the stored parts or their meaning change: every cached entry is then recomputed.
SCORER_VERSION = "3"  # 3: Glow runs channels-last (float32 rounding differs from 2)
# The same for one family's entries only (appended to SCORER_VERSION in its keys).
FAMILY_SCORER_VERSION = {
    "glow": "2",  # 2: scores carry the latent norm (Glow.score_parts)
    "glow_cv": "2",
    "pixelcnn": "3",  # 2: channels-last head, tanh through the sigmoid, batches of 32;
    # 3: the softmax model's scores carry the mean predictive entropy
    "vae": "2",  # 2: ELU and softplus on exp and log, channels-last decoder (float32 rounding)
}


def images_sha256(images: Tensor) -> str:
    """sha256 of a uint8 image tensor's shape and bytes (the content key of a scored set)."""
    h = hashlib.sha256(str(tuple(images.shape)).encode())
    h.update(images.contiguous().numpy().tobytes())
    return h.hexdigest()


def cache_name(key: dict[str, str]) -> str:
    """The result name of the cache entry of ``key``: ``cache-`` and 32 hex digits of the
    sha256 of the key (its fields and values, in sorted order)."""
    return "cache-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def cached(profile: str, name: str, key: dict[str, str],
           compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-image arrays of the content ``key`` (e.g. checkpoint and image hashes,
    :data:`SCORER_VERSION`, what was computed), from the profile's results folder, or computed
    and saved there. The one content-keyed cache of the book: :func:`score` and the other
    per-image analyses use it.

    The entry is the result :func:`cache_name` of ``key``: ``key`` must name everything the
    arrays depend on, and two calls with equal keys share one entry whatever their ``name``.
    ``name`` says what the arrays are (stored with them as ``cache_label``, for a reader of the
    folder); an entry saved under ``name`` by the name-keyed cache before is adopted if the key
    stored with it matches. Another process computing the entry holds its lock: this one waits
    for it, then reads what it saved."""
    arrays = _try_cached(profile, name, key, compute, wait=True)
    assert arrays is not None  # waiting for the lock always ends with the entry
    return arrays


def _try_cached(profile: str, name: str, key: dict[str, str],
                compute: Callable[[], dict[str, np.ndarray]],
                wait: bool) -> dict[str, np.ndarray] | None:
    """:func:`cached`; with ``wait=False``, ``None`` at once while another process holds the
    entry's lock (:func:`score_all`)."""
    entry = cache_name(key)
    found = _lookup(profile, entry, name, key)
    if found is not None:
        return found
    # a chapter executing beside this one may compute it
    with results.lock(profile, entry, wait=wait) as held:
        if not held:
            return None
        found = _lookup(profile, entry, name, key)
        if found is not None:
            return found
        t0 = time.perf_counter()
        arrays = compute()
        _save_entry(profile, entry, name, key, arrays, time.perf_counter() - t0)
    return arrays


def _lookup(profile: str, entry: str, name: str,
            key: dict[str, str]) -> dict[str, np.ndarray] | None:
    """The arrays of the cache entry ``entry`` (or of a name-keyed entry ``name`` saved before,
    adopted under ``entry``) if its stored key is ``key``; else ``None``."""
    for stem in (entry, name):
        try:
            stored = results.load_arrays(profile, stem)
        except results.MissingResultError:
            continue
        if all(str(stored.get(f"cache_{k}", "")) == v for k, v in key.items()):
            arrays = {k: v for k, v in stored.items() if not k.startswith("cache_")}
            if stem != entry:  # a name-keyed entry: kept under its content name from now on
                _save_entry(profile, entry, name, key, arrays)
            return arrays
    return None


def _save_entry(profile: str, entry: str, label: str, key: dict[str, str],
                arrays: dict[str, np.ndarray], seconds: float | None = None) -> None:
    """Save an entry with its key and label and, where it was computed here, the wall seconds
    its computation took (``cache_seconds``: what a build spends on each model and set, read
    by ``benchmarks/build_cache_time.py``; not part of the key)."""
    timing = {} if seconds is None else {"cache_seconds": np.array(seconds)}
    results.save_arrays(profile, entry, **arrays, cache_label=np.array(label), **timing,
                        **{f"cache_{k}": np.array(v) for k, v in key.items()})


def cache_key(trained: TrainedModel, images: Tensor, **more: str) -> dict[str, str]:
    """The content key of per-image results of ``trained`` on ``images``."""
    family = FAMILY_SCORER_VERSION.get(trained.spec.model)
    version = SCORER_VERSION + (f".{family}" if family else "")
    return {"checkpoint_sha256": trained.record["sha256"], "images_sha256": images_sha256(images),
            "scorer_version": version, **more}


def score(trained: TrainedModel, eval_set: EvalSet, profile: str,
          progress: bool = True) -> dict[str, np.ndarray]:
    """Per-image ``log_px`` and every other part of the model (nats) and ``bpd`` of a set,
    from the content-keyed cache (see the module docstring) or computed and cached."""
    return cached(profile, *_score_entry(trained, eval_set, progress))


def _score_entry(trained: TrainedModel, eval_set: EvalSet, progress: bool = True,
                 ) -> tuple[str, dict[str, str], Callable[[], dict[str, np.ndarray]]]:
    """The cache entry of :func:`score`: its name, its content key and what computes it."""
    return (f"scores-{trained.key}-{eval_set.name}", cache_key(trained, eval_set.images),
            lambda: evaluate(trained.model, eval_set.images,
                             progress=eval_set.label if progress else False))


def score_all(jobs: Sequence[tuple[TrainedModel, EvalSet]], profile: str,
              progress: bool = True) -> list[dict[str, np.ndarray]]:
    """:func:`score` of every ``(model, set)`` job, in the order of ``jobs``. Side by side with
    another chapter (``book_runner --jobs 2``), a job whose entry the other is computing (its
    lock held) is left for later and the next one is computed: a chapter waits for the other
    only when every entry it still needs is being computed there. Entries are computed in the
    order given, skipping only the busy ones, so on its own the order is that of ``jobs``."""
    out: list[dict[str, np.ndarray] | None] = [None] * len(jobs)
    pending = list(range(len(jobs)))
    while pending:
        busy = []
        for i in pending:
            out[i] = _try_cached(profile, *_score_entry(*jobs[i], progress), wait=False)
            if out[i] is None:
                busy.append(i)
        if busy == pending:  # every one left is being computed elsewhere: wait for the first
            out[busy[0]] = score(*jobs[busy[0]], profile, progress)
            busy = busy[1:]
        pending = busy
    return out


@dataclass
class ScoredPair:
    """A trained model with its per-image scores on the paper's three sets, keyed by role
    (``"train"``, ``"test"``, ``"ood"``): what the decomposition, constant-volume, second-order
    and model-family chapters start from."""

    trained: TrainedModel
    sets: dict[str, EvalSet]
    scores: dict[str, dict[str, np.ndarray]]
    # Why the pair has no "val" role for fits (see with_held_out); "" when it has one.
    fit_note: str = ""

    @property
    def n_dims(self) -> int:
        return int(np.prod(self.sets["test"].images.shape[1:]))

    def log_px(self, role: str) -> np.ndarray:
        """Per-image log-likelihood (nats) of one set."""
        return self.scores[role]["log_px"]


def score_pairs(runs: Sequence[tuple[str, str]], profile: str, seed: int = 0,
                data_root: str | Path | None = None,
                progress: bool = True) -> dict[tuple[str, str], ScoredPair]:
    """For each ``(model, dataset)`` of ``runs``: load the model (never training a cpu/paper
    model by surprise, see :func:`ood_lib.zoo.registry.get`) and score the paper's three sets
    with it (cached; :func:`score_all`, so that two chapters scoring the same pairs side by
    side share the work instead of waiting on each other)."""
    trained = {run: registry.get(*run, profile, seed=seed, data_root=data_root) for run in runs}
    sets = {run: {s.role: s for s in paper_sets(run[1], profile, data_root)} for run in runs}
    jobs = [(run, role) for run in runs for role in sets[run]]
    scored = dict(zip(jobs, score_all([(trained[run], sets[run][role]) for run, role in jobs],
                                      profile, progress), strict=True))
    return {run: ScoredPair(trained[run], sets[run],
                            {role: scored[(run, role)] for role in sets[run]}) for run in runs}


def score_pair(model: str, dataset: str, profile: str, seed: int = 0,
               data_root: str | Path | None = None, progress: bool = True) -> ScoredPair:
    """:func:`score_pairs` of one ``(model, dataset)``."""
    return score_pairs([(model, dataset)], profile, seed, data_root, progress)[(model, dataset)]


def _rows(eval_set: EvalSet, scores: dict[str, np.ndarray], rows: slice, part: str,
          label: str) -> tuple[EvalSet, dict[str, np.ndarray]]:
    """Some rows of a scored set, named apart from it (``<name>-<part>``), with their scores."""
    return (EvalSet(f"{eval_set.name}-{part}", label, eval_set.role, eval_set.images[rows],
                    f"{len(eval_set.images[rows]):,} of the {eval_set.n:,} images here"),
            {k: v[rows] for k, v in scores.items()})


def with_held_out(pair: ScoredPair, profile: str, data_root: str | Path | None = None,
                  progress: bool = True) -> ScoredPair:
    """``pair`` as a *fitted* OOD score uses it: roles ``"val"`` (the held-out split, the only
    images anything is fitted on, :func:`ood_lib.data.store.check_fit_split`), ``"test"`` and
    ``"ood"``. notMNIST's held-out images are the even positions of its test split, so its
    ``"test"`` becomes the odd positions (the same halves for every method). A model that
    trained on the held-out images (a stale stand-in, :func:`ood_lib.zoo.registry.get`) gets no
    ``"val"``: fitted scores are not computed for it, and ``fit_note`` says why."""
    trained, dataset = pair.trained, pair.trained.spec.dataset
    channels, _ = catalogue.geometry(dataset)
    sets, scores = {"ood": pair.sets["ood"]}, {"ood": pair.scores["ood"]}
    try:
        held_out = trained.fit_split(store.load(dataset, "val", data_root))
    except store.FitDataError as exc:
        sets["test"], scores["test"] = pair.sets["test"], pair.scores["test"]
        return ScoredPair(trained, sets, scores, fit_note=f"no fitted scores: {exc}")
    if dataset == "notmnist":  # val = test[0::2] in load order; score test[1::2]
        sets["val"], scores["val"] = _rows(pair.sets["test"], pair.scores["test"],
                                           slice(0, None, 2), "even", held_out.label)
        sets["test"], scores["test"] = _rows(pair.sets["test"], pair.scores["test"],
                                             slice(1, None, 2), "odd",
                                             f"{pair.sets['test'].label} (odd positions)")
    else:
        sets["val"] = from_split(held_out, "val", channels, MAX_IMAGES[profile])
        scores["val"] = score(trained, sets["val"], profile, progress)
        sets["test"], scores["test"] = pair.sets["test"], pair.scores["test"]
    return ScoredPair(trained, sets, scores)


def seed_scores(model: str, dataset: str, seeds: Sequence[int], profile: str,
                data_root: str | Path | None = None) -> list[records.SeedScore]:
    """One record per training seed of ``model`` on ``dataset`` (same configuration and
    budget): mean bits/dim on the paper's test and OOD sets, the OOD - test gap and the AUROC
    of bits/dim, so a verdict can carry the spread over seeds; ``stale`` marks stand-ins."""
    sets = {s.role: s for s in paper_sets(dataset, profile, data_root)}
    rows = []
    for seed in seeds:
        trained = registry.get(model, dataset, profile, seed=seed, data_root=data_root,
                               progress=False)
        bpd = {r: score(trained, sets[r], profile, progress=False)["bpd"] for r in ("test", "ood")}
        mean = {r: finite_mean(v)[0] for r, v in bpd.items()}
        rows.append(records.SeedScore(
            seed=seed, test_bpd=mean["test"], ood_bpd=mean["ood"],
            gap=mean["ood"] - mean["test"], auroc=auroc(bpd["test"], bpd["ood"]),
            stale=trained.stale is not None, checkpoint=trained.key))
    return rows


def finite_mean(values: np.ndarray) -> tuple[float, int]:
    """Mean of the finite values and the number left out as infinite (NaN is an error)."""
    values = np.asarray(values, float)
    if np.isnan(values).any():
        raise ValueError("scores contain NaN")
    finite = np.isfinite(values)
    return (float(values[finite].mean()) if finite.any() else float("nan")), int((~finite).sum())


def set_scores(trained: TrainedModel, sets: list[EvalSet], scores: dict[str, dict],
               before: dict[str, dict] | None = None) -> list[records.SetScore]:
    """The Figure 1 rows: mean bits/dim per set (infinite values left out and counted), the
    paper's (recalled) value where it has one, the mean bits/dim of the model this one replaced
    (``before``: its scores by set name, where given) and the AUROC of bits/dim as an OOD score
    against the in-distribution test set (0.5 = chance; below 0.5 = the OOD set looks *more*
    likely)."""
    test = next(s for s in sets if s.role == "test")
    rows = []
    for s in sets:
        bpd = scores[s.name]["bpd"]
        mean, n_infinite = finite_mean(bpd)
        published = (paper.GLOW_BPD.get((trained.spec.dataset, s.name))
                     if trained.spec.model == "glow" else None)
        rows.append(records.SetScore(
            role=s.role, label=s.label,
            images=s.coverage + (f"; {n_infinite:,} infinite, left out of the mean"
                                 if n_infinite else ""),
            mean_bpd=mean, paper_bpd=published,
            before_bpd=finite_mean(before[s.name]["bpd"])[0] if before and s.name in before
            else None,
            auroc_vs_test=None if s.role in ("train", "test")
            else auroc(scores[test.name]["bpd"], bpd)))
    return rows


# Display headers of the SetScore fields (the chapters' tables; records keep the field names).
SET_SCORE_HEADERS = {"label": "evaluated on", "role": "role", "images": "images used",
                     "mean_bpd": "mean bpd", "paper_bpd": f"{paper.LABEL} bpd",
                     "before_bpd": "ours before bpd", "auroc_vs_test": "AUROC vs test"}
