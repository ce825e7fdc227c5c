"""Where the project keeps things.

Every location can be moved with an environment variable so that CI, a laptop and a
GPU machine can share one checkout:

| what                         | default                              | variable           |
|------------------------------|--------------------------------------|--------------------|
| project root                 | the folder holding ``ood_lib/``      |                    |
| build outputs                | ``<root>/_build``                    | ``OOD_BUILD_DIR``  |
| results saved by chapters    | ``<build>/results/<profile>``        | ``OOD_RESULTS_DIR``|
| shipped checkpoints          | ``<root>/checkpoints``               | ``OOD_CHECKPOINTS``|
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT: Path = Path(__file__).resolve().parents[1]


def build_dir() -> Path:
    """Folder for everything a build writes (executed notebooks, HTML, results)."""
    return Path(os.environ.get("OOD_BUILD_DIR", PROJECT_ROOT / "_build"))


def results_dir(profile: str) -> Path:
    """Folder where chapters of one profile save the results later chapters read."""
    base = os.environ.get("OOD_RESULTS_DIR")
    return Path(base) / profile if base else build_dir() / "results" / profile


def checkpoints_dir() -> Path:
    """Folder of model checkpoints: shipped (committed) ones and locally trained ones."""
    return Path(os.environ.get("OOD_CHECKPOINTS", PROJECT_ROOT / "checkpoints"))
