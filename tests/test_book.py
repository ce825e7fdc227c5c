"""Tests of the book runner (book_runner) that do not execute the heavy chapters."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

from book_runner import cli, errors, execute, pages, skip, timings
from book_runner.budgets import BUDGET_S, CHAPTER_BUDGET_S, HTML_ROW, budget_report
from ood_lib.paths import PROJECT_ROOT, results_dir

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
    toc_pages = pages.read_pages()
    assert toc_pages[0].docname == "chapters/intro" and not toc_pages[0].is_notebook
    assert len({page.name for page in toc_pages}) == len(toc_pages), "chapter names must be unique"
    for page in toc_pages:
        assert page.source.is_file(), page.source
    notebooks = [page.name for page in toc_pages if page.is_notebook]
    assert {"01_data", "02_glow", "03_phenomenon"} <= set(notebooks)


def test_toc_docnames_walks_parts_and_sections() -> None:
    toc = {
        "root": "a",
        "parts": [{"caption": "P", "chapters": [{"file": "b", "sections": [{"file": "c"}]}]}],
    }
    assert pages.toc_docnames(toc) == ["a", "b", "c"]
    assert pages.filter_toc(toc, {"a", "b"}) == {
        "root": "a", "parts": [{"caption": "P", "chapters": [{"file": "b"}]}]}
    # a part left without chapters is dropped (jupyter-book rejects empty parts), and so is
    # an empty list of parts
    two = {"root": "a", "parts": [{"caption": "P", "chapters": [{"file": "b"}]},
                                  {"caption": "Q", "chapters": [{"file": "d"}]}]}
    assert pages.filter_toc(two, {"a", "d"}) == {
        "root": "a", "parts": [{"caption": "Q", "chapters": [{"file": "d"}]}]}
    assert pages.filter_toc(toc, {"a", "c"}) == {"root": "a"}


def test_missing_toc_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    with pytest.raises(errors.BookError, match="lists 'intro' but none of intro.md"):
        pages.read_pages(tmp_path)


@pytest.mark.parametrize("docname", pages.toc_docnames(pages.read_toc()))
def test_chapter_has_one_parameters_cell(docname: str) -> None:
    page = pages.find_page(docname)
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
    seconds = execute.execute_notebook(
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
    with pytest.raises(errors.ChapterFailed) as failure:
        execute.execute_notebook(
            source, output, {"profile": "smoke", "seed": 0, "data_root": None})
    message = str(failure.value)
    assert "chapter 'broken' failed in cell" in message
    assert "ValueError: boom" in message
    assert "| y = x + 1" in message
    assert not output.exists(), "a failed chapter must not leave a publishable notebook"
    assert (isolated / "out" / "broken.failed.ipynb").exists()


def test_unknown_chapter_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--chapter", "no_such_chapter", "--no-html"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown chapter 'no_such_chapter'" in err and "01_data" in err


def test_config_never_executes_and_builds_toc_only() -> None:
    config = yaml.safe_load((PROJECT_ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"
    assert config["only_build_toc_files"] is True
    for bib in config.get("bibtex_bibfiles", []):
        assert (PROJECT_ROOT / bib).is_file(), bib


# --- the runner outside the library -------------------------------------------------------

IMPORTED = """
import importlib, json, pkgutil, sys
import book_runner
names = [f"book_runner.{m.name}" for m in pkgutil.iter_modules(book_runner.__path__)]
for name in sys.argv[1:] or names:
    importlib.import_module(name)
print(json.dumps({"imported": sys.argv[1:] or names, "modules": sorted(sys.modules)}))
"""


def fresh_import(*names: str) -> dict[str, list[str]]:
    """Import ``names`` (default: ``book_runner`` and every submodule) in a fresh interpreter
    started in the project root; what it imported and every module then loaded."""
    done = subprocess.run([sys.executable, "-c", IMPORTED, *names], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_the_runner_and_its_sphinx_extension_import_without_torch() -> None:
    loaded = fresh_import()
    assert {"book_runner.cli", "book_runner.__main__", "book_runner.sphinx_ext"} <= set(
        loaded["imported"])
    assert "torch" not in loaded["modules"]
    library = {name for name in loaded["modules"] if name.split(".")[0] == "ood_lib"}
    assert library <= {"ood_lib", "ood_lib.paths", "ood_lib.catalogue", "ood_lib.allocator",
                       "ood_lib.data", "ood_lib.data.files"}
    # Sphinx loads the extension in every HTML build: nothing of the library at all
    loaded = fresh_import("book_runner.sphinx_ext")
    assert "torch" not in loaded["modules"]
    assert not [name for name in loaded["modules"] if name.split(".")[0] == "ood_lib"]


# --- budgets ------------------------------------------------------------------------------


def test_cpu_budget_table_covers_every_chapter_and_fits_12_minutes_two_at_a_time() -> None:
    """Scheduled as the runner schedules them (two side by side, the longest ready chapter
    first, each after its prerequisites), the chapters' budgets and the HTML build's fill at
    most the 12 minutes of the cpu build."""
    budgets = CHAPTER_BUDGET_S["cpu"]
    assert BUDGET_S["cpu"] == 12 * 60
    toc = pages.read_pages()
    notebooks = pages.execution_order(toc)
    assert {p.name for p in notebooks} | {HTML_ROW} == set(budgets), (
        "a chapter without a budget (or a stale row)")
    free = [0.0, 0.0]  # when each of the two workers is next free
    finished: dict[str, float] = {}
    waiting = list(notebooks)
    while waiting:
        ready = [p for p in waiting if all(q.name in finished
                                           for q in pages.prerequisites(p, toc))]
        page = max(ready, key=lambda p: budgets[p.name])
        worker = free.index(min(free))
        start = max([free[worker]] + [finished[q.name] for q in pages.prerequisites(page, toc)])
        free[worker] = finished[page.name] = start + budgets[page.name]
        waiting.remove(page)
    assert max(finished.values()) + budgets[HTML_ROW] <= BUDGET_S["cpu"]


def test_budget_report_flags_a_chapter_over_its_budget_and_the_total() -> None:
    budgets = {"01_a": 20, "02_b": 15, HTML_ROW: 10}
    lines, over = budget_report("cpu", {"01_a": 12.0, "02_b": 31.0, HTML_ROW: 2.0},
                                budgets=budgets, total_budget=40)
    assert over == ["02_b", "total"]
    row = {line.split()[0]: line for line in lines[1:]}
    assert "OVER BUDGET" in row["02_b"] and "budget     15 s" in row["02_b"]
    assert "OVER BUDGET" not in row["01_a"] and "budget     20 s" in row["01_a"]
    assert row["total"].endswith("(OVER BUDGET)")
    lines, over = budget_report("cpu", {"01_a": 12.0}, skipped=["02_b"], budgets=budgets,
                                total_budget=40)
    assert over == [] and lines[-1].endswith("(within budget)")
    assert any("02_b" in line and "unchanged, skipped" in line for line in lines)
    # a chapter missing from a profile's table is flagged too: every chapter needs a budget
    _, over = budget_report("cpu", {"03_new": 1.0}, budgets=budgets, total_budget=40)
    assert over == ["03_new"]


def test_smoke_has_a_total_budget_only() -> None:
    lines, over = budget_report("smoke", {"01_data": 500.0, "02_glow": 200.0})
    assert over == ["total"] and "budget 10 min" in lines[0]
    assert not any("budget " in line for line in lines[1:-1])


# --- skipping unchanged chapters ----------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A tiny project (two chapters, a one-file library, a data root, a checkpoint folder) whose
    chapters "execute" by writing their output notebook (no kernel): each call is logged in
    ``<root>/executed.log``; chapter ``01_a`` also saves a result record."""
    root = tmp_path / "project"
    (root / "chapters").mkdir(parents=True)
    (root / "ood_lib").mkdir()
    (root / "ood_lib" / "lib.py").write_text("X = 1\n")
    (root / "_toc.yml").write_text(
        "format: jb-book\nroot: chapters/intro\nchapters:\n"
        "  - file: chapters/01_a\n  - file: chapters/02_b\n")
    (root / "chapters" / "intro.md").write_text("# Intro\n")
    for name in ("01_a", "02_b"):
        write_chapter(root / "chapters", name, "x = 1")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.json").write_text('{"a": {"sha256": "1"}}')
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "manifest.json").write_text('{}')
    monkeypatch.setenv("OOD_BUILD_DIR", str(tmp_path / "_build"))
    monkeypatch.setenv("OOD_CHECKPOINTS", str(tmp_path / "ckpt"))
    monkeypatch.setattr(skip, "environment_sha256", lambda: "env")

    def fake_execute(source: Path, output: Path, parameters: dict, **_: object) -> float:
        with open(root / "executed.log", "a") as log:
            log.write(source.stem + "\n")
        if source.stem == "01_a":
            results_dir(parameters["profile"]).mkdir(parents=True, exist_ok=True)
            (results_dir(parameters["profile"]) / "a_record.json").write_text("{}")
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text("{}")
        return 0.5

    monkeypatch.setattr(execute, "execute_notebook", fake_execute)
    monkeypatch.setattr(execute, "prepare_environment", lambda **_: None)  # no kernel here
    yield root


def build(root: Path, *extra: str) -> list[str]:
    """Run the runner on the tiny project (no HTML, one chapter at a time); the chapters it
    executed, in order."""
    log = root / "executed.log"
    log.unlink(missing_ok=True)
    data = root.parent / "data"
    assert cli.main(["--profile", "cpu", "--no-html", "--jobs", "1", "--data-root", str(data),
                     *extra],
                    root=root) == 0
    return log.read_text().split() if log.exists() else []


def test_unchanged_chapters_are_skipped_and_force_executes_them(
        project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert build(project) == ["01_a", "02_b"]
    assert build(project) == []
    out = capsys.readouterr().out
    assert "01_a: unchanged, skipped" in out and "02_b: unchanged, skipped" in out
    assert build(project, "--force") == ["01_a", "02_b"]
    assert build(project, "--chapter", "02_b") == []
    assert build(project, "--chapter", "02_b", "--force") == ["02_b"]
    recorded = timings.read_timings("cpu")
    assert set(recorded["02_b"]["inputs"]) == {"source", "library", "models", "data",
                                              "environment", "parameters", "earlier"}
    assert recorded["01_a"]["outputs"] == {"a_record.json": skip.file_sha256(
        results_dir("cpu") / "a_record.json")}


@pytest.mark.parametrize("change, executed", [
    ("source of the second", ["02_b"]),
    ("source of the first", ["01_a"]),  # chapters read no other chapter's results
    ("library", ["01_a", "02_b"]),
    ("new library file", ["01_a", "02_b"]),
    ("model manifest", ["01_a", "02_b"]),
    ("background selection", ["01_a", "02_b"]),
    ("data manifest", ["01_a", "02_b"]),
    ("environment", ["01_a", "02_b"]),
    ("seed", ["01_a", "02_b"]),
    ("record of the first deleted", ["01_a"]),
    ("executed notebook of the second deleted", ["02_b"]),
])
def test_a_changed_input_re_executes_the_chapter(
        project: Path, monkeypatch: pytest.MonkeyPatch, change: str, executed: list[str]) -> None:
    assert build(project) == ["01_a", "02_b"]
    extra: tuple[str, ...] = ()
    chapters = project / "chapters"
    if change == "source of the second":
        (chapters / "02_b.md").write_text((chapters / "02_b.md").read_text() + "\nmore prose\n")
    elif change == "source of the first":
        (chapters / "01_a.md").write_text((chapters / "01_a.md").read_text() + "\nmore prose\n")
    elif change == "library":
        (project / "ood_lib" / "lib.py").write_text("X = 2\n")
    elif change == "new library file":
        (project / "ood_lib" / "sub").mkdir()
        (project / "ood_lib" / "sub" / "new.py").write_text("")
    elif change == "model manifest":
        (project.parent / "ckpt" / "manifest.json").write_text('{"glow-x": {"sha256": "2"}}')
    elif change == "background selection":
        (project.parent / "ckpt" / "background-cifar10.json").write_text('{"mu": 0.1}')
    elif change == "data manifest":
        (project.parent / "data" / "manifest.json").write_text('{"a": {"sha256": "2"}}')
    elif change == "environment":
        monkeypatch.setattr(skip, "environment_sha256", lambda: "another torch")
    elif change == "seed":
        extra = ("--seed", "1")
    elif change == "record of the first deleted":
        (results_dir("cpu") / "a_record.json").unlink()
    elif change == "executed notebook of the second deleted":
        next(pages.executed_dir("cpu").rglob("02_b.ipynb")).unlink()
    assert build(project, *extra) == executed
    assert build(project, *extra) == []  # and then it is unchanged again


def test_a_failed_chapter_is_executed_again(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert build(project) == ["01_a", "02_b"]
    working = execute.execute_notebook

    def failing(source: Path, *_: object, **__: object) -> float:
        raise errors.ChapterFailed(f"chapter {source.stem!r} failed")

    monkeypatch.setattr(execute, "execute_notebook", failing)
    assert cli.main(["--profile", "cpu", "--no-html", "--chapter", "01_a", "--force",
                     "--data-root", str(project.parent / "data")], root=project) == 1
    assert "01_a" not in timings.read_timings("cpu")
    monkeypatch.setattr(execute, "execute_notebook", working)
    assert build(project) == ["01_a"]


def test_budget_report_holds_the_wall_time_against_the_budget_when_chapters_overlap() -> None:
    lines, over = budget_report("cpu", {"01_a": 50.0, "02_b": 40.0}, budgets={},
                                total_budget=60, wall=55.0)
    assert "(sum)" in lines[-2] and "90.0 s" in lines[-2]
    assert lines[-1].split()[:3] == ["total", "55.0", "s"] and over == []  # 90 s summed
    assert "(sum)" not in "".join(budget_report("cpu", {"01_a": 50.0}, budgets={},
                                                total_budget=60, wall=50.2)[0])


def test_budget_report_lists_rows_in_toc_order_with_the_html_build_last() -> None:
    lines, _ = budget_report("cpu", {HTML_ROW: 1.0, "01_a": 2.0, "03_c": 3.0},
                             skipped=["02_b"], budgets={}, total_budget=60,
                             order=["01_a", "02_b", "03_c"])
    assert [line.split()[0] for line in lines[1:]] == ["01_a", "02_b", "03_c", "(HTML", "total"]


# --- chapters that answer first -------------------------------------------------------------

GLUE_ROLE = re.compile(r"\{glue(?::(?:text|md))?\}`[^`]+`")


def first_markdown_cell(path: Path) -> str:
    """The text of a chapter's first markdown cell (its label, title and what follows them up
    to the first ``+++`` or code cell)."""
    cells = jupytext.read(path).cells
    return next(cell.source for cell in cells if cell.cell_type == "markdown")


@pytest.mark.parametrize("page", [p for p in pages.read_pages() if p.is_notebook],
                         ids=lambda p: p.name)
def test_chapter_opens_with_a_computed_answer(page: pages.Page) -> None:
    """The first markdown cell states the chapter's answer through a glue role, and holds no
    typed number: every digit a reader meets first comes from the chapter's own run."""
    text = first_markdown_cell(page.source)
    roles = GLUE_ROLE.findall(text)
    assert roles, f"{page.name}: no {{glue:text}}/{{glue:md}} role in its first markdown cell"
    typed = re.findall(r"\d", GLUE_ROLE.sub("", text))
    assert not typed, f"{page.name}: literal digits {typed} in its first markdown cell"
    glued = {role.split("`")[1] for role in roles}
    source = page.source.read_text(encoding="utf-8")
    for name in glued:  # glued in the same chapter, never read from elsewhere
        assert re.search(rf"glue\(\s*[\"']{re.escape(name)}[\"']", source), (
            f"{page.name}: {name!r} is not glued by the chapter itself")


def test_first_markdown_cell_check_can_fail(tmp_path: Path) -> None:
    typed = write_chapter(tmp_path, "typed", "x = 1")
    assert GLUE_ROLE.search(first_markdown_cell(typed)) is None
    text = typed.read_text().replace("# typed\n", "# typed\n\nIt holds {glue:text}`a` in 3 of 4.\n")
    typed.write_text(text)
    assert re.findall(r"\d", GLUE_ROLE.sub("", first_markdown_cell(typed))) == ["3", "4"]


# --- pages executed last --------------------------------------------------------------------


def test_the_scorecard_and_the_glance_page_run_after_every_chapter_and_with_any_chapter(
) -> None:
    toc_pages = pages.read_pages()
    order = pages.execution_order(toc_pages)
    assert [p.name for p in order[-2:]] == ["10_scorecard", "00_at_a_glance"]
    assert [p.name for p in order[:-2]] == [
        p.name for p in toc_pages if p.is_notebook and not p.last]
    glance = order[-1]
    assert [p.name for p in pages.prerequisites(glance, toc_pages)] == [
        p.name for p in order[:-1]]
    assert [p.name for p in pages.select(toc_pages, ["03_phenomenon"])] == [
        "03_phenomenon", "10_scorecard", "00_at_a_glance"]


def test_an_after_entry_orders_pages_and_a_cycle_is_an_error(tmp_path: Path) -> None:
    def page(name: str, last: bool = False, after: tuple[str, ...] = ()) -> pages.Page:
        return pages.Page(f"chapters/{name}", tmp_path / f"{name}.md", True, last, after)

    a, z, y = page("01_a"), page("00_z", last=True, after=("02_y",)), page("02_y", last=True)
    assert pages.execution_order([z, a, y]) == [a, y, z]
    with pytest.raises(errors.BookError, match="not chapters of _toc.yml"):
        pages.prerequisites(page("00_z", after=("09_nothing",)), [a])
    with pytest.raises(errors.BookError, match="form a cycle"):
        pages.execution_order([page("01_a", after=("02_b",)), page("02_b", after=("01_a",))])


def add_last_page(project: Path) -> None:
    """Give the tiny project a page ``00_z`` marked last, first in its toc."""
    write_chapter(project / "chapters", "00_z", "x = 1")
    text = (project / "chapters" / "00_z.md").read_text()
    (project / "chapters" / "00_z.md").write_text(
        text.replace("kernelspec:", "book:\n  execute: last\nkernelspec:", 1))
    (project / "_toc.yml").write_text(
        "format: jb-book\nroot: chapters/intro\nchapters:\n  - file: chapters/00_z\n"
        "  - file: chapters/01_a\n  - file: chapters/02_b\n")


def test_a_last_page_re_executes_after_a_changed_chapter(project: Path) -> None:
    add_last_page(project)
    # on a fresh project one chapter alone: the last page would read results 02_b never saved
    assert build(project, "--chapter", "01_a") == ["01_a"]
    assert build(project) == ["02_b", "00_z"]  # 01_a unchanged, skipped
    assert build(project, "--chapter", "01_a", "--force") == ["01_a", "00_z"]
    assert build(project) == []
    assert build(project, "--chapter", "02_b", "--force") == ["02_b", "00_z"]


def test_chapters_execute_side_by_side_and_a_last_page_after_them(
        project: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """With --jobs 2 the two chapters run at once, the longest expected first, each kernel
    with the cores shared out; the page marked last starts once both are done."""
    add_last_page(project)
    monkeypatch.setattr(cli.os, "cpu_count", lambda: 4)
    both = threading.Barrier(2, timeout=10)  # passes only if 01_a and 02_b run at once
    events: list[tuple[str, str, int | None]] = []
    lock = threading.Lock()

    def side_by_side(source: Path, output: Path, parameters: dict, **kw: object) -> float:
        with lock:
            events.append(("start", source.stem, kw.get("threads")))
        if source.stem != "00_z":
            both.wait()
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text("{}")
        with lock:
            events.append(("end", source.stem, None))
        return 1.0 if source.stem == "01_a" else 2.0

    monkeypatch.setattr(execute, "execute_notebook", side_by_side)
    data = str(project.parent / "data")
    assert cli.main(["--profile", "cpu", "--no-html", "--jobs", "2", "--data-root", data],
                    root=project) == 0
    assert {e[2] for e in events if e[0] == "start" and e[1] != "00_z"} == {2}  # 4 cores / 2
    assert events[-2:] == [("start", "00_z", 2), ("end", "00_z", None)]
    # the next build expects 02_b to be the longer (2 s against 1 s): it starts first
    capsys.readouterr()
    assert cli.main(["--profile", "cpu", "--no-html", "--jobs", "2", "--force",
                     "--data-root", data], root=project) == 0
    started = re.findall(r"executing (\w+)", capsys.readouterr().out)
    assert started == ["02_b", "01_a", "00_z"]


def test_after_a_failure_no_chapter_starts_and_the_running_ones_finish(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "_toc.yml").write_text(
        "format: jb-book\nroot: chapters/intro\nchapters:\n  - file: chapters/01_a\n"
        "  - file: chapters/02_b\n  - file: chapters/03_c\n")
    write_chapter(project / "chapters", "03_c", "x = 1")
    started: list[str] = []

    def first_fails(source: Path, output: Path, parameters: dict, **_: object) -> float:
        started.append(source.stem)
        if source.stem == "01_a":
            raise errors.ChapterFailed("chapter '01_a' failed")
        time.sleep(0.2)  # 02_b still runs when 01_a fails
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text("{}")
        return 0.2

    monkeypatch.setattr(execute, "execute_notebook", first_fails)
    assert cli.main(["--profile", "cpu", "--no-html", "--jobs", "2",
                     "--data-root", str(project.parent / "data")], root=project) == 1
    assert sorted(started) == ["01_a", "02_b"]
    assert set(timings.read_timings("cpu")) == {"02_b"}
