"""``_build/executed/<profile>/timings.json``: each chapter's last successful execution.

Per chapter: its wall time (``seconds``), when it ``finished``, its parameters, and what
:mod:`book_runner.skip` needs to skip it next time (``inputs``, ``run``, ``outputs``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from book_runner.pages import executed_dir


def timings_path(profile: str) -> Path:
    """``_build/executed/<profile>/timings.json``."""
    return executed_dir(profile) / "timings.json"


def record_timing(profile: str, name: str, seconds: float, **info: Any) -> None:
    """Add one chapter's wall time (and ``info``) to ``timings.json``."""
    path = timings_path(profile)
    timings = json.loads(path.read_text()) if path.exists() else {}
    timings.setdefault("profile", profile)
    timings.setdefault("chapters", {})[name] = {
        "seconds": round(seconds, 2),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        **info,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(timings, indent=1) + "\n")


def read_timings(profile: str) -> dict[str, dict[str, Any]]:
    """The chapters' wall times recorded by :func:`record_timing` for ``profile`` (chapter name
    -> ``seconds``, ``finished``, ...); empty if none was recorded."""
    path = timings_path(profile)
    return json.loads(path.read_text()).get("chapters", {}) if path.exists() else {}


def forget_chapter(profile: str, name: str) -> None:
    """Drop a chapter's record from ``timings.json`` (after a failure: its results may be
    half written, so it and every later chapter must run again)."""
    path = timings_path(profile)
    if path.exists():
        timings = json.loads(path.read_text())
        if timings.get("chapters", {}).pop(name, None) is not None:
            path.write_text(json.dumps(timings, indent=1) + "\n")
