"""The chapters' data root, resolved and checked by ``ood_lib.data`` in a short subprocess.

The runner needs the data root twice before any chapter runs: to refuse a ``--data-root`` or
``$OOD_DATA_ROOT`` that does not exist (a usage error, said once, not a failure in the first
chapter) and to hash the root's manifest (:func:`book_runner.skip.data_sha256`). Both must use
the chapters' own rule, :func:`ood_lib.data.checked_data_root`; but ``ood_lib.data`` imports
torch (seconds), and the runner stays torch-free. So one subprocess per run that executes
chapters applies the rule and prints the root it resolves to (``--html-only`` needs none).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from book_runner.errors import BookError, DataRootError
from book_runner.execute import project_env

CHECK = """
import json, sys
from ood_lib.data import DataError, checked_data_root
try:
    answer = {"root": str(checked_data_root(json.loads(sys.argv[1])))}
except DataError as exc:
    answer = {"error": str(exc)}
print(json.dumps(answer))
"""


def checked_data_root(data_root: str | None) -> Path:
    """:func:`ood_lib.data.checked_data_root` of ``data_root`` (``None``: ``$OOD_DATA_ROOT``,
    ``../shared/data`` or the download cache), run in a subprocess with this environment.
    Raises :class:`DataRootError` with its message for an unusable root, :class:`BookError`
    if the check itself could not run."""
    done = subprocess.run([sys.executable, "-c", CHECK, json.dumps(data_root)],
                          capture_output=True, text=True, env=project_env(), check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise BookError(f"could not check the data root with ood_lib.data:\n{done.stderr}")
    answer = json.loads(lines[-1])
    if "error" in answer:
        raise DataRootError(answer["error"])
    return Path(answer["root"])
