"""ood_lib.results.compare finds every saved value that changed between two builds, and
nothing else (timing fields are not results)."""

from __future__ import annotations

import json
from pathlib import Path

from ood_lib import results


def _write(folder: Path, name: str, obj: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(obj))


def test_compare_reports_changed_missing_and_new_values_but_not_timings(tmp_path: Path) -> None:
    before, after = tmp_path / "a", tmp_path / "b"
    record = {"gaps": [{"measured": 1.5, "seconds": 3.0}, {"measured": 2.0}], "models": {"x": "k"}}
    _write(before, "second_order", record)
    _write(after, "second_order", {**record, "gaps": [{"measured": 1.5, "seconds": 9.0},
                                                      {"measured": 2.5}]})
    _write(before, "only_before", {"v": 1})
    _write(after, "only_after", {"v": 2})
    diffs = results.compare(before, after)
    assert ("second_order.json:gaps[1].measured", 2.0, 2.5) in diffs
    assert ("only_before.json:v", 1, None) in diffs and ("only_after.json:v", None, 2) in diffs
    assert len(diffs) == 3  # the changed timing field is not a difference


def test_identical_builds_compare_empty(tmp_path: Path, capsys) -> None:
    for folder in ("a", "b"):
        _write(tmp_path / folder, "r", {"x": [1, 2.5, None], "wall_s": float(len(folder))})
    assert results.compare(tmp_path / "a", tmp_path / "b") == []
    results.main(["compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert "0 differing values in 1 result files" in capsys.readouterr().out
