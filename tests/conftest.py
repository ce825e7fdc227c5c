"""Shared fixtures: the offline data root, a tiny fake root for error cases, no network."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from ood_lib import catalogue
from ood_lib.models.glow import ActNorm
from ood_lib.paths import PROJECT_ROOT


def offline_root() -> Path:
    """``$OOD_DATA_ROOT`` or ``<project>/../shared/data``."""
    return Path(os.environ.get("OOD_DATA_ROOT") or PROJECT_ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The offline copies of the datasets; tests needing them skip where they are absent."""
    root = offline_root()
    if not (root / "manifest.json").is_file():
        pytest.skip(f"no offline data root with a manifest.json at {root}")
    return root


@pytest.fixture
def build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_root: Path) -> Path:
    """A private build and checkpoints folder under ``tmp_path`` (``smoke`` models train
    there), the offline data, and no ``--train-missing`` from the caller's environment."""
    monkeypatch.setenv("OOD_BUILD_DIR", str(tmp_path / "build"))
    monkeypatch.setenv("OOD_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("OOD_DATA_ROOT", str(data_root))
    monkeypatch.delenv(catalogue.TRAIN_MISSING_ENV, raising=False)
    return tmp_path


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to open a network connection fail loudly."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def write_entry(root: Path, stem: str, sha256: str | None = None, **arrays: np.ndarray) -> Path:
    """Write ``<root>/<stem>.npz`` and its manifest entry (sha256 of the file unless given)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{stem}.npz"
    np.savez(path, **arrays)
    manifest_path = root / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest[stem] = {
        "file": path.name,
        "sha256": sha256 or hashlib.sha256(path.read_bytes()).hexdigest(),
        "source": "synthetic test file",
    }
    manifest_path.write_text(json.dumps(manifest))
    return path


def tiny_arrays(n: int = 5, shape: tuple[int, int, int] = (28, 28, 1)) -> dict[str, np.ndarray]:
    """Valid synthetic ``x``, ``y``, ``index`` arrays (not a real dataset)."""
    rng = np.random.default_rng(0)
    return {
        "x": rng.integers(0, 256, size=(n, *shape), dtype=np.uint8),
        "y": np.arange(n, dtype=np.int64) % 10,
        "index": np.arange(n, dtype=np.int64),
    }


@pytest.fixture
def tmp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Factory writing one synthetic split file (+ manifest) into a fresh offline root."""
    monkeypatch.setenv("OOD_DATA", "offline")
    root = tmp_path / "root"

    def make(stem: str = "mnist_test", sha256: str | None = None, **arrays: np.ndarray) -> Path:
        write_entry(root, stem, sha256, **(arrays or tiny_arrays()))
        return root

    return make


def perturb(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Move every parameter off its (often trivial) initial value and mark actnorm initialised,
    so that tests of a freshly built model are not vacuous."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        for m in module.modules():
            if isinstance(m, ActNorm):
                m.initialized.fill_(True)
    return module
