r"""The remedies on the book's models: each per-image OOD score of :mod:`ood_lib.scores`
(their definitions and papers are there) on every trained model's test and OOD sets.

- :func:`typicality_auroc`: the typicality test at several batch sizes $M$;
- :func:`set_bits`: a set's compressed lengths (:mod:`ood_lib.compress`), cached by content;
- :func:`detection_table`: every score of every (model, training set) on its pair, one
  :class:`~ood_lib.records.Detection` each, with the ROC curves;
- :func:`other_sets_table`: the same scores against other OOD sets and controls;
- :func:`complexity_account`, :func:`weighted_complexity_auroc`: why input complexity
  separates a pair as far as it does, per compressor.

Fitted quantities (the typicality entropy, the density-of-states KDE) are fitted on the
held-out split (:func:`ood_lib.scoring.with_held_out`), never on training or test images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ood_lib import catalogue, records, scoring
from ood_lib.compress import compressed_bits, compressor_id
from ood_lib.data.image_sets import EvalSet
from ood_lib.metrics import auroc, detection_row, roc_curve
from ood_lib.scores import (
    METHOD_NAMES,
    entropy_estimate,
    likelihood_ratio,
    per_image_scores,
    typicality_batches,
    typicality_score,
)
from ood_lib.scoring import ScoredPair
from ood_lib.zoo.ensemble import Companions
from ood_lib.zoo.registry import TrainedModel


def companion_log_px(companions: Companions, eval_set: EvalSet, profile: str,
                     own_log_px: np.ndarray) -> dict[str, np.ndarray]:
    """:meth:`~ood_lib.zoo.ensemble.Companions.log_px` of a book set: each companion's per-image
    log-likelihoods from the score cache (:func:`ood_lib.scoring.score`)."""
    return companions.log_px(
        lambda m: scoring.score(m, eval_set, profile, progress=False)["log_px"], own_log_px)


def typicality_auroc(fit: np.ndarray, test: np.ndarray, ood: np.ndarray,
                     ms: Sequence[int] = (1, 2, 5, 10, 25), n_batches: int = 1000,
                     seed: int = 0) -> pd.DataFrame:
    r"""The typicality test at each batch size $M$: $\hat H$ from ``fit`` (log p, nats, of
    in-distribution inputs not in ``test``), ``n_batches`` batches each from ``test`` and
    ``ood``, and one :func:`detection_row` (test batches negative, OOD batches positive) per
    $M$. Batches of each $M$ are drawn from a generator seeded by ``(seed, M)``."""
    h_hat = entropy_estimate(fit)
    rows = []
    for m in ms:
        rng = np.random.default_rng([seed, m])
        s_test = typicality_score(typicality_batches(test, m, n_batches, rng), h_hat)
        s_ood = typicality_score(typicality_batches(ood, m, n_batches, rng), h_hat)
        rows.append({"M": m, **detection_row(s_test, s_ood, seed=seed),
                     "n_batches": n_batches, "H_hat (nats)": h_hat})
    return pd.DataFrame(rows)


def set_bits(eval_set: EvalSet, codec: str, profile: str) -> np.ndarray:
    """:func:`compressed_bits` of a scored set (uint8 in the model's geometry), cached by the
    images' content and the compressor (codec, settings, library versions)."""
    images = eval_set.images
    key = {"images_sha256": scoring.images_sha256(images), "compressor": compressor_id(codec)}
    return scoring.cached(profile, f"bits-{codec}-{key['images_sha256'][:16]}", key,
                          lambda: {"bits": compressed_bits(images.numpy(), codec)})["bits"]


def pair_label(dataset: str, ood: str) -> str:
    """``"CIFAR10 → SVHN-Test"``: a training set and the OOD set it is scored against."""
    return f"{catalogue.DISPLAY_NAMES[dataset]} → {ood}"


def detection_table(pairs: Mapping[tuple[str, str], ScoredPair],
                    bits: Mapping[tuple[str, str], dict[str, dict[str, np.ndarray]]],
                    companions: Mapping[tuple[str, str], Companions], profile: str,
                    seed: int = 0,
                    extra: Mapping[tuple[str, str], dict[str, dict[str, np.ndarray]]] | None = None,
                    ) -> tuple[list[records.Detection], dict]:
    """Every per-image score of every (model, training set) on its test set against its OOD
    set: one :class:`~ood_lib.records.Detection` each (``bits[run][role][codec]``: compressed
    lengths; ``companions[run]``: the run's background model and ensemble, if any), and the ROC
    curves, keyed by ``(run, method)``; ``extra[run][role][key]``: scores computed elsewhere
    (DoSE, :mod:`ood_lib.analysis.dose`) to report beside them. Each pair comes from
    :func:`ood_lib.scoring.with_held_out`: fitted scores are fitted on its ``"val"`` role, and
    left out where it has none."""
    rows, curves = [], {}
    for run, pair in pairs.items():
        fit, test, ood = pair.scores.get("val"), pair.scores["test"], pair.scores["ood"]
        s_test, s_ood = (_named_scores(pair, fit, pair.sets[role], pair.scores[role],
                                       bits[run][role], companions[run], profile)
                         for role in ("test", "ood"))
        added = (extra or {}).get(run, {})
        s_test.update({METHOD_NAMES[k]: v for k, v in added.get("test", {}).items()})
        s_ood.update({METHOD_NAMES[k]: v for k, v in added.get("ood", {}).items()})
        for method in s_test:
            rows.append(records.Detection(
                model=run[0], trained_on=run[1], ood=pair.sets["ood"].label, method=method,
                **detection_row(s_test[method], s_ood[method], seed=seed),
                images=f"{len(test['bpd']):,} / {len(ood['bpd']):,}"))
            curves[(run, method)] = roc_curve(s_test[method], s_ood[method])
    return rows, curves


def other_sets_table(pair: ScoredPair, sets: Sequence[EvalSet], profile: str,
                     companions: Companions, seed: int = 0) -> pd.DataFrame:
    """AUROC of every per-image score (PNG as the compressor) of ``pair``'s model on each of
    ``sets`` (other OOD sets, controls) against its test set, with each set's coverage;
    ``pair`` as :func:`ood_lib.scoring.with_held_out` gives it."""
    fit = pair.scores.get("val")
    s_test = _named_scores(pair, fit, pair.sets["test"], pair.scores["test"],
                           {"png": set_bits(pair.sets["test"], "png", profile)}, companions, profile)
    rows = []
    for s in sets:
        s_x = _named_scores(pair, fit, s, scoring.score(pair.trained, s, profile),
                            {"png": set_bits(s, "png", profile)}, companions, profile)
        rows += [{"set": s.label, "images": s.coverage, "method": method,
                  "auroc": detection_row(s_test[method], s_x[method], seed=seed)["auroc"]}
                 for method in s_test]
    return pd.DataFrame(rows)


def weighted_complexity_auroc(bpd: Mapping[str, np.ndarray], bits: Mapping[str, np.ndarray],
                              n_dims: int, weight: float = 1.0) -> float:
    r"""AUROC (OOD positive) of $S_w(x) = D\,\text{bpd}(x) - w\,L(x)$ between the ``"test"`` and
    ``"ood"`` sets (``bpd[role]``, ``bits[role]``: per image); $w = 1$ is Serra et al.'s score."""
    s = {r: n_dims * np.asarray(bpd[r], float) - weight * np.asarray(bits[r], float)
         for r in ("test", "ood")}
    return auroc(s["test"], s["ood"])


def complexity_account(bpd: Mapping[str, np.ndarray],
                       bits: Mapping[str, Mapping[str, np.ndarray]], n_dims: int,
                       reference_fall: float) -> pd.DataFrame:
    r"""Input complexity taken apart, one row per codec (``bits[codec][role]``).

    Between the test set and the OOD set, the mean of $S(x) = D\,\text{bpd}(x) - L(x)$ moves by
    $D\,(\Delta_L - \Delta_{\text{bpd}})$, each $\Delta$ a mean over the test set minus the
    mean over the OOD set, in bits/dim: the score ranks the OOD set as the more OOD only by the
    *margin* by which the compressor's fall $\Delta_L$ exceeds the model's $\Delta_{\text{bpd}}$,
    and the tighter $L$ follows the model's bits image by image (their correlation on the test
    set, ``r``), the less that margin is blurred. ``AUROC`` is Serra et al.'s score;
    ``AUROC at reference fall`` rescales the model's bits so that they fall by
    ``reference_fall`` bits/dim instead of $\Delta_{\text{bpd}}$, which is $S_w$ of
    :func:`weighted_complexity_auroc` with $w = \Delta_{\text{bpd}} / $ ``reference_fall``
    (AUROC is unchanged by a positive factor): a counterfactual, not a model."""
    model_fall = float(np.mean(bpd["test"]) - np.mean(bpd["ood"]))
    rows = []
    for codec, b in bits.items():
        length = {r: np.asarray(b[r], float) / n_dims for r in ("test", "ood")}  # bits/dim
        fall = float(length["test"].mean() - length["ood"].mean())
        rows.append({"codec": catalogue.CODEC_NAMES[codec],
                     "compressor bpd (test)": length["test"].mean(),
                     "compressor bpd (OOD)": length["ood"].mean(),
                     "compressor fall": fall, "model fall": model_fall,
                     "margin": fall - model_fall,
                     "r (test)": float(np.corrcoef(length["test"], bpd["test"])[0, 1]),
                     "AUROC": weighted_complexity_auroc(bpd, b, n_dims),
                     "AUROC at reference fall": weighted_complexity_auroc(
                         bpd, b, n_dims, model_fall / reference_fall)})
    return pd.DataFrame(rows)


def _named_scores(pair: ScoredPair, fit: dict[str, np.ndarray] | None, eval_set: EvalSet,
                  x: dict[str, np.ndarray], bits: dict[str, np.ndarray],
                  companions: Companions, profile: str) -> dict[str, np.ndarray]:
    """:func:`ood_lib.scores.per_image_scores` of ``eval_set`` (``x``: its cached scores under
    ``pair``'s model), keyed by the book's method names."""
    out = per_image_scores(x, fit, pair.n_dims, bits, pair.trained.model.additive_parts,
                           companion_log_px(companions, eval_set, profile, x["log_px"]))
    return {METHOD_NAMES[key]: value for key, value in out.items()}


def companion_models_table(pair: scoring.ScoredPair, bundle: Companions, profile: str) -> pd.DataFrame:
    """The run's own model, its ensemble members and its background model: training steps, CPU
    and wall time (from their records; CPU time blank where not logged) and mean bits/dim on the
    pair's test and OOD sets."""
    rows = []
    named = [(f"shipped (seed {pair.trained.spec.seed})", pair.trained)]
    named += [(f"ensemble member (seed {m.spec.seed}"
               + (", the shipped run at this step)" if m is bundle.member_0 else ")"), m)
              for m in bundle.ensemble]
    if bundle.background is not None:
        cfg = bundle.background.spec.train_config
        named.append((f"background (μ = {cfg.noise_fraction:g}, λ = {cfg.l2:g})",
                      bundle.background))
    for role, trained in named:
        bpd = {r: scoring.score(trained, pair.sets[r], profile, progress=False)["bpd"].mean()
               for r in ("test", "ood")}
        # CPU time is the compute; wall time also counts pauses and other processes' load
        rows.append({"model": role, "steps": trained.record["steps"],
                     "training CPU (min)": trained.record.get("cpu_s", np.nan) / 60,
                     "training wall (min)": trained.record["wall_s"] / 60,
                     f"bpd {pair.sets['test'].label}": bpd["test"],
                     f"bpd {pair.sets['ood'].label}": bpd["ood"]})
    return pd.DataFrame(rows)


def ensemble_budgets(companions: Mapping[tuple[str, str], Companions],
                     pairs: Mapping[tuple[str, str], ScoredPair]) -> str:
    """One sentence per WAIC ensemble: its seeds, its members' budget in steps and whether
    member 0 is the shipped model or the shipped run at that (shorter) budget."""
    out = []
    for run, bundle in companions.items():
        if not bundle.members:
            continue
        own = pairs[run].trained
        members = bundle.ensemble if bundle.member_0 is not None else (own, *bundle.members)
        seeds = ", ".join(str(m.spec.seed) for m in members)
        steps = bundle.members[0].record["steps"]
        first = ("the shipped run itself at that step (the shipped model has "
                 f"{own.record['steps']:,})" if bundle.member_0 is not None
                 else "the shipped model")
        out.append(f"WAIC ensemble of the {catalogue.FAMILY_NAMES[run[0]]} on "
                   f"{catalogue.DISPLAY_NAMES[run[1]]}: seeds {seeds}, every member trained "
                   f"{steps:,} steps; member 0 is {first}.")
    return " ".join(out)


def inversion_table(fg: TrainedModel, bg: TrainedModel, sets: Sequence[EvalSet],
                    profile: str) -> pd.DataFrame:
    """Per set (scores cached): the mean bits/dim of the foreground and the background, the
    mean ratio in bits/dim, $s(x) / (D \\ln 2) = \\text{bpd}_{\\text{fg}}(x) -
    \\text{bpd}_{\\text{bg}}(x)$, and the AUROC of the ratio against the first set."""
    rows, ref = [], None
    for s in sets:
        f, b = (scoring.score(m, s, profile, progress=False) for m in (fg, bg))
        ratio = likelihood_ratio(f["log_px"], b["log_px"]) / (s.images[0].numel() * np.log(2))
        ref = ratio if ref is None else ref
        rows.append({"set": s.label, "role": s.role, "images": s.coverage,
                     "foreground bpd": f["bpd"].mean(), "background bpd": b["bpd"].mean(),
                     "ratio (bits/dim)": ratio.mean(),
                     f"AUROC against {sets[0].label}": auroc(ref, ratio)})
    return pd.DataFrame(rows)


def inversion_reading(inversion: pd.DataFrame) -> str:
    """What an :func:`inversion_table` shows, in words, per OOD set (roles ending in "(OOD)"):
    how far the foreground's and the background's bits/dim fall (or rise) from the first set
    (the in-distribution reference), the share of the foreground's fall the background matches
    where the foreground falls by more than 0.05 bits/dim, and the ratio's AUROC."""
    ref, auroc_column = inversion.iloc[0], inversion.columns[-1]
    ood = inversion[inversion["role"].str.endswith("(OOD)")]

    def change(fall: float) -> str:
        return f"{'falls' if fall >= 0 else 'rises'} by {abs(fall):.2f}"

    parts = []
    for _, r in ood.iterrows():
        fg_fall = ref["foreground bpd"] - r["foreground bpd"]
        bg_fall = ref["background bpd"] - r["background bpd"]
        share = f" ({bg_fall / fg_fall:.0%} of the foreground's fall)" if fg_fall > 0.05 else ""
        parts.append(f"to {r['set']} the foreground's bits/dim {change(fg_fall)}, the "
                     f"background's {change(bg_fall)}{share}, and the ratio's AUROC is "
                     f"{r[auroc_column]:.3f}" + (" (inverted)" if r[auroc_column] < 0.5 else ""))
    inverted = int((ood[auroc_column] < 0.5).sum())
    return (f"From {ref['set']}: " + "; ".join(parts) + ". The ratio ranks "
            + (f"all {len(ood)}" if inverted == len(ood) else f"{inverted} of the {len(ood)}")
            + f" OOD sets as more in-distribution than {ref['set']}.")
