"""Content hashes of a chapter's inputs, so that a warm rebuild skips the unchanged chapters.

A chapter is executed again only when something it may depend on changed since its last
successful execution under the same profile. Its inputs are named parts, each a sha256:

- source:      the chapter's own file;
- library:     every .py file under <root>/ood_lib (by path and content: the chapters call
               into all of it, and finding what one chapter imports is not worth the risk);
- models:      the models it may load: for cpu/paper the top-level *.json of the checkpoint
               folder (manifest.json with every model's key and sha256, the background
               selection files) and the record.json and log.csv of every model in the
               manifest (the chapters plot the logs). A smoke build trains its own models from
               the library code, the data and the parameters, all hashed here, so the smoke
               checkpoint folder is left out: otherwise a model trained by chapter 8 would
               make chapters 1-7 of the next build look changed;
- data:        the data root's manifest.json (every file's sha256), or, without one, the
               names and sizes of its files;
- environment: the Python version and every installed distribution's name and version;
- parameters:  profile, seed and data_root;
- earlier:     the run ids of the chapters whose saved results it reads
               (:func:`book_runner.pages.prerequisites`: the scorecard reads every chapter's,
               the at-a-glance page the scorecard's as well). Each successful execution gets a
               fresh run id, so re-executing a chapter re-executes the pages that read it. The
               other chapters share only the content-keyed score cache, whose entries are the
               same whoever computes them, so they do not depend on one another.

A chapter is skipped only if its executed notebook exists and every result file (*.json in
the results folder) it wrote on that execution is still there, unchanged. Training a model
during a cpu build (--train-missing) changes the manifest, so the next build executes every
chapter once more; a failed chapter forgets its run id, so it and the pages that read it run
again.
The parts are kept in ``timings.json`` (:mod:`book_runner.timings`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from book_runner.pages import Page
from ood_lib.paths import PROJECT_ROOT, checkpoints_dir, results_dir

LIBRARY = "ood_lib"


def sha256_bytes(*chunks: bytes) -> str:
    """sha256 of the chunks, each prefixed with its length (no ambiguous joins)."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(len(chunk).to_bytes(8, "little"))
        h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_sha256(paths: Iterable[Path], base: Path) -> str:
    """sha256 of the files' paths (relative to ``base``) and contents, in sorted order."""
    rows = sorted(f"{path.relative_to(base).as_posix()} {file_sha256(path)}" for path in paths)
    return sha256_bytes(*(row.encode() for row in rows))


def library_sha256(root: Path = PROJECT_ROOT) -> str:
    """Every ``.py`` file under ``<root>/ood_lib``, by relative path and content."""
    package = root / LIBRARY
    return files_sha256((p for p in package.rglob("*.py") if p.is_file()), root)


def models_sha256(profile: str) -> str:
    """The models a ``profile`` chapter may load (see the module docstring). The cpu and paper
    checkpoints live in :func:`ood_lib.paths.checkpoints_dir` (``ood_lib.zoo.registry``'s
    ``checkpoint_root`` of those profiles)."""
    if profile == "smoke":
        return sha256_bytes(b"smoke models: derived from library, data and parameters")
    root = checkpoints_dir()
    if not root.is_dir():
        return sha256_bytes(b"no checkpoint folder")
    files = [p for p in root.glob("*.json") if p.is_file()]
    manifest = root / "manifest.json"
    keys = json.loads(manifest.read_text()) if manifest.is_file() else {}
    for key in keys:
        files += [f for f in (root / key / "record.json", root / key / "log.csv") if f.is_file()]
    return files_sha256(files, root)


def data_sha256(root: Path) -> str:
    """The resolved data root's ``manifest.json``, or (without one) its files' names and
    sizes."""
    manifest = root / "manifest.json"
    if manifest.is_file():
        return file_sha256(manifest)
    if not root.is_dir():
        return sha256_bytes(b"no data root")
    rows = sorted(f"{p.relative_to(root).as_posix()} {p.stat().st_size}"
                  for p in root.rglob("*") if p.is_file())
    return sha256_bytes(*(row.encode() for row in rows))


def environment_sha256() -> str:
    """The Python version and every installed distribution's name and version."""
    dists = sorted({f"{d.metadata['Name']}=={d.version}"
                    for d in importlib.metadata.distributions() if d.metadata["Name"]})
    return sha256_bytes(sys.version.encode(), *(d.encode() for d in dists))


def shared_inputs(profile: str, parameters: dict[str, Any], data_root: Path,
                  root: Path = PROJECT_ROOT) -> dict[str, str]:
    """The input parts every chapter of one run shares (all but ``source`` and ``earlier``);
    ``data_root``: the data root ``parameters["data_root"]`` resolves to."""
    return {
        "library": library_sha256(root),
        "models": models_sha256(profile),
        "data": data_sha256(data_root),
        "environment": environment_sha256(),
        "parameters": sha256_bytes(json.dumps(parameters, sort_keys=True).encode()),
    }


def chapter_inputs(page: Page, shared: dict[str, str], earlier_runs: Sequence[str | None]
                   ) -> dict[str, str]:
    """A chapter's input parts: ``shared``, its source file and the run ids of the chapters
    it reads (``None``: never executed successfully)."""
    runs = [(run or "never executed").encode() for run in earlier_runs]
    return {"source": file_sha256(page.source), **shared, "earlier": sha256_bytes(*runs)}


def results_snapshot(profile: str) -> dict[str, tuple[int, int]]:
    """``(mtime_ns, size)`` of every ``*.json`` result file of ``profile`` (records)."""
    folder = results_dir(profile)
    if not folder.is_dir():
        return {}
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.glob("*.json")}


def written_results(profile: str, before: dict[str, tuple[int, int]]) -> dict[str, str]:
    """The result files written since ``before`` (:func:`results_snapshot`), with their sha256."""
    after = results_snapshot(profile)
    folder = results_dir(profile)
    return {name: file_sha256(folder / name) for name, stamp in sorted(after.items())
            if before.get(name) != stamp}


def reasons_to_execute(entry: dict[str, Any] | None, inputs: dict[str, str], executed: Path,
                       profile: str) -> list[str]:
    """Why a chapter must be executed (``[]``: it is unchanged and may be skipped): its last
    successful execution (``entry``, from ``timings.json``) is missing or had other input
    parts, its executed notebook is gone, or a result file it wrote is gone or changed."""
    if not entry or "inputs" not in entry or not entry.get("run"):
        return ["no successful execution recorded"]
    stored = entry["inputs"]
    changed = [part for part in inputs if stored.get(part) != inputs[part]]
    reasons = [f"{', '.join(changed)} changed"] if changed else []
    if not executed.exists():
        reasons.append("executed notebook missing")
    folder = results_dir(profile)
    for name, sha in entry.get("outputs", {}).items():
        path = folder / name
        if not path.is_file() or file_sha256(path) != sha:
            reasons.append(f"result {name} missing or changed")
    return reasons
