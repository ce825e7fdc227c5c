"""The scorecard reads every row from saved results, and a missing result fails loudly."""

from __future__ import annotations

from pathlib import Path

import pytest

from ood_lib import results, scorecard

PROFILE = "smoke"


def _figure1(train: float, test: float, ood: float, paper: tuple[float, float, float]) -> list:
    return [{"evaluated on": label, "role": role, "mean bpd": v, "paper bpd": p, "images used": "n",
             "AUROC vs test": 0.5}
            for label, role, v, p in zip(("A-Train", "A-Test", "B-Test"), ("train", "test", "ood"),
                                         (train, test, ood), paper, strict=True)]


def _saved() -> dict[str, dict]:
    """Minimal results in the shapes the chapters save (the chapters' smoke build checks the
    real shapes end to end)."""
    nan = float("nan")
    other = {"evaluated on": "MNIST-Test (as 32x32 RGB)", "role": "other OOD (converted)",
             "mean bpd": 3.0, "paper bpd": nan, "images used": "n", "AUROC vs test": 0.1}
    terms = [{"term": "log p(z)", "OOD − test (nats)": -50.0},
             {"term": "log |det|", "OOD − test (nats)": 80.0}]
    return {
        "phenomenon": {"tables": {
            "cifar10": _figure1(4.0, 4.05, 2.7, (3.386, 3.464, 2.389)) + [other],
            "fashion_mnist": _figure1(3.7, 3.8, 2.4, (2.902, 2.958, 1.833)),
            "notmnist": _figure1(4.0, 3.8, 3.2, (nan, nan, nan))}},
        "families": {"table": [
            {"family": f, "trained on": "CIFAR10", "OOD − test": g}
            for f, g in (("Glow", -1.3), ("PixelCNN", -0.2), ("VAE", -0.9))]},
        "decomposition": {d: {"terms": terms} for d in ("notmnist", "cifar10", "fashion_mnist")},
        "constant_volume": {"gaps": [
            {"model": "CV-Glow (additive)", "trained on": name, "at every step": True,
             "steps with OOD preferred": 14, "logged steps": 14, "final gap": -1.2}
            for name in ("CIFAR10", "FashionMNIST")]},
        "second_order": {
            "channel_sums": [{"pair": "CIFAR10-Train − SVHN-Test", "channel": c,
                              "Σ_hw (σ²_p* − σ²_q), ours": v, "images": "n"}
                             for c, v in zip("RGB", (12.0, 7.0, 15.0), strict=True)],
            "gaps": [{"model": "CV-Glow (additive)", "trained on": "CIFAR10", "paper": 900.0,
                      "measured": 1000.0, "total": 2000.0}],
            "graying": [{"model": m, "set": s, "mean bpd": v}
                        for m in ("Glow (affine)", "CV-Glow (additive)")
                        for s, v in (("CIFAR10-Test", 4.0), ("CIFAR10-Test, grey", 3.5))]},
    }


@pytest.fixture
def saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, dict]:
    monkeypatch.setenv("OOD_RESULTS_DIR", str(tmp_path))
    content = _saved()
    for name, obj in content.items():
        results.save_json(PROFILE, name, obj)
    return content


def test_every_claim_is_judged_from_saved_results(saved: dict) -> None:
    card = scorecard.scorecard(PROFILE)
    assert list(card["claim"]) == list(range(1, 9))
    assert card["this build"].str.len().min() > 20 and not card.isna().any().any()
    assert list(card["verdict"]) == [scorecard.HOLDS] * 7 + [scorecard.UNTESTABLE]


@pytest.mark.parametrize(("name", "change", "claim", "verdict"), [
    ("phenomenon", lambda s: s["tables"]["cifar10"][2].update({"mean bpd": 5.0}), 1,
     scorecard.NOT_HERE),
    ("families", lambda s: s["table"][1].update({"OOD − test": -2.0}), 3, scorecard.PARTLY),
    ("constant_volume", lambda s: s["gaps"][0].update({"at every step": False}), 5,
     scorecard.PARTLY),
    ("second_order", lambda s: s["gaps"][0].update({"paper": -900.0}), 6, scorecard.PARTLY),
])
def test_a_changed_saved_number_changes_the_verdict(saved: dict, name: str, change, claim: int,
                                                    verdict: str) -> None:
    change(saved[name])
    results.save_json(PROFILE, name, saved[name])
    card = scorecard.scorecard(PROFILE).set_index("claim")
    assert card.loc[claim, "verdict"] == verdict


def test_a_missing_result_fails_loudly_naming_the_claim(saved: dict, tmp_path: Path) -> None:
    (tmp_path / PROFILE / "families.json").unlink()
    with pytest.raises(results.MissingResultError, match="claim 3 needs result 'families'"):
        scorecard.scorecard(PROFILE)


def test_fidelity_lists_every_published_number(saved: dict) -> None:
    table = scorecard.fidelity(PROFILE)
    assert len(table) == 6 + 3
    first = table.iloc[0]
    assert first["ours − paper"] == pytest.approx(first["ours"] - first["paper"])
