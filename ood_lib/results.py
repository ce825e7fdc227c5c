"""Results a chapter saves for the chapters after it.

A chapter computes something once (bits/dim tables, per-image log-likelihoods, data
statistics) and saves it under a short name in ``paths.results_dir(profile)``; a later
chapter (the decomposition, the remedies, the scorecard) loads it by that name instead of
recomputing. Three kinds, one function pair each:

- ``save_record`` / ``load_record`` for a chapter's result, a typed record of
  :mod:`ood_lib.records` (JSON on disk, every field checked on load);
- ``save_json`` / ``load_json`` for a chapter's own bookkeeping that no other chapter reads;
- ``save_arrays`` / ``load_arrays`` for per-image arrays (``.npz``, the score cache).

Every file is written whole or not at all (a temporary file renamed over it), so a chapter
executing beside another (``python -m book_runner --jobs 2``) never reads half a file; and
:func:`lock` lets two such chapters that need the same cache entry compute it once.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ood_lib.paths import results_dir
from ood_lib.records import Record, from_json, to_json

R = TypeVar("R", bound=Record)


class MissingResultError(FileNotFoundError):
    """A chapter asked for a result that no earlier chapter of this profile saved."""


def _path(profile: str, name: str, suffix: str) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"result name must be a plain file stem, got {name!r}")
    return results_dir(profile) / f"{name}{suffix}"


def _missing(path: Path, name: str, profile: str) -> MissingResultError:
    return MissingResultError(
        f"no result {name!r} for profile {profile!r} at {path}; run the chapter that "
        f"saves it first (python -m book_runner --profile {profile})"
    )


def _replace(path: Path, write: Any) -> Path:
    """Write ``path`` through ``write(temporary path)`` and an atomic rename: a reader sees the
    old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextmanager
def lock(profile: str, name: str, wait: bool = True) -> Iterator[bool]:
    """Hold the exclusive lock of result ``name`` of ``profile`` (``flock`` on a file in the
    results folder's ``locks/``) for the ``with`` block, which gets ``True``: of two processes
    that both want to compute ``name``, one computes it while the other waits, then finds it
    saved. A wait is printed to stderr with its length (side by side, the time a chapter spent
    idle). With ``wait=False`` a lock held by another process is not waited for: the block gets
    ``False`` and holds nothing."""
    path = _path(profile, name, ".lock")
    path = path.parent / "locks" / path.name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            t0 = time.perf_counter()
            fcntl.flock(f, fcntl.LOCK_EX)
            print(f"waited {time.perf_counter() - t0:.1f} s for {name} (another process held "
                  "its lock)", file=sys.stderr, flush=True)
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def save_json(profile: str, name: str, obj: dict[str, Any]) -> Path:
    """Save a dict of JSON values as ``<results>/<profile>/<name>.json``."""
    text = json.dumps(obj, indent=1, sort_keys=True, default=_to_json)
    return _replace(_path(profile, name, ".json"), lambda tmp: tmp.write_text(text))


def load_json(profile: str, name: str) -> dict[str, Any]:
    """Load what ``save_json`` saved."""
    path = _path(profile, name, ".json")
    if not path.exists():
        raise _missing(path, name, profile)
    return json.loads(path.read_text())


def save_record(profile: str, record: Record) -> Path:
    """Save a chapter's typed result as ``<results>/<profile>/<record.NAME>.json``."""
    return save_json(profile, record.NAME, to_json(record))


def load_record(profile: str, cls: type[R]) -> R:
    """Load a chapter's typed result; a missing file names the chapter that saves it, a field
    that does not match the type raises :class:`ood_lib.records.RecordError`."""
    try:
        value = load_json(profile, cls.NAME)
    except MissingResultError as err:
        raise MissingResultError(f"{err} (chapter {cls.CHAPTER} saves it)") from err
    return from_json(cls, value)


def save_arrays(profile: str, name: str, **arrays: np.ndarray) -> Path:
    """Save named arrays as ``<results>/<profile>/<name>.npz``."""
    return _replace(_path(profile, name, ".npz"), lambda tmp: np.savez(tmp, **arrays))


def load_arrays(profile: str, name: str) -> dict[str, np.ndarray]:
    """Load what ``save_arrays`` saved."""
    path = _path(profile, name, ".npz")
    if not path.exists():
        raise _missing(path, name, profile)
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _to_json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot save {type(value).__name__} as JSON")


# Fields that time a run rather than compute a result: left out of :func:`compare`.
TIMING_FIELDS = frozenset({"seconds", "wall_s", "cpu_s", "session_s", "finished", "finished_utc"})


def _leaves(value: Any, path: str = "") -> dict[str, Any]:
    """Every leaf of a JSON value by its path (``a.b[2].c``), timing fields left out."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() if key not in TIMING_FIELDS
                for k, v in _leaves(item, f"{path}.{key}" if path else key).items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _leaves(item, f"{path}[{i}]").items()}
    return {path: value}


def compare(before: Path, after: Path) -> list[tuple[str, Any, Any]]:
    """Every saved number or value that differs between two results folders (e.g. the
    ``_build/results/<profile>`` of two builds): ``(file:path, before, after)`` for each JSON
    leaf that differs or exists in one only (``None`` on the other side), timing fields
    (:data:`TIMING_FIELDS`) excluded. Empty: the builds saved identical results."""
    names = sorted({p.name for p in before.glob("*.json")} | {p.name for p in after.glob("*.json")})
    diffs = []
    for name in names:
        a, b = ({} if not (d / name).exists() else _leaves(json.loads((d / name).read_text()))
                for d in (before, after))
        diffs += [(f"{name}:{key}", a.get(key), b.get(key)) for key in sorted(a.keys() | b.keys())
                  if a.get(key) != b.get(key)]
    return diffs


def main(argv: list[str] | None = None) -> None:
    """``python -m ood_lib.results compare BEFORE AFTER``: print every differing saved value."""
    parser = argparse.ArgumentParser(description="Compare the saved results of two builds.")
    parser.add_argument("command", choices=["compare"])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    diffs = compare(args.before, args.after)
    for key, a, b in diffs:
        print(f"{key}: {a!r} -> {b!r}")
    n = len({p.name for p in args.before.glob("*.json")})
    print(f"{len(diffs)} differing values in {n} result files (timing fields excluded)")


if __name__ == "__main__":
    main()
