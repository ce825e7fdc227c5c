"""Typed records: what one chapter hands to the chapters after it.

Each chapter result is one frozen dataclass below (a :class:`Record`) with named, typed fields;
:func:`ood_lib.results.save_record` writes it as JSON and :func:`ood_lib.results.load_record`
rebuilds it, checking every field: a missing or mistyped field fails with the record's
chapter and the field's path (``families.strength['cifar10'][0].lo``), never a silent default.
Readers (the scorecard, the at-a-glance page) use fields, never the column headers of a
chapter's display tables or the position of a row; image sets are named by *role*
(``train``, ``val``, ``test``, ``ood``, ``other``, ``control``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd


class RecordError(ValueError):
    """A saved record that does not match its type (a missing, extra or mistyped field)."""


# --------------------------------------------------------------------------- building blocks


@dataclass(frozen=True)
class SetScore:
    """One image set under one model: mean bits/dim and bits/dim as an OOD score."""

    role: str  # "train" | "test" | "ood" | "other" | "control"
    label: str  # e.g. "SVHN-Test"
    images: str  # how many images, of how many
    mean_bpd: float
    paper_bpd: float | None  # the paper's published value, recalled (ood_lib.paper)
    before_bpd: float | None  # the model a retrained one replaced, on the same images
    auroc_vs_test: float | None  # None for the train and test sets themselves


@dataclass(frozen=True)
class SeedScore:
    """One training seed of a model: its preference for the OOD set."""

    seed: int
    test_bpd: float
    ood_bpd: float
    gap: float  # OOD - test, bits/dim
    auroc: float
    stale: bool
    checkpoint: str


@dataclass(frozen=True)
class TermGap:
    """One term of log p(x) = log p(z) + log|det|: its OOD - test difference of means."""

    term: str  # "log p(z)" | "log |det|" | "log p(x)"
    gap_nats: float


@dataclass(frozen=True)
class FamilyScore:
    """One model family on one pair: bits/dim of the paper's three sets."""

    family: str
    trained_on: str  # dataset key, e.g. "cifar10"
    train_bpd: float
    test_bpd: float
    ood_bpd: float
    auroc: float


@dataclass(frozen=True)
class Strength:
    """How strongly a family prefers the OOD set: 0.5 - AUROC of bits/dim, 95% interval."""

    family: str
    strength: float
    lo: float
    hi: float
    test_bpd: float


@dataclass(frozen=True)
class StrengthDifference:
    """strength(reference) - strength(other) on the same images, paired-bootstrap interval."""

    reference: str
    other: str
    difference: float
    lo: float
    hi: float
    resolved: bool  # the interval excludes 0


@dataclass(frozen=True)
class GapOverTraining:
    """The OOD - test gap of one model over its logged training steps (Figure 5)."""

    model: str  # registry name
    trained_on: str
    logged_steps: int
    epochs_logged: float
    steps_with_ood_preferred: int
    at_every_step: bool
    final_gap: float


@dataclass(frozen=True)
class ChannelSum:
    """Section 5's per-channel sum over pixels of sigma^2_train - sigma^2_ood ([0, 1] scale)."""

    trained_on: str
    ood: str
    channel: str
    ours: float
    paper: float | None  # recalled
    images: str


@dataclass(frozen=True)
class SecondOrderGap:
    """The second-order prediction of E_ood[log p] - E_test[log p] against the measured one."""

    model: str
    trained_on: str
    covariance: float  # 1/2 Tr{H (Sigma_q - Sigma_p*)}, nats
    measured: float  # nats
    total: float  # the full expansion, nats


@dataclass(frozen=True)
class GapAccount:
    """Where the second-order expansion of one model holds, and what carries the measured gap
    (chapter 06: shrinking sweep and path integral, ``ood_lib.analysis.validity``)."""

    model: str
    trained_on: str
    images: int  # per set, in the sweep and the path account
    measured: float  # E_ood[log p] - E_train[log p] of those images, nats
    first_order: float  # the part each term carries along the straight paths, nats
    second_order: float
    remainder: float
    quadrature_error: float
    s_star_ood: float  # scale at which the cubic remainder equals the covariance term
    s_star_train: float
    positive_eigenvalues: int  # of the Hessian at x0
    dimensions: int


@dataclass(frozen=True)
class Graying:
    """Mean bits/dim of a set in colour or grey under one model."""

    model: str
    role: str  # "colour" | "grey"
    label: str
    mean_bpd: float


@dataclass(frozen=True)
class Detection:
    """One OOD score of one model on one pair: AUROC with its 95% interval, AUPR, FPR@95."""

    model: str
    trained_on: str
    ood: str  # the OOD set's label, e.g. "SVHN-Test"
    method: str
    auroc: float
    auroc_lo: float
    auroc_hi: float
    aupr: float
    fpr95: float
    images: str


@dataclass(frozen=True)
class Verdict:
    """The scorecard's judgement of one claim of the paper."""

    claim: int
    text: str
    evidence: str
    paper: str
    verdict: str
    reason: str


@dataclass(frozen=True)
class FidelityRow:
    """A published number of the paper beside ours."""

    number: str
    paper: float  # recalled
    ours_before: float | None
    ours_now: float
    images: str
    model: str | None  # checkpoint key of the model behind ours; None: a property of the data


@dataclass(frozen=True)
class Compute:
    """What one trained model is and cost: size, training budget and time, from its record."""

    key: str  # checkpoint key
    model: str  # registry name
    trained_on: str
    parameters: int
    steps: int
    batch_size: int
    train_images: int
    cpu_s: float | None  # process CPU seconds; None: trained before the CPU clock was logged
    wall_s: float


@dataclass(frozen=True)
class TargetRow:
    """A model against the test bits/dim it was trained to reach."""

    model: str
    trained_on: str
    target: float
    test_bpd: float
    met: bool
    cpu_hours: float | None  # from the checkpoint's record; None where it was not logged
    checkpoint: str


# --------------------------------------------------------------------------- chapter results


def compute(record: dict[str, Any]) -> Compute:
    """A model's :class:`Compute` from its checkpoint record (``TrainedModel.record``)."""
    return Compute(key=record["key"], model=record["model"], trained_on=record["dataset"],
                   parameters=record["n_params"], steps=record["steps"],
                   batch_size=record["train_config"]["batch_size"],
                   train_images=record["train_data"]["n"], cpu_s=record.get("cpu_s"),
                   wall_s=record["wall_s"])


@dataclass(frozen=True)
class Record:
    """Base of every chapter result: ``NAME`` is its file stem, ``CHAPTER`` the chapter that
    saves it (named in errors)."""

    NAME: ClassVar[str] = ""
    CHAPTER: ClassVar[str] = ""


@dataclass(frozen=True)
class GlowTraining(Record):
    """Chapter 02: the compute of every Glow the book's first chapters use."""

    NAME: ClassVar[str] = "glow_training"
    CHAPTER: ClassVar[str] = "02_glow"
    models: list[Compute]


@dataclass(frozen=True)
class Phenomenon(Record):
    """Chapter 03: every Glow on the paper's sets and the other sets, and over seeds."""

    NAME: ClassVar[str] = "phenomenon"
    CHAPTER: ClassVar[str] = "03_phenomenon"
    sets: dict[str, list[SetScore]]  # training set -> one row per scored set
    seeds: dict[str, list[SeedScore]]
    models: dict[str, str]  # training set -> checkpoint key


@dataclass(frozen=True)
class Decomposition(Record):
    """Chapter 04: which term of log p(x) favours the OOD set, per pair."""

    NAME: ClassVar[str] = "decomposition"
    CHAPTER: ClassVar[str] = "04_decomposition"
    terms: dict[str, list[TermGap]]  # training set -> terms
    models: dict[str, str]


@dataclass(frozen=True)
class ConstantVolume(Record):
    """Chapter 05: affine and constant-volume Glows, and their gaps over training."""

    NAME: ClassVar[str] = "constant_volume"
    CHAPTER: ClassVar[str] = "05_constant_volume"
    scores: list[FamilyScore]
    gaps: list[GapOverTraining]
    log_det_spread: dict[str, float]  # "<model>-<dataset>" -> nats over the test images
    models: dict[str, str]
    compute: list[Compute]  # what each model cost (scorecard's targets)


@dataclass(frozen=True)
class SecondOrder(Record):
    """Chapter 06: per-channel variance sums, the second-order gap, graying."""

    NAME: ClassVar[str] = "second_order"
    CHAPTER: ClassVar[str] = "06_second_order"
    channel_sums: list[ChannelSum]
    gaps: list[SecondOrderGap]
    account: GapAccount  # the constant-volume Glow on CIFAR-10
    graying: list[Graying]
    models: dict[str, str]


@dataclass(frozen=True)
class Families(Record):
    """Chapter 07: every family's preference, and PixelCNN's against the others'."""

    NAME: ClassVar[str] = "families"
    CHAPTER: ClassVar[str] = "08_families"
    scores: list[FamilyScore]
    strength: dict[str, list[Strength]]  # training set -> per family
    differences: dict[str, list[StrengthDifference]]
    models: dict[str, str]
    compute: list[Compute]  # what each model cost (scorecard's targets)


@dataclass(frozen=True)
class Remedies(Record):
    """Chapter 08: every OOD score of every model and pair."""

    NAME: ClassVar[str] = "remedies"
    CHAPTER: ClassVar[str] = "09_remedies"
    detections: list[Detection]
    models: dict[str, str]


@dataclass(frozen=True)
class Scorecard(Record):
    """Chapter 09: the verdicts and the fidelity table."""

    NAME: ClassVar[str] = "scorecard"
    CHAPTER: ClassVar[str] = "10_scorecard"
    verdicts: list[Verdict]
    fidelity: list[FidelityRow]
    targets: list[TargetRow]


def frame(rows: list[Any], headers: dict[str, str] | None = None) -> pd.DataFrame:
    """Records as a display table: one row per record, columns in ``headers``' order renamed
    to its values (all fields under their own names without ``headers``); ``None`` shows as a
    blank (NaN)."""
    table = pd.DataFrame([dataclasses.asdict(r) for r in rows]).fillna(value=np.nan).infer_objects()
    if headers is None:
        return table
    return table[list(headers)].rename(columns=headers)


RECORDS: dict[str, type[Record]] = {r.NAME: r for r in (GlowTraining, Phenomenon, Decomposition,
                                                        ConstantVolume, SecondOrder, Families,
                                                        Remedies, Scorecard)}


# --------------------------------------------------------------------------- (de)serialising


def to_json(record: Record) -> dict[str, Any]:
    """The record as JSON values (dataclasses as objects, NaN kept as NaN)."""
    return dataclasses.asdict(record)


def from_json(cls: type[Record], value: Any) -> Record:
    """Rebuild ``cls`` from :func:`to_json`'s output, checking every field against its type."""
    return _build(cls, value, cls.NAME, cls)


def _build(tp: Any, value: Any, where: str, record: type[Record]) -> Any:
    def fail(why: str) -> RecordError:
        return RecordError(f"result {record.NAME!r} (saved by chapter {record.CHAPTER}): "
                           f"{where} {why}; rerun that chapter")

    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise fail(f"should be an object, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        fields = dataclasses.fields(tp)
        names = {f.name for f in fields}
        extra = set(value) - names
        if extra:
            raise fail(f"has unknown field(s) {sorted(extra)}")
        kwargs = {}
        for f in fields:
            if f.name not in value:
                raise fail(f"lacks the field {f.name!r}")
            kwargs[f.name] = _build(hints[f.name], value[f.name], f"{where}.{f.name}", record)
        return tp(**kwargs)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):  # X | None
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _build(inner, value, where, record)
    if origin is list:
        if not isinstance(value, list):
            raise fail(f"should be a list, got {type(value).__name__}")
        return [_build(args[0], v, f"{where}[{i}]", record) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise fail(f"should be an object, got {type(value).__name__}")
        return {k: _build(args[1], v, f"{where}[{k!r}]", record) for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail(f"should be a number, got {value!r}")
        return float(value)
    if tp in (int, str, bool):
        if type(value) is not tp:
            raise fail(f"should be {tp.__name__}, got {value!r}")
        return value
    raise TypeError(f"records cannot hold {tp!r} ({where})")


# --------------------------------------------------------------------------- explanations (07)


@dataclass(frozen=True)
class CouplingFit:
    """One coupling layer of a Glow: how far x_b is from the value x_b_hat that the layer maps
    to zero (Kirichenko et al., 2020), on the in-distribution test set and the OOD set."""

    layer: int  # flow order, from 1
    name: str  # e.g. "L1.step3"
    test_mse: float  # mean (x_b - x_b_hat)^2 per dimension, coupling input units
    ood_mse: float
    test_variance: float  # mean per-dimension variance of x_b over the set
    ood_variance: float


@dataclass(frozen=True)
class Reparametrization:
    """The Glow's density of the test and OOD sets described in coordinates w = f(v) (Le Lan &
    Dinh, 2021): mean log p_f in nats per image and the AUROC of -log p_f."""

    map: str  # "power" | "logit"
    parameter: float  # gamma | lambda
    test_log_density: float  # nats per image
    ood_log_density: float
    auroc: float  # < 0.5: the OOD set looks more likely


@dataclass(frozen=True)
class Explanations(Record):
    """Chapter 07: the couplings' predictions and the reparametrization sweep."""

    NAME: ClassVar[str] = "explanations"
    CHAPTER: ClassVar[str] = "07_explanations"
    trained_on: str  # dataset key, e.g. "cifar10"
    ood: str
    couplings: list[CouplingFit]
    layers_ood_predicted_better: int  # couplings with ood_mse < test_mse
    reparametrizations: list[Reparametrization]
    images: dict[str, int]  # "<part>.<role>" -> images used, e.g. "couplings.ood", "density.test"
    models: dict[str, str]


RECORDS[Explanations.NAME] = Explanations
