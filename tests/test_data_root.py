"""An explicit data root that does not exist is an error naming it, never a download into it.

The root can be explicit in three ways: the ``data_root`` argument of ``ood_lib.data`` (the
chapters' parameter), ``--data-root`` of the book runner, and ``$OOD_DATA_ROOT``. Only the
download cache (``$OOD_CACHE``) may be missing: online mode creates it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from book_runner import cli, execute
from ood_lib.data import download, files, store
from ood_lib.data.files import MissingDataError


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch, no_network: None) -> list[tuple]:
    """Record (and refuse) any call of the online downloader."""
    calls: list[tuple] = []

    def refuse(*args: object) -> None:
        calls.append(args)
        raise AssertionError(f"download attempted: {args}")

    monkeypatch.setattr(store, "download", refuse)
    monkeypatch.setattr(download, "torchvision_split", refuse)
    for var in ("OOD_DATA_ROOT", "OOD_DATA"):
        monkeypatch.delenv(var, raising=False)
    return calls


@pytest.mark.parametrize("mode", ["auto", "online", "offline"])
def test_missing_argument_root_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_download: list, mode: str
) -> None:
    monkeypatch.setenv("OOD_DATA", mode)
    missing = tmp_path / "no" / "such" / "root"
    for call in (
        lambda: store.load("mnist", "test", data_root=missing),
        lambda: store.available(missing),
        lambda: files.read_manifest(missing),
        lambda: files.checked_data_root(str(missing)),
    ):
        with pytest.raises(MissingDataError, match=rf"data root {missing} given by the data_root"):
            call()
    assert not missing.exists() and not missing.parent.exists(), "nothing may be created"
    assert no_download == []


def test_missing_env_root_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_download: list
) -> None:
    missing = tmp_path / "typo"
    monkeypatch.setenv("OOD_DATA_ROOT", str(missing))
    monkeypatch.setenv("OOD_DATA", "online")
    with pytest.raises(MissingDataError, match=rf"data root {missing} given by OOD_DATA_ROOT "
                       "does not exist"):
        store.load("cifar10", "train")
    assert not missing.exists() and no_download == []


def test_a_file_is_not_a_root(tmp_path: Path, no_download: list) -> None:
    file = tmp_path / "manifest.json"
    file.write_text("{}")
    with pytest.raises(MissingDataError, match=rf"data root {file} .* is not a folder"):
        store.available(file)


def test_existing_and_cache_roots_still_resolve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_download: list
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("OOD_DATA", "offline")
    with pytest.raises(MissingDataError, match=f"no manifest.json in the data root {empty}"):
        store.load("mnist", "test", empty)
    # The download cache is the one root that may be missing: online mode creates it. The
    # chapters pass the resolved root on explicitly, so that must be accepted too.
    cache = tmp_path / "cache"
    monkeypatch.setenv("OOD_CACHE", str(cache))
    assert files.checked_data_root(cache) == cache
    monkeypatch.setenv("OOD_DATA_ROOT", str(cache))
    assert files.checked_data_root() == cache


def test_runner_refuses_a_missing_data_root_before_executing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OOD_BUILD_DIR", str(tmp_path / "_build"))
    monkeypatch.delenv("OOD_DATA_ROOT", raising=False)
    missing = tmp_path / "missing"

    def no_execution(*args: object, **kwargs: object) -> float:
        raise AssertionError("a chapter was executed")

    monkeypatch.setattr(execute, "execute_notebook", no_execution)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--profile", "smoke", "--data-root", str(missing), "--no-html"])
    assert exit_info.value.code == 2
    assert f"data root {missing}" in capsys.readouterr().err
    monkeypatch.setenv("OOD_DATA_ROOT", str(missing))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--profile", "smoke", "--no-html"])
    assert exit_info.value.code == 2
    assert "OOD_DATA_ROOT" in capsys.readouterr().err
    assert not missing.exists()
