"""The scorecard judges every claim from the typed records the chapters save: a changed field
changes the verdict, a renamed display column cannot, and a missing record or field fails
naming the chapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ood_lib import paper, records, results
from ood_lib.records import (
    ChannelSum,
    FamilyScore,
    GapAccount,
    GapOverTraining,
    Graying,
    SecondOrderGap,
    SeedScore,
    SetScore,
    Strength,
    StrengthDifference,
    TermGap,
)
from ood_lib.report import scorecard

PROFILE = "smoke"


def _figure1(train: float, test: float, ood: float, published: tuple) -> list[SetScore]:
    return [SetScore(role=role, label=label, images="n", mean_bpd=v, paper_bpd=p,
                     before_bpd=v + 0.2, auroc_vs_test=None if role != "ood" else 0.1)
            for label, role, v, p in zip(("A-Train", "A-Test", "B-Test"), ("train", "test", "ood"),
                                         (train, test, ood), published, strict=True)]


def _seeds(*gaps: float) -> list[SeedScore]:
    return [SeedScore(seed=i, test_bpd=4.0, ood_bpd=4.0 + g, gap=g, auroc=0.2, stale=False,
                      checkpoint="k") for i, g in enumerate(gaps)]


def _saved() -> list[records.Record]:
    """Minimal records (the chapters' smoke build checks the real ones end to end)."""
    other = SetScore(role="other", label="MNIST-Test (as 32x32 RGB)", images="n", mean_bpd=3.0,
                     paper_bpd=None, before_bpd=None, auroc_vs_test=0.1)
    terms = [TermGap("log p(z)", -50.0), TermGap("log |det|", 80.0), TermGap("log p(x)", 30.0)]
    return [
        records.Phenomenon(
            sets={"cifar10": _figure1(4.0, 4.05, 2.7, (3.386, 3.464, 2.389)) + [other],
                  "fashion_mnist": _figure1(3.7, 3.8, 2.4, (2.902, 2.958, 1.833)),
                  "notmnist": _figure1(4.0, 3.8, 3.2, (None, None, None))},
            seeds={"cifar10": _seeds(-1.3), "fashion_mnist": _seeds(-1.4, -1.2, -1.5),
                   "notmnist": _seeds(-0.6, -0.8, -0.7)},
            models={d: f"glow-{d}-key" for d in ("cifar10", "fashion_mnist", "notmnist")}),
        records.Families(
            scores=[FamilyScore("glow", "cifar10", 4.0, 4.0, 2.7, 0.1)],
            strength={"cifar10": [Strength(f, v, v - 0.02, v + 0.02, b) for f, v, b in
                                  (("glow", 0.45, 3.9), ("pixelcnn", 0.1, 4.5), ("vae", 0.3, 5.5))]},
            differences={"cifar10": [StrengthDifference("pixelcnn", f, d, d - 0.05, d + 0.05, True)
                                     for f, d in (("glow", -0.35), ("vae", -0.2))]},
            models={}, compute=[]),
        records.Decomposition(terms={d: terms for d in ("notmnist", "cifar10", "fashion_mnist")},
                              models={}),
        records.ConstantVolume(
            scores=[], log_det_spread={}, models={}, compute=[],
            gaps=[GapOverTraining("glow_cv", d, 14, 4.5, 14, True, -1.2)
                  for d in ("cifar10", "fashion_mnist")]),
        records.SecondOrder(
            channel_sums=[ChannelSum("cifar10", "svhn", c, v, p, "n") for c, v, p in
                          zip("RGB", (12.0, 7.0, 15.0), (12.3, 6.5, 14.5), strict=True)],
            gaps=[SecondOrderGap("glow_cv", "cifar10", 20_000.0, 1000.0, 20_100.0)],
            account=GapAccount("glow_cv", "cifar10", 48, 1000.0, 300.0, 20_000.0, -19_300.0,
                               0.5, 0.05, 0.04, 30, 3072),
            graying=[Graying(m, role, "CIFAR10-Test", v) for m in ("glow", "glow_cv")
                     for role, v in (("colour", 4.0), ("grey", 3.5))],
            models={}),
    ]


@pytest.fixture
def saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, dict]:
    """The records as saved JSON (name -> object), which a test may edit and save back."""
    monkeypatch.setenv("OOD_RESULTS_DIR", str(tmp_path))
    for record in _saved():
        results.save_record(PROFILE, record)
    return {r.NAME: results.load_json(PROFILE, r.NAME) for r in _saved()}


def _card() -> dict[int, records.Verdict]:
    return {v.claim: v for v in scorecard.verdicts(PROFILE)}


def test_every_claim_is_judged_from_saved_records(saved: dict) -> None:
    card = _card()
    assert list(card) == list(range(1, 9))
    assert min(len(v.evidence) for v in card.values()) > 20
    assert [v.verdict for v in card.values()] == [scorecard.HOLDS] * 7 + [scorecard.UNTESTABLE]


@pytest.mark.parametrize(("name", "change", "claim", "verdict"), [
    ("phenomenon", lambda s: s["sets"]["cifar10"][2].update({"mean_bpd": 5.0}), 1,
     scorecard.NOT_HERE),
    # the paired interval now holds 0: whether PixelCNN's preference is weaker is not resolved
    ("families", lambda s: s["differences"]["cifar10"][1].update(
        {"lo": -0.1, "hi": 0.1, "resolved": False}), 3, scorecard.PARTLY),
    # the difference's sign flips: PixelCNN's preference is the stronger
    ("families", lambda s: s["differences"]["cifar10"][0].update(
        {"difference": 0.3, "lo": 0.25, "hi": 0.35}), 3, scorecard.PARTLY),
    # PixelCNN's own preference is not clear of 0
    ("families", lambda s: s["strength"]["cifar10"][1].update({"lo": -0.01}), 3,
     scorecard.PARTLY),
    ("decomposition", lambda s: [t.update({"gap_nats": -80.0}) for d in s["terms"].values()
                                 for t in d if t["term"] == "log |det|"], 4, scorecard.NOT_HERE),
    ("constant_volume", lambda s: s["gaps"][0].update({"at_every_step": False}), 5,
     scorecard.PARTLY),
    # the covariance term's sign flips: no credit, whatever its size
    ("second_order", lambda s: s["gaps"][0].update({"covariance": -900.0}), 6,
     scorecard.NOT_HERE),
    ("second_order", lambda s: s["channel_sums"][1].update({"ours": -1.0}), 6, scorecard.PARTLY),
    ("second_order", lambda s: s["graying"][1].update({"mean_bpd": 4.5}), 7, scorecard.PARTLY),
])
def test_a_changed_saved_field_changes_the_verdict(saved: dict, name: str, change, claim: int,
                                                   verdict: str) -> None:
    change(saved[name])
    results.save_json(PROFILE, name, saved[name])
    assert _card()[claim].verdict == verdict


def test_a_renamed_display_column_cannot_change_a_verdict(saved: dict) -> None:
    """Display tables are built from the records; renaming their columns (as a chapter may)
    leaves the saved records, and so every verdict, as they were."""
    before = _card()
    phenomenon = results.load_record(PROFILE, records.Phenomenon)
    shown = records.frame(phenomenon.sets["cifar10"], {"mean_bpd": "mean bpd", "role": "role"})
    shown = shown.rename(columns={"mean bpd": "average bits per dimension"})
    assert "average bits per dimension" in shown and phenomenon.sets["cifar10"][0].mean_bpd == 4.0
    assert _card() == before


def test_a_missing_record_fails_naming_the_claim_and_chapter(saved: dict, tmp_path: Path) -> None:
    (tmp_path / PROFILE / "families.json").unlink()
    with pytest.raises(results.MissingResultError,
                       match="claim 3 needs result 'families'.*chapter 08_families"):
        scorecard.verdicts(PROFILE)


def test_a_missing_field_fails_naming_the_chapter_and_the_field(saved: dict) -> None:
    del saved["families"]["strength"]["cifar10"][0]["lo"]
    results.save_json(PROFILE, "families", saved["families"])
    with pytest.raises(records.RecordError,
                       match=r"chapter 08_families.*families\.strength\['cifar10'\]\[0\] lacks "
                             r"the field 'lo'"):
        scorecard.verdicts(PROFILE)


def test_records_round_trip_and_refuse_wrong_types(saved: dict, tmp_path: Path) -> None:
    for record in _saved():
        assert results.load_record(PROFILE, type(record)) == record
    bad = json.loads((tmp_path / PROFILE / "phenomenon.json").read_text())
    bad["seeds"]["cifar10"][0]["seed"] = "zero"
    results.save_json(PROFILE, "phenomenon", bad)
    with pytest.raises(records.RecordError, match=r"seeds\['cifar10'\]\[0\]\.seed should be int"):
        results.load_record(PROFILE, records.Phenomenon)


def test_fidelity_lists_every_published_number(saved: dict) -> None:
    rows = scorecard.fidelity(PROFILE)
    assert len(rows) == len(paper.GLOW_BPD) + 3
    assert rows[0].ours_before == pytest.approx(rows[0].ours_now + 0.2)
    assert {r.paper for r in rows[-3:]} == {12.3, 6.5, 14.5}
    # each Glow number names the model behind it (its compute is on the at-a-glance page)
    assert [r.model for r in rows] == [f"glow-{d}-key" for d, _ in paper.GLOW_BPD] + [None] * 3


def test_claim_5_is_worded_over_the_logged_epochs(saved: dict) -> None:
    assert "first 4.5 epochs" in _card()[5].reason


def test_claims_1_and_2_carry_the_spread_over_seeds(saved: dict) -> None:
    card = _card()
    assert "one seed only" in card[1].evidence
    assert "[-1.500, -1.200]" in card[2].evidence.replace("+", "")


def test_targets_flag_shortfalls_read_the_records_and_name_a_missing_one(saved: dict) -> None:
    """A model is short of its target exactly when its test bits/dim exceed it; CV-Glow is read
    from the constant-volume record; a missing record fails naming it."""
    goals = {("glow", "cifar10"): 4.1, ("glow_cv", "cifar10"): 3.9}
    cv = saved["constant_volume"]
    cv["scores"] = [{"family": "glow_cv", "trained_on": "cifar10", "train_bpd": 3.9,
                     "test_bpd": 3.95, "ood_bpd": 2.6, "auroc": 0.1}]
    results.save_json(PROFILE, "constant_volume", cv)
    rows = scorecard.targets(PROFILE, goals)
    assert [(r.model, r.test_bpd, r.met) for r in rows] == [("glow", 4.0, True),
                                                             ("glow_cv", 3.95, False)]
    assert all(r.cpu_hours is None for r in rows)  # no checkpoint behind the minimal records
    fam = saved["families"]
    fam["models"] = {"glow-cifar10": "glow-key"}
    fam["compute"] = [{"key": "glow-key", "model": "glow", "trained_on": "cifar10",
                       "parameters": 1, "steps": 1, "batch_size": 1, "train_images": 1,
                       "cpu_s": 5400.0, "wall_s": 6000.0}]
    results.save_json(PROFILE, "families", fam)
    assert scorecard.targets(PROFILE, goals)[0].cpu_hours == 1.5  # the record's CPU clock
    assert not scorecard.targets(PROFILE)  # the smoke profile sets no targets
    assert [r.met for r in scorecard.targets(PROFILE, {("glow", "cifar10"): 3.99})] == [False]
    with pytest.raises(results.MissingResultError, match="no score of vae"):
        scorecard.targets(PROFILE, {("vae", "cifar10"): 5.2})
    (results.results_dir(PROFILE) / "families.json").unlink()
    with pytest.raises(results.MissingResultError, match="'families'"):
        scorecard.targets(PROFILE, goals)


def test_verdicts_as_markdown_lead_with_verdict_and_escape_emphasis(saved: dict) -> None:
    verdicts = scorecard.verdicts(PROFILE)
    text = scorecard.as_markdown(verdicts)
    blocks = text.split("\n\n")
    assert len(blocks) == len(verdicts)
    for v, block in zip(verdicts, blocks, strict=True):
        term, first, *_ = block.splitlines()
        assert term.startswith(f"**{v.claim}. ") and first == f": **{v.verdict}**: " + v.reason.replace(
            "*", "\\*") + "."
    assert "Σ_p\\*" in blocks[5] and "Σ_p*)" not in blocks[5]
