"""Lint the code cells of the book's chapters with ruff (``make lint`` runs this).

Every jupytext chapter (``chapters/*.md`` with a ``jupytext`` header, and any ``.ipynb`` there
without a ``.md`` of the same name) is converted to a notebook under ``_build/lint/chapters/``
and checked by ``ruff check`` with the project's configuration (``pyproject.toml``); ruff reads
only the code cells of a notebook, so prose never counts. Messages name the converted notebook
and the cell: ``_build/lint/chapters/02_glow.ipynb:cell 17:2:19`` is line 2, column 19 of
the 17th cell of ``chapters/02_glow.md`` (markdown cells count too). A summary line follows,
naming the failing chapters; the exit status is 1 when any chapter fails.

Usage: ``python .ci/lint_chapters.py [ruff options] [chapters/NAME.md ...]`` (default: every
chapter), e.g. ``--output-format concise`` or ``--fix``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import jupytext

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "_build" / "lint" / "chapters"


def chapters(names: list[str]) -> list[Path]:
    """The jupytext chapters to lint: the named ones, or every one in ``chapters/``."""
    if names:
        return [Path(name).resolve() for name in names]
    found = []
    for path in sorted((ROOT / "chapters").iterdir()):
        if path.suffix == ".md" and "jupytext" in path.read_text(encoding="utf-8")[:2000]:
            found.append(path)
        elif path.suffix == ".ipynb" and not path.with_suffix(".md").exists():
            found.append(path)
    return found


def main(argv: list[str]) -> int:
    named = [a for a in argv if a.endswith((".md", ".ipynb")) and not a.startswith("-")]
    options = [a for a in argv if a not in named]  # passed on to ruff
    sources = chapters(named)
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    failed = []
    for source in sources:
        notebook = OUT / f"{source.stem}.ipynb"
        jupytext.write(jupytext.read(source), notebook, fmt="ipynb")
        command = [sys.executable, "-m", "ruff", "check", "--quiet",
                   "--config", str(ROOT / "pyproject.toml"), *options,
                   str(notebook.relative_to(ROOT))]
        ok = subprocess.run(command, cwd=ROOT, check=False).returncode == 0
        print(f"[lint] {source.relative_to(ROOT)}: {'ok' if ok else 'FAILS (see above)'}",
              flush=True)
        if not ok:
            failed.append(source.name)
    passed = len(sources) - len(failed)
    print(f"[lint] chapters: {passed} of {len(sources)} pass ruff"
          + (f"; failing: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
