"""Stage the executed pages as a book source folder and build it to HTML with jupyter-book.

The staged folder ``_build/book_src/<profile>`` holds ``_config.yml``, ``_toc.yml`` (less the
pages never executed for the profile), the executed pages, the chapters' static files such as
``references.bib`` or images, and the book's stylesheet folder ``_static/``. It is built with
``jupyter-book build -W -n --keep-going`` (any Sphinx warning fails the build) and the HTML is
copied to ``_build/html``. jupyter-book itself never executes anything
(``execute_notebooks: off``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from book_runner.errors import BookError
from book_runner.execute import project_env
from book_runner.pages import Page, executed_dir, executed_path, filter_toc, read_toc
from ood_lib.paths import PROJECT_ROOT, build_dir

PROFILE_MARKER = ".profile"  # in the built HTML folder: the profile of the last build
STATIC = "_static"  # the book's static files (CSS), at the project root


def stage_book(pages: Sequence[Page], profile: str, root: Path = PROJECT_ROOT) -> Path:
    """Assemble ``_build/book_src/<profile>``: config, toc, executed pages and static files.

    Static files are everything in the pages' source folders except notebook sources and
    ``.ipynb`` files. A page with no executed file for this profile is left out of the
    staged toc (with a note), so ``--chapter`` runs still build a consistent book.
    """
    staged = build_dir() / "book_src" / profile
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    sources = {page.source.name for page in pages if page.is_notebook}
    ignore = shutil.ignore_patterns(
        *sources, "*.ipynb", "__pycache__", ".ipynb_checkpoints", "*.py[co]"
    )
    for folder in sorted({page.source.parent for page in pages} - {root}):
        shutil.copytree(folder, staged / folder.relative_to(root), ignore=ignore)
    shutil.copy2(root / "_config.yml", staged / "_config.yml")
    if (root / STATIC).is_dir():  # the book's own CSS (jupyter-book adds every *.css in it)
        shutil.copytree(root / STATIC, staged / STATIC)

    available = {page.docname for page in pages if executed_path(page, profile).exists()}
    missing = [page.name for page in pages if page.docname not in available]
    if missing:
        print(f"[book] not executed for profile {profile!r}, left out: {', '.join(missing)}")
    toc = read_toc(root)
    if toc["root"] not in available:
        raise BookError(f"the root page {toc['root']!r} has no executed file")
    (staged / "_toc.yml").write_text(yaml.safe_dump(filter_toc(toc, available), sort_keys=False))
    for page in pages:
        if page.docname in available:
            target = staged / executed_path(page, profile).relative_to(executed_dir(profile))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(executed_path(page, profile), target)
    return staged


def build_html(staged: Path, profile: str) -> Path:
    """Run ``jupyter-book build`` on ``staged`` (warnings are errors); return ``_build/html``."""
    output = build_dir() / "jupyter-book" / profile
    command = [
        sys.executable,
        "-c",
        "from jupyter_book.cli.main import main; main()",
        "build",
        str(staged),
        "--path-output",
        str(output),
        "--all",
        "-W",
        "-n",
        "--keep-going",
    ]
    # _config.yml loads book_runner.sphinx_ext as a Sphinx extension
    if subprocess.run(command, check=False, env=project_env()).returncode != 0:
        raise BookError(f"jupyter-book build of {staged} failed (see the warnings above)")
    html = build_dir() / "html"
    shutil.rmtree(html, ignore_errors=True)
    shutil.copytree(output / "_build" / "html", html)
    (html / PROFILE_MARKER).write_text(profile + "\n")  # read by tests/test_browser.py
    return html
