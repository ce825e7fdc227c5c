"""The book's pages: ``_toc.yml``, each page's source file, execution order and selection.

A page is a toc entry; it is executed when it is a jupytext notebook (a ``.md`` with a
jupytext header, or an ``.ipynb``) and copied otherwise. Each executed page of profile ``P``
goes to ``_build/executed/P/<docname>.ipynb`` (:func:`executed_path`).

Chapters share the content-keyed score cache, which any of them fills, but read no other
chapter's saved results, so they may execute in any order, side by side. The pages that do
read the others' results say so in their front matter: ``book: {execute: last}`` runs after
every chapter not marked so (the scorecard), and ``book: {after: [10_scorecard]}`` after the
pages it names as well (the at-a-glance page reads the scorecard's record).
:func:`prerequisites` gives a page's, :func:`execution_order` an order that respects them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from book_runner.errors import BookError, UnknownChapter
from ood_lib.paths import PROJECT_ROOT, build_dir

PAGE_SUFFIXES = (".md", ".ipynb")
LAST = "last"  # front matter ``book: {execute: last}``: executed after every other chapter
AFTER = "after"  # front matter ``book: {after: [names]}``: executed after the pages named


@dataclass(frozen=True)
class Page:
    """One entry of ``_toc.yml``: its toc path, its source file, whether it is executed,
    whether it is executed after every other chapter (``last``: a page that reads the others'
    results, such as the scorecard; ``book: {execute: last}`` in its front matter) and the
    short names of the pages whose results it reads besides (``after``: ``book: {after:
    [...]}``)."""

    docname: str
    source: Path
    is_notebook: bool
    last: bool = False
    after: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """Short name used on the command line and in timings, e.g. ``02_glow``."""
        return Path(self.docname).name


def front_matter(path: Path) -> dict[str, Any]:
    """The YAML front matter of a markdown file (``{}`` when it has none)."""
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return {}
    header, sep, _ = text[4:].partition("\n---")
    return (yaml.safe_load(header) or {}) if sep else {}


def toc_docnames(entry: Any) -> list[str]:
    """Every ``root``/``file`` in a jb-book toc (or part of one), in reading order."""
    if isinstance(entry, list):
        return [name for item in entry for name in toc_docnames(item)]
    if not isinstance(entry, dict):
        return []
    names = [entry[key] for key in ("root", "file") if key in entry]
    for key in ("parts", "chapters", "sections"):
        names += toc_docnames(entry.get(key, []))
    return names


def filter_toc(entry: Any, keep: set[str]) -> Any:
    """A copy of a toc (or part of one) without the entries whose ``file`` is not in ``keep``,
    and without the parts left with no chapter (jupyter-book rejects an empty part)."""
    if isinstance(entry, list):
        kept = [filter_toc(item, keep) for item in entry]
        return [item for item in kept if item is not None]
    if isinstance(entry, dict):
        if "file" in entry and entry["file"] not in keep:
            return None
        kept = {key: filter_toc(value, keep) for key, value in entry.items()}
        if "chapters" in kept and "file" not in kept and not kept["chapters"]:
            return None  # a part whose chapters were all left out
        return {key: value for key, value in kept.items()
                if not (key in ("parts", "sections") and value == [])}
    return entry


def read_toc(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """The parsed ``<root>/_toc.yml``."""
    return yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))


def find_page(docname: str, root: Path = PROJECT_ROOT) -> Page:
    """The page a toc entry names: ``<docname>.md``, else ``<docname>.ipynb``.

    The ``.md`` wins when both exist: an ``.ipynb`` beside it is a (git-ignored) copy made
    with jupytext for working in Jupyter.
    """
    candidates = [root / f"{docname}{suffix}" for suffix in PAGE_SUFFIXES]
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        raise BookError(
            f"_toc.yml lists {docname!r} but none of "
            + ", ".join(str(path.relative_to(root)) for path in candidates)
            + " exists"
        )
    header = front_matter(found) if found.suffix == ".md" else {}
    notebook = found.suffix == ".ipynb" or "jupytext" in header
    book = header.get("book") or {}
    last = notebook and book.get("execute") == LAST
    return Page(docname, found, notebook, last, tuple(book.get(AFTER, ())) if notebook else ())


def read_pages(root: Path = PROJECT_ROOT) -> list[Page]:
    """The pages listed in ``<root>/_toc.yml``, in reading order."""
    return [find_page(docname, root) for docname in toc_docnames(read_toc(root))]


def prerequisites(page: Page, pages: Sequence[Page]) -> list[Page]:
    """The notebook pages of ``pages`` that ``page`` reads results of, so executes after: every
    page not marked ``last`` if it is, and the pages its ``after`` names."""
    notebooks = [p for p in pages if p.is_notebook and p != page]
    unknown = set(page.after) - {p.name for p in notebooks}
    if unknown:
        raise BookError(f"{page.source}: book.after names {sorted(unknown)}, which are not "
                        "chapters of _toc.yml")
    return [p for p in notebooks if (page.last and not p.last) or p.name in page.after]


def execution_order(pages: Sequence[Page]) -> list[Page]:
    """The notebook pages in an order that runs each after its :func:`prerequisites`: toc
    order, the pages marked ``last`` after the others, each ``after`` the pages it names."""
    notebooks = [page for page in pages if page.is_notebook]
    order: list[Page] = []
    waiting = [page for page in notebooks if not page.last] + [p for p in notebooks if p.last]
    while waiting:
        ready = next((p for p in waiting
                      if all(q in order for q in prerequisites(p, notebooks))), None)
        if ready is None:
            raise BookError("the chapters' book.after entries form a cycle: "
                            + ", ".join(p.name for p in waiting))
        order.append(ready)
        waiting.remove(ready)
    return order


def select(pages: Sequence[Page], names: Iterable[str]) -> list[Page]:
    """The notebook pages named by ``--chapter`` (short name or toc path), and every page
    marked ``last`` or ``after`` (it reads the results the named ones save); all if none is
    named. In :func:`execution_order`."""
    names = list(names)
    notebooks = execution_order(pages)
    if not names:
        return notebooks
    known = {page.name: page for page in notebooks} | {page.docname: page for page in notebooks}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UnknownChapter(
            f"unknown chapter {', '.join(map(repr, unknown))}; the chapters in _toc.yml are: "
            + ", ".join(page.name for page in notebooks)
        )
    wanted = {known[name] for name in names}
    return [page for page in notebooks if page in wanted or page.last or page.after]


def executed_dir(profile: str) -> Path:
    """Where the executed pages of one profile go: ``_build/executed/<profile>``."""
    return build_dir() / "executed" / profile


def executed_path(page: Page, profile: str) -> Path:
    """The file the book is built from for ``page`` (an ``.ipynb`` for notebooks)."""
    suffix = ".ipynb" if page.is_notebook else page.source.suffix
    return executed_dir(profile) / f"{page.docname}{suffix}"
