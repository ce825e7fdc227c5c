"""The chapters' data root, resolved and checked by the chapters' own rule.

The runner needs the data root twice before any chapter runs: to refuse a ``--data-root`` or
``$OOD_DATA_ROOT`` that does not exist (a usage error, said once, not a failure in the first
chapter) and to hash the root's manifest (:func:`book_runner.skip.data_sha256`). Both use
:func:`ood_lib.data.files.checked_data_root`, the rule the chapters use; that module is
torch-free, so the runner calls it in its own process.
"""

from __future__ import annotations

from pathlib import Path

from book_runner.errors import DataRootError
from ood_lib.data import files


def checked_data_root(data_root: str | None) -> Path:
    """:func:`ood_lib.data.files.checked_data_root` of ``data_root`` (``None``:
    ``$OOD_DATA_ROOT``, ``../shared/data`` or the download cache). Raises
    :class:`DataRootError` with its message for an unusable root."""
    try:
        return files.checked_data_root(data_root)
    except files.DataError as exc:
        raise DataRootError(str(exc)) from exc
