"""Tests of the book runner (ood_lib.book) that do not execute the heavy chapters."""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

from ood_lib import book
from ood_lib.paths import PROJECT_ROOT

HEADER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
"""

PARAMETERS = """
```{code-cell} ipython3
:tags: [parameters]
profile = "cpu"
seed = 0
data_root = None
```
"""


def write_chapter(folder: Path, name: str, *cells: str) -> Path:
    """A jupytext MyST chapter with a parameters cell followed by ``cells``."""
    body = "".join(f"\n```{{code-cell}} ipython3\n{cell}\n```\n" for cell in cells)
    path = folder / f"{name}.md"
    path.write_text(f"{HEADER}\n# {name}\n{PARAMETERS}{body}")
    return path


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Build outputs under tmp_path, and os.environ restored after the runner changed it."""
    monkeypatch.setenv("OOD_BUILD_DIR", str(tmp_path / "_build"))
    saved = os.environ.copy()
    yield tmp_path
    os.environ.clear()
    os.environ.update(saved)


def test_toc_lists_existing_pages_root_first() -> None:
    pages = book.read_pages()
    assert pages[0].docname == "chapters/intro" and not pages[0].is_notebook
    assert len({page.name for page in pages}) == len(pages), "chapter names must be unique"
    for page in pages:
        assert page.source.is_file(), page.source
    notebooks = [page.name for page in pages if page.is_notebook]
    assert {"01_data", "02_glow", "03_phenomenon"} <= set(notebooks)


def test_toc_docnames_walks_parts_and_sections() -> None:
    toc = {
        "root": "a",
        "parts": [{"caption": "P", "chapters": [{"file": "b", "sections": [{"file": "c"}]}]}],
    }
    assert book.toc_docnames(toc) == ["a", "b", "c"]
    assert book.filter_toc(toc, {"a", "b"}) == {
        "root": "a", "parts": [{"caption": "P", "chapters": [{"file": "b"}]}]}
    # a part left without chapters is dropped (jupyter-book rejects empty parts), and so is
    # an empty list of parts
    two = {"root": "a", "parts": [{"caption": "P", "chapters": [{"file": "b"}]},
                                  {"caption": "Q", "chapters": [{"file": "d"}]}]}
    assert book.filter_toc(two, {"a", "d"}) == {
        "root": "a", "parts": [{"caption": "Q", "chapters": [{"file": "d"}]}]}
    assert book.filter_toc(toc, {"a", "c"}) == {"root": "a"}


def test_missing_toc_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    with pytest.raises(book.BookError, match="lists 'intro' but none of intro.md"):
        book.read_pages(tmp_path)


@pytest.mark.parametrize("docname", book.toc_docnames(book.read_toc()))
def test_chapter_has_one_parameters_cell(docname: str) -> None:
    page = book.find_page(docname)
    if not page.is_notebook:
        pytest.skip(f"{page.name} is a plain page")
    cells = [
        cell
        for cell in jupytext.read(page.source).cells
        if "parameters" in cell.get("metadata", {}).get("tags", [])
    ]
    assert len(cells) == 1, f"{page.name}: {len(cells)} cells tagged 'parameters'"
    assigned = {
        target.id
        for node in ast.walk(ast.parse(cells[0].source))
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }
    assert {"profile", "seed", "data_root"} <= assigned, f"{page.name} defines {assigned}"


def test_execute_injects_parameters_and_environment(isolated: Path) -> None:
    source = write_chapter(
        isolated,
        "tiny",
        "import os, ood_lib\nprint(profile, seed, data_root, os.getcwd(), os.environ['PYTHONPATH'])",
        "import matplotlib.pyplot as plt\nplt.plot([0, 1])\nplt.show()",
    )
    output = isolated / "out" / "tiny.ipynb"
    seconds = book.execute_notebook(
        source, output, {"profile": "smoke", "seed": 3, "data_root": None}
    )
    assert seconds > 0
    cells = nbformat.read(output, 4).cells
    folded = [c for c in cells if "hide-cell" in c.metadata.get("tags", [])]
    assert {t for c in folded for t in c.metadata["tags"]} >= {"parameters", "injected-parameters"}
    outputs = [out for cell in cells for out in cell.get("outputs", [])]
    printed = "".join(out.get("text", "") for out in outputs).split()
    assert printed[:4] == ["smoke", "3", "None", str(isolated)]
    assert str(PROJECT_ROOT) in printed[4].split(os.pathsep)
    assert any("image/png" in out.get("data", {}) for out in outputs), "figure not captured"
    assert not (isolated / "out" / "tiny.running.ipynb").exists()


def test_failing_cell_names_chapter_and_cell(isolated: Path) -> None:
    source = write_chapter(isolated, "broken", "x = 1", "y = x + 1\nraise ValueError('boom')")
    output = isolated / "out" / "broken.ipynb"
    output.parent.mkdir()
    output.write_text("stale")
    with pytest.raises(book.ChapterFailed) as failure:
        book.execute_notebook(source, output, {"profile": "smoke", "seed": 0, "data_root": None})
    message = str(failure.value)
    assert "chapter 'broken' failed in cell" in message
    assert "ValueError: boom" in message
    assert "| y = x + 1" in message
    assert not output.exists(), "a failed chapter must not leave a publishable notebook"
    assert (isolated / "out" / "broken.failed.ipynb").exists()


def test_unknown_chapter_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        book.main(["--chapter", "no_such_chapter", "--no-html"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown chapter 'no_such_chapter'" in err and "01_data" in err


def test_config_never_executes_and_builds_toc_only() -> None:
    config = yaml.safe_load((PROJECT_ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"
    assert config["only_build_toc_files"] is True
    for bib in config.get("bibtex_bibfiles", []):
        assert (PROJECT_ROOT / bib).is_file(), bib
