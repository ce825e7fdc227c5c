"""The content-keyed score cache and non-finite scores."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ood_lib import results, scoring, transforms
from ood_lib.data import image_sets, store
from ood_lib.zoo import registry
from tests.conftest import tiny_arrays


@pytest.fixture
def trained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_root: Path) -> registry.TrainedModel:
    monkeypatch.setenv("OOD_BUILD_DIR", str(tmp_path / "build"))
    return registry.get("glow", "cifar10", "smoke", data_root=data_root, progress=False)


def _mnist_as_rgb(root: Path) -> image_sets.EvalSet:
    return image_sets.from_split(store.load("mnist", "test", root), "ood", 3, None)


@pytest.mark.slow
def test_cache_hits_only_on_the_same_checkpoint_images_and_version(
    trained: registry.TrainedModel, tmp_root: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = _mnist_as_rgb(tmp_root("mnist_test"))
    a = scoring.score(trained, first, "smoke", progress=False)
    assert np.array_equal(scoring.score(trained, first, "smoke", progress=False)["bpd"], a["bpd"])

    # A changed data root: same set name, other images -> recomputed, not returned.
    other = tiny_arrays()
    other["x"] = 255 - other["x"]
    second = _mnist_as_rgb(tmp_root("mnist_test", **other))
    assert second.name == first.name and not np.array_equal(second.images, first.images)
    b = scoring.score(trained, second, "smoke", progress=False)
    assert not np.allclose(a["bpd"], b["bpd"])

    # A changed conversion (grey -> RGB) of the same files -> recomputed.
    monkeypatch.setattr(transforms, "grey28_to_rgb32", lambda x: 255 - _grey_to_rgb(x))
    third = _mnist_as_rgb(tmp_root("mnist_test", **other))
    c = scoring.score(trained, third, "smoke", progress=False)
    assert not np.allclose(b["bpd"], c["bpd"])

    # A changed checkpoint or scorer version -> recomputed (the stored key says which).
    name = scoring.cache_name(scoring.cache_key(trained, third.images))
    stored = results.load_arrays("smoke", name)
    assert str(stored["cache_label"]) == f"scores-{trained.key}-{third.name}"
    assert str(stored["cache_images_sha256"]) == scoring.images_sha256(third.images)
    assert str(stored["cache_checkpoint_sha256"]) == trained.record["sha256"]
    results.save_arrays("smoke", name, **{**stored, "bpd": stored["bpd"] + 1.0})
    assert np.array_equal(scoring.score(trained, third, "smoke", progress=False)["bpd"],
                          stored["bpd"] + 1.0)  # a hit returns what is stored ...
    version = scoring.SCORER_VERSION
    monkeypatch.setattr(scoring, "SCORER_VERSION", "test-bump")
    assert np.array_equal(scoring.score(trained, third, "smoke", progress=False)["bpd"], c["bpd"])
    monkeypatch.setattr(scoring, "SCORER_VERSION", version)
    monkeypatch.setitem(trained.record, "sha256", "0" * 64)
    results.save_arrays("smoke", name, **{**stored, "bpd": stored["bpd"] + 1.0})
    assert np.array_equal(scoring.score(trained, third, "smoke", progress=False)["bpd"], c["bpd"])


_grey_to_rgb = transforms.grey28_to_rgb32


def test_cache_is_shared_by_content_whatever_the_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two chapters asking for the same thing (equal keys) under different names share one
    entry; another key is another entry; an entry saved by name before is adopted."""
    monkeypatch.setenv("OOD_BUILD_DIR", str(tmp_path / "build"))
    calls: list[str] = []

    def compute(tag: str) -> Callable[[], dict[str, np.ndarray]]:
        return lambda: calls.append(tag) or {"bpd": np.array([1.0, 2.0]) + len(calls)}

    key = {"checkpoint_sha256": "c" * 64, "images_sha256": "i" * 64, "scorer_version": "3"}
    first = scoring.cached("smoke", "scores-glow-x-cifar10_test", key, compute("first"))
    again = scoring.cached("smoke", "intervention-glow-x-b2c453f0", key, compute("again"))
    assert calls == ["first"] and np.array_equal(first["bpd"], again["bpd"])
    # the entry keeps the seconds its computation took, beside the key, never among the arrays
    stored = results.load_arrays("smoke", scoring.cache_name(key))
    assert float(stored["cache_seconds"]) >= 0 and set(first) == {"bpd"}
    other = scoring.cached("smoke", "scores-glow-x-cifar10_test", {**key, "images_sha256": "j" * 64},
                           compute("other"))
    assert calls == ["first", "other"] and not np.array_equal(other["bpd"], first["bpd"])
    assert scoring.cache_name(key) != scoring.cache_name({**key, "statistic": "latent_norm"})

    # a name-keyed entry of the previous cache: adopted when its stored key matches ...
    old_key = {**key, "checkpoint_sha256": "d" * 64}
    results.save_arrays("smoke", "scores-old", bpd=np.array([7.0]),
                        **{f"cache_{k}": np.array(v) for k, v in old_key.items()})
    adopted = scoring.cached("smoke", "scores-old", old_key, compute("never"))
    assert np.array_equal(adopted["bpd"], [7.0]) and "never" not in calls
    assert np.array_equal(results.load_arrays("smoke", scoring.cache_name(old_key))["bpd"], [7.0])
    # ... and recomputed when it does not
    fresh = scoring.cached("smoke", "scores-old", {**old_key, "scorer_version": "4"},
                           compute("fresh"))
    assert calls[-1] == "fresh" and not np.array_equal(fresh["bpd"], [7.0])


def test_finite_mean_counts_infinite_scores() -> None:
    assert scoring.finite_mean(np.array([1.0, 3.0, np.inf])) == (2.0, 1)
    assert scoring.finite_mean(np.array([1.0, 3.0])) == (2.0, 0)
    with pytest.raises(ValueError, match="NaN"):
        scoring.finite_mean(np.array([1.0, np.nan]))


def test_an_entry_wanted_by_two_processes_at_once_is_computed_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Two chapters executing side by side (``book_runner --jobs 2``) that need one entry: the
    second waits on the entry's lock while the first computes, then reads what it saved, and
    says how long it waited.
    (Threads here: each ``flock`` is on its own open file, so they exclude each other as two
    processes do.)"""
    monkeypatch.setenv("OOD_BUILD_DIR", str(tmp_path / "build"))
    key = {"checkpoint_sha256": "c" * 64, "images_sha256": "i" * 64, "scorer_version": "3"}
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def slow() -> dict[str, np.ndarray]:
        calls.append("first")
        started.set()
        assert release.wait(10)
        return {"bpd": np.array([1.0, 2.0])}

    got: dict[str, dict[str, np.ndarray]] = {}
    first = threading.Thread(target=lambda: got.update(first=scoring.cached("smoke", "a", key, slow)))
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=lambda: got.update(second=scoring.cached(
        "smoke", "b", key, lambda: calls.append("second") or {"bpd": np.array([9.0])})))
    second.start()
    second.join(0.5)
    assert second.is_alive()  # waiting for the lock, not computing
    release.set()
    first.join(10)
    second.join(10)
    assert calls == ["first"]
    assert np.array_equal(got["second"]["bpd"], [1.0, 2.0])
    waits = [line for line in capsys.readouterr().err.splitlines() if line.startswith("waited")]
    assert len(waits) == 1 and scoring.cache_name(key) in waits[0]


def test_score_all_computes_the_entries_no_other_process_is_computing_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another chapter holds entry ``a``'s lock and finishes it only after this one has
    computed ``b``: ``score_all([a, b])`` computes ``b`` without waiting, then reads ``a``."""
    monkeypatch.setenv("OOD_BUILD_DIR", str(tmp_path / "build"))
    computed_here: list[str] = []
    b_done, a_started = threading.Event(), threading.Event()

    def fake_entry(model: str, name: str, progress: bool = True) -> tuple:
        def compute() -> dict[str, np.ndarray]:
            computed_here.append(name)
            if name == "b":
                b_done.set()
            return {"bpd": np.array([1.0 if name == "b" else 9.0])}
        return name, {"model": model, "images": name}, compute

    def other_chapter() -> None:
        def slow() -> dict[str, np.ndarray]:
            a_started.set()
            assert b_done.wait(10)  # finishes only once b is computed by score_all
            return {"bpd": np.array([7.0])}
        scoring.cached("smoke", "a", {"model": "m", "images": "a"}, slow)

    monkeypatch.setattr(scoring, "_score_entry", fake_entry)
    other = threading.Thread(target=other_chapter)
    other.start()
    assert a_started.wait(10)
    got = scoring.score_all([("m", "a"), ("m", "b")], "smoke")  # type: ignore[list-item]
    other.join(10)
    assert computed_here == ["b"]  # a was the other chapter's
    assert [g["bpd"][0] for g in got] == [7.0, 1.0]


def test_a_result_file_is_replaced_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save that fails midway leaves the previous file as it was and no temporary file."""
    monkeypatch.setenv("OOD_BUILD_DIR", str(tmp_path / "build"))
    results.save_arrays("smoke", "x", a=np.arange(3))

    def disk_full(path: Path, **_: np.ndarray) -> None:
        Path(path).write_bytes(b"PK half a zip")
        raise OSError("No space left on device")

    monkeypatch.setattr(results.np, "savez", disk_full)
    with pytest.raises(OSError, match="No space"):
        results.save_arrays("smoke", "x", a=np.arange(4))
    monkeypatch.undo()
    monkeypatch.setenv("OOD_BUILD_DIR", str(tmp_path / "build"))
    assert np.array_equal(results.load_arrays("smoke", "x")["a"], np.arange(3))
    assert [p.name for p in results.results_dir("smoke").iterdir()] == ["x.npz"]
