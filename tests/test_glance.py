"""The at-a-glance page reads only saved records: every row and number it shows comes from
their fields, and a missing record fails naming it and the chapter that saves it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ood_lib import paper, records, results
from ood_lib.records import Compute, Detection, FidelityRow, Verdict
from ood_lib.report import glance

PROFILE = "smoke"


def _detection(model: str, trained_on: str, ood: str, method: str, auroc: float) -> Detection:
    return Detection(model=model, trained_on=trained_on, ood=ood, method=method, auroc=auroc,
                     auroc_lo=auroc - 0.05, auroc_hi=auroc + 0.05, aupr=0.5, fpr95=0.5,
                     images="10 / 10")


def _records() -> list[records.Record]:
    verdicts = [Verdict(claim=1, text="SVHN | CIFAR", evidence="e", paper="p", verdict="holds",
                        reason="SVHN is more likely"),
                Verdict(claim=3, text="families", evidence="e", paper="p",
                        verdict="holds partly", reason="weaker?"),
                Verdict(claim=6, text="second order", evidence="e", paper="p",
                        verdict="holds", reason="sign")]
    fidelity = [FidelityRow(number="Glow on CIFAR10, SVHN-Test", paper=2.389, ours_before=None,
                            ours_now=6.5, images="200", model="glow-cifar10-k"),
                FidelityRow(number="channel R", paper=12.3, ours_before=None, ours_now=11.0,
                            images="200", model=None)]
    detections = [_detection("glow", "cifar10", "SVHN-Test", "NLL", 0.2),
                  _detection("glow", "cifar10", "SVHN-Test", "complexity (PNG)", 0.9),
                  _detection("vae", "cifar10", "SVHN-Test", "NLL", 0.3),
                  _detection("glow", "cifar10", "SVHN-Test", "typicality (batches of M = 5)", 1.0)]
    return [records.Scorecard(verdicts=verdicts, fidelity=fidelity, targets=[]),
            records.Remedies(detections=detections, models={}),
            records.GlowTraining(models=[Compute(
                key="glow-cifar10-k", model="glow", trained_on="cifar10", parameters=20_664,
                steps=30, batch_size=16, train_images=2000, cpu_s=7200.0, wall_s=40.0)])]


@pytest.fixture
def saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OOD_RESULTS_DIR", str(tmp_path))
    for record in _records():
        results.save_record(PROFILE, record)
    return tmp_path / PROFILE


def test_verdict_rows_link_each_claim_to_the_chapter_it_reads(saved: Path) -> None:
    rows = glance.verdict_rows(glance.load(PROFILE).scorecard)
    assert [r["chapter"] for r in rows] == ["{doc}`03_phenomenon`", "{doc}`08_families`",
                                            "{doc}`06_second_order`"]
    assert rows[0]["claim"] == "1. SVHN \\| CIFAR" and rows[1]["verdict"] == "**holds partly**"
    table = glance.markdown_table(rows, "Verdicts.", "tbl-x")
    assert table.startswith(":::{table} Verdicts.\n:name: tbl-x\n:class: glance glance-cards\n")
    assert len([line for line in table.splitlines() if line.startswith("| ")]) == 1 + len(rows)


def test_leaderboard_and_best_scores_come_from_the_saved_detections(saved: Path) -> None:
    rem = glance.load(PROFILE).remedies
    board = glance.leaderboard_table(rem)
    assert set(board["method"]) == {"NLL", "complexity (PNG)"}  # batched typicality left out
    assert set(board["pair"]) == {"CIFAR10 → SVHN-Test"}
    best = glance.best_scores(rem).iloc[0]
    assert (best["best score"], best["family"], best["auroc"], best["nll_auroc"]) == (
        "complexity (PNG)", "Glow", 0.9, 0.2)
    anchors = glance.anchors_table(rem)
    assert set(anchors["pair"]) == {"CIFAR10 → SVHN-Test"}
    assert len(anchors) == sum(a.trained_on == "cifar10" for a in paper.ANCHORS)


def test_fidelity_table_carries_the_compute_of_the_model_behind_each_number(saved: Path) -> None:
    table = glance.fidelity_table(glance.load(PROFILE))
    assert list(table[paper.LABEL]) == [2.389, 12.3]
    assert list(table["CPU time"]) == ["2.0 h", "–"]
    assert [glance.duration(s) for s in (None, 1.2, 600.0)] == ["not logged", "1 s", "10 min"]
    assert list(table["parameters"]) == ["20,664", "data only"]
    assert glance.text_rows(table)[0]["ours"] == "6.500"


@pytest.mark.parametrize("record", [r.NAME for r in _records()])
def test_a_missing_result_is_an_error_naming_it(saved: Path, record: str) -> None:
    (saved / f"{record}.json").unlink()
    cls = records.RECORDS[record]
    with pytest.raises(results.MissingResultError, match=rf"needs result '{record}', saved by "
                                                         rf"chapter {cls.CHAPTER}"):
        glance.load(PROFILE)


def test_a_model_missing_from_the_training_record_is_named(saved: Path) -> None:
    results.save_record(PROFILE, records.GlowTraining(models=[]))
    with pytest.raises(results.MissingResultError, match="no model 'glow-cifar10-k'"):
        glance.fidelity_table(glance.load(PROFILE))
