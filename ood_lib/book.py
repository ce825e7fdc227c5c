"""Execute the book's chapters with papermill, then build the HTML with jupyter-book.

Run as ``python -m ood_lib.book [--profile smoke|cpu|paper] [--chapter NAME ...]``.

One run with profile ``P`` does, in order:

1. read ``_toc.yml`` and find every page's source file;
2. execute each chapter that is a jupytext notebook (a ``.md`` with a jupytext header, or an
   ``.ipynb``) with papermill into ``_build/executed/P/<docname>.ipynb``, passing the
   parameters ``profile``, ``seed`` and ``data_root``; plain markdown pages are copied there;
   each chapter's wall time goes to ``_build/executed/P/timings.json``, together with a
   content hash of its inputs: a chapter whose inputs are unchanged since its last successful
   execution is skipped (``unchanged, skipped``; ``--force`` executes it anyway, see
   :func:`chapter_inputs`);
3. stage a book source folder ``_build/book_src/P`` (``_config.yml``, ``_toc.yml``, the
   executed pages, the chapters' static files such as ``references.bib`` or images, and the
   book's stylesheet folder ``_static/``);
4. build it with ``jupyter-book build -W -n --keep-going`` (any Sphinx warning fails the
   build) and copy the HTML to ``_build/html`` (``_build/html/index.html``).

Notebooks run in a kernel of the interpreter running this module, with the chapter's own
folder (``chapters/``) as working directory and ``PYTHONPATH`` = the project root; the runner
sets ``MPLBACKEND=Agg``, the kernels use matplotlib's inline backend so that figures are saved
in the notebooks. jupyter-book itself never executes anything (``execute_notebooks: off``).

While a chapter runs, the console shows which code cell it is in and everything the kernel
writes to stderr (tqdm progress bars of training and evaluation, warnings): stderr is left out
of the book (``nb_output_stderr: remove``) but never lost. The kernel talks to the runner over
IPC sockets, not TCP. The module is also a small Sphinx extension (listed in ``_config.yml``)
that fixes a duplicated inline script in the built pages (see :func:`setup`).

At the end the runner prints each chapter's wall time beside its budget (:data:`CHAPTER_BUDGET_S`,
summing to the build's :data:`BUDGET_S`) and flags every chapter, and the total, over budget.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from ood_lib.paths import PROJECT_ROOT, build_dir, results_dir

# ood_lib.registry and ood_lib.data (torch: seconds to import) are imported where they are
# used, so that the Sphinx extension (setup) and --html-only start without torch.

PROFILES = ("smoke", "cpu", "paper")
KERNEL = "python3"
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
PAGE_SUFFIXES = (".md", ".ipynb")
SOURCE_LINES_SHOWN = 6
CELL_PREVIEW_CHARS = 70
PROFILE_MARKER = ".profile"  # in the built HTML folder: the profile of the last build
STATIC = "_static"  # the book's static files (CSS), at the project root
LAST = "last"  # front matter ``book: {execute: last}``: executed after every other chapter


class BookError(RuntimeError):
    """The book could not be executed or built; the message says where and why."""


class ChapterFailed(BookError):
    """A chapter did not execute; the message names the chapter and, if known, the cell."""


class UnknownChapter(BookError):
    """``--chapter`` named a chapter that is not a notebook in ``_toc.yml``."""


@dataclass(frozen=True)
class Page:
    """One entry of ``_toc.yml``: its toc path, its source file, whether it is executed and
    whether it is executed after every other chapter (``last``: a page that reads the others'
    results, such as the at-a-glance page; set by ``book: {execute: last}`` in its front
    matter)."""

    docname: str
    source: Path
    is_notebook: bool
    last: bool = False

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
    last = notebook and (header.get("book") or {}).get("execute") == LAST
    return Page(docname, found, notebook, last)


def execution_order(pages: Sequence[Page]) -> list[Page]:
    """The notebook pages in the order they execute: toc order, except that the pages marked
    ``last`` run after every other one (they read what the others saved)."""
    notebooks = [page for page in pages if page.is_notebook]
    return [page for page in notebooks if not page.last] + [p for p in notebooks if p.last]


def read_pages(root: Path = PROJECT_ROOT) -> list[Page]:
    """The pages listed in ``<root>/_toc.yml``, in reading order."""
    return [find_page(docname, root) for docname in toc_docnames(read_toc(root))]


def prepare_environment(root: Path = PROJECT_ROOT) -> None:
    """Set what chapters need in ``os.environ`` (inherited by the kernels papermill starts).

    ``PYTHONPATH`` gets the project root and ``MPLBACKEND`` is ``Agg`` (headless). A kernelspec
    named ``python3`` that runs *this* interpreter is put first on ``JUPYTER_PATH``, so a
    user-wide ``python3`` kernelspec pointing at another Python cannot be picked up by mistake.
    Inside that kernel ``MPLBACKEND`` is matplotlib's inline backend: under ``Agg`` a
    notebook's figures would silently be missing from its outputs.
    """
    from ipykernel.kernelspec import get_kernel_dict  # argv[0] is sys.executable

    # ipywidgets is not installed, so tqdm.auto in a kernel falls back to its text bar (which
    # the runner streams to the console) after warning "IProgress not found" once per chapter.
    warnings = [os.environ.get("PYTHONWARNINGS", ""), "ignore:IProgress not found"]
    env = {"MPLBACKEND": INLINE_BACKEND, "PYTHONWARNINGS": ",".join(filter(None, warnings))}
    spec = get_kernel_dict() | {"env": env}
    spec_dir = build_dir() / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))

    def prepend(var: str, value: str) -> None:
        parts = [p for p in os.environ.get(var, "").split(os.pathsep) if p and p != value]
        os.environ[var] = os.pathsep.join([value, *parts])

    prepend("PYTHONPATH", str(root))
    prepend("JUPYTER_PATH", str(spec_dir.parents[1]))
    os.environ["MPLBACKEND"] = "Agg"


class ConsoleStream:
    """Where a running chapter's progress goes: the kernel's stderr and one line per code cell.

    On a terminal the text is passed through as it comes, so tqdm bars redraw in place (their
    ``\\r`` updates). Anywhere else (CI logs, a pipe) text is written line by line and a bar
    leaves what it would leave on a terminal: its final state (a bar that erases itself,
    ``leave=False``, leaves nothing), plus its state every ``every`` seconds while it runs, so
    that a long training shows its progress in a log too.
    """

    def __init__(self, target: Any = None, tty: bool | None = None, every: float = 30.0) -> None:
        self.target = target if target is not None else sys.stderr
        self.tty = self.target.isatty() if tty is None else tty
        self.every = every
        self.line = ""  # non-terminal: the current line since its last \r
        self.shown = ""  # non-terminal: the last non-blank state of the current line
        self.since: float | None = None  # non-terminal: when the line was last written out
        self.at_line_start = True  # terminal: the cursor is in column 0

    def write(self, text: str) -> int:
        if self.tty:
            self.target.write(text)
            if text:
                self.at_line_start = text[-1] in "\r\n"
        else:
            for piece in re.split(r"(\r|\n)", text):
                if piece == "\n":
                    self._emit(self.line if self.line.strip() else self.shown)
                elif piece == "\r":
                    if self.line.strip():  # a bar redraws itself
                        self.shown = self.line
                        now = time.monotonic()
                        if self.since is None:
                            self.since = now
                        elif now - self.since >= self.every:
                            self._emit(self.shown)
                    else:  # a bar erased itself
                        self.shown = ""
                    self.line = ""
                else:
                    self.line += piece
        self.target.flush()
        return len(text)

    def _emit(self, line: str) -> None:
        if line.strip():
            self.target.write(line.rstrip() + "\n")
        self.line = self.shown = ""
        self.since = None

    def end_line(self) -> None:
        """Finish a partly written line, so that the next message starts on its own line."""
        if self.tty:
            if not self.at_line_start:
                self.target.write("\n")
                self.at_line_start = True
        elif self.line.strip() or self.shown:
            self._emit(self.line if self.line.strip() else self.shown)
        self.target.flush()

    def message(self, text: str) -> None:
        """A line of the runner's own, on a line of its own."""
        self.end_line()
        self.target.write(text + "\n")
        self.target.flush()
        self.at_line_start = True

    def flush(self) -> None:
        self.target.flush()


def cell_preview(source: str) -> str:
    """The first line of a cell's code that is not blank or a comment, shortened."""
    lines = [line.strip() for line in source.splitlines()]
    first = next((line for line in lines if line and not line.startswith("#")), "")
    cut = len(first) > CELL_PREVIEW_CHARS
    return first[: CELL_PREVIEW_CHARS - 3] + "..." if cut else first


def _papermill_engine() -> str:
    """Register, and name, a papermill engine that reports each code cell as it starts.

    It is papermill's own nbclient engine; ``on_cell(number, total, cell)`` (an extra keyword
    of ``papermill.execute_notebook``) is called before each code cell runs, ``number``
    counting code cells from 1.
    """
    from papermill.engines import NBClientEngine, papermill_engines

    class ReportingEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
            on_cell = kwargs.pop("on_cell", None)
            if on_cell is not None:
                code = [i for i, c in enumerate(nb_man.nb.cells) if c.cell_type == "code"]
                number = {index: n for n, index in enumerate(code, start=1)}
                start = nb_man.cell_start

                def cell_start(cell: Any, cell_index: int | None = None, **kw: Any) -> Any:
                    if cell_index in number:
                        on_cell(number[cell_index], len(code), cell)
                    return start(cell, cell_index, **kw)

                nb_man.cell_start = cell_start
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    name = "ood_lib"
    papermill_engines.register(name, ReportingEngine)
    return name


def _ipc_kernel_manager() -> type:
    """A kernel manager whose kernel listens on IPC sockets in the temp folder, not on TCP.

    Over TCP, ipykernel warns once per kernel that the connection is unencrypted; over IPC
    (unix domain sockets: the traffic never leaves this machine, and every message is still
    signed with the connection file's key) it has nothing to warn about. The socket
    paths are absolute so that they never land in the chapter's working directory; the kernel
    manager removes them at shutdown.
    """
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class IPCKernelManager(AsyncKernelManager):
        @default("transport")
        def _default_transport(self) -> str:
            return "ipc"

        def _ip_default(self) -> str:  # called by jupyter_client for the ip trait's default
            if self.transport != "ipc":
                return super()._ip_default()
            return os.path.join(tempfile.gettempdir(), f"ood-kernel-{uuid.uuid4().hex[:12]}")

    return IPCKernelManager


def execute_notebook(
    source: Path,
    output: Path,
    parameters: dict[str, Any],
    cwd: Path | None = None,
    console: ConsoleStream | None = None,
) -> float:
    """Execute the notebook ``source`` into ``output`` with papermill; return the wall time.

    ``source`` may be a jupytext text notebook or an ``.ipynb``. The working directory is
    ``cwd`` (default: the folder of ``source``). While it runs the notebook is written to
    ``<name>.running.ipynb``; it becomes ``output`` only on success. Progress (the code cell
    being run, the kernel's stderr) goes to ``console`` (default: a :class:`ConsoleStream` on
    ``sys.stderr``). On failure the partial
    notebook is kept as ``<name>.failed.ipynb``, any older ``output`` is removed (a failed
    chapter must never be published with stale outputs) and :class:`ChapterFailed` is raised.
    """
    import jupytext
    import papermill
    from papermill.exceptions import PapermillExecutionError

    prepare_environment()
    name = source.stem
    output.parent.mkdir(parents=True, exist_ok=True)
    running = output.with_name(f"{name}.running.ipynb")
    failed = output.with_name(f"{name}.failed.ipynb")
    console = console or ConsoleStream()

    def on_cell(number: int, total: int, cell: Any) -> None:
        console.message(f"[book] {name}: cell {number}/{total}: {cell_preview(cell.source)}")

    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            jupytext.read(source),
            str(running),
            parameters=parameters,
            engine_name=_papermill_engine(),
            kernel_name=KERNEL,
            kernel_manager_class=_ipc_kernel_manager(),
            language="python",
            progress_bar=False,  # replaced by on_cell's line per code cell
            log_output=False,  # stdout belongs to the book; stderr is streamed below
            stderr_file=console,
            on_cell=on_cell,
            cwd=str(cwd or source.parent),
        )
    except Exception as exc:
        console.end_line()
        output.unlink(missing_ok=True)
        if running.exists():
            running.replace(failed)
        if isinstance(exc, PapermillExecutionError):
            lines = exc.source.splitlines()
            shown = "\n".join(f"    | {line}" for line in lines[:SOURCE_LINES_SHOWN])
            more = "\n    | ..." if len(lines) > SOURCE_LINES_SHOWN else ""
            message = (
                f"chapter {name!r} failed in cell {exc.cell_index} of the executed notebook "
                f"(execution count {exc.exec_count}): {exc.ename}: {exc.evalue}\n"
                f"  cell source:\n{shown}{more}\n"
                f"  partial notebook: {failed}"
            )
        else:
            message = f"chapter {name!r} could not be executed: {type(exc).__name__}: {exc}"
        raise ChapterFailed(message) from exc
    console.end_line()
    fold_parameter_cells(running)
    running.replace(output)
    return time.perf_counter() - start


def fold_parameter_cells(path: Path) -> None:
    """Tag the ``parameters`` cell and papermill's ``injected-parameters`` cell ``hide-cell``:
    the book shows them folded (one click away) instead of as two code cells per chapter."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if {"parameters", "injected-parameters"} & set(tags) and "hide-cell" not in tags:
            tags.append("hide-cell")
    nbformat.write(nb, path)


def executed_dir(profile: str) -> Path:
    """Where the executed pages of one profile go: ``_build/executed/<profile>``."""
    return build_dir() / "executed" / profile


def executed_path(page: Page, profile: str) -> Path:
    """The file the book is built from for ``page`` (an ``.ipynb`` for notebooks)."""
    suffix = ".ipynb" if page.is_notebook else page.source.suffix
    return executed_dir(profile) / f"{page.docname}{suffix}"


def record_timing(profile: str, name: str, seconds: float, **info: Any) -> None:
    """Add one chapter's wall time to ``_build/executed/<profile>/timings.json``."""
    path = executed_dir(profile) / "timings.json"
    timings = json.loads(path.read_text()) if path.exists() else {}
    timings.setdefault("profile", profile)
    timings.setdefault("chapters", {})[name] = {
        "seconds": round(seconds, 2),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        **info,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(timings, indent=1) + "\n")


def read_timings(profile: str) -> dict[str, dict[str, Any]]:
    """The chapters' wall times recorded by :func:`record_timing` for ``profile`` (chapter name
    -> ``seconds``, ``finished``, ...); empty if none was recorded."""
    path = executed_dir(profile) / "timings.json"
    return json.loads(path.read_text()).get("chapters", {}) if path.exists() else {}


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
    env = os.environ.copy()  # _config.yml loads ood_lib.book as a Sphinx extension
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PROJECT_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    )
    if subprocess.run(command, check=False, env=env).returncode != 0:
        raise BookError(f"jupyter-book build of {staged} failed (see the warnings above)")
    html = build_dir() / "html"
    shutil.rmtree(html, ignore_errors=True)
    shutil.copytree(output / "_build" / "html", html)
    (html / PROFILE_MARKER).write_text(profile + "\n")  # read by tests/test_browser.py
    return html


def _dedupe_scripts(app: Any, pagename: str, templatename: str, context: dict, doctree: Any
                    ) -> None:
    """Drop repeated inline ``<script>`` bodies from a page's script list.

    sphinx-thebe adds its settings (``const THEBE_JS_URL = ...``) as an inline script after the
    HTML builder started; Sphinx 7.4 then lists it twice (once with filename ``None``, once
    with ``''``), and the second copy fails in the browser with "Identifier 'THEBE_JS_URL' has
    already been declared" on every page. Two inline scripts with the same body and
    attributes are the same script, so the later ones go.
    """
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen: set[tuple] = set()
    kept = []
    for script in scripts:
        attributes = getattr(script, "attributes", None)
        if not getattr(script, "filename", None) and isinstance(attributes, dict):
            key = tuple(sorted((k, str(v)) for k, v in attributes.items()))
            if key in seen:
                continue
            seen.add(key)
        kept.append(script)
    scripts[:] = kept


def setup(app: Any) -> dict[str, Any]:
    """Sphinx extension entry point (``sphinx: extra_extensions`` in ``_config.yml``)."""
    app.connect("html-page-context", _dedupe_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def select(pages: Sequence[Page], names: Iterable[str]) -> list[Page]:
    """The notebook pages named by ``--chapter`` (short name or toc path), and every page
    marked ``last`` (it reads the results the named ones save); all if none is named. In
    :func:`execution_order`."""
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
    return [page for page in notebooks if page in wanted or page.last]


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of ``python -m ood_lib.book``."""
    parser = argparse.ArgumentParser(
        prog="python -m ood_lib.book",
        description="Execute the chapters with papermill and build the HTML book.",
    )
    parser.add_argument("--profile", choices=PROFILES, default="cpu")
    parser.add_argument(
        "--chapter",
        action="append",
        default=[],
        metavar="NAME",
        help="execute only this chapter (repeatable), e.g. 02_glow",
    )
    parser.add_argument(
        "--data-root", type=Path, default=None, help="passed to the chapters as data_root"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--train-missing", action="store_true",
        help="let cpu/paper chapters train models that have no checkpoint (hours on a CPU; "
        "without it such a chapter stops with the command that trains the model)",
    )
    parser.add_argument(
        "--force", action="store_true",
        help="execute the chosen chapters even if their inputs are unchanged since their last "
        "successful execution (by default such a chapter is skipped)",
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--no-html", action="store_true", help="execute, do not build the HTML")
    only.add_argument("--html-only", action="store_true", help="build the HTML, execute nothing")
    return parser


# Wall-time budget of a whole build per profile on the project's 2-core machines (seconds):
# `make book` on a fresh clone with the shipped checkpoints, and the smoke book inside CI.
BUDGET_S = {"smoke": 10 * 60, "cpu": 12 * 60}

HTML_ROW = "(HTML build)"  # the row of the jupyter-book build in the timings and budgets

# Wall-time budget of each chapter of a fresh-clone cpu build (seconds; they sum to the cpu
# BUDGET_S, 12 minutes). Measured on the last full cpu build before the table (2 cores, loaded
# by two trainings) -> budget and why:
#   01_data             19 ->  20  loads and summarises the data sets
#   02_glow             12 ->  15  plots shipped training logs, draws samples
#   03_phenomenon      129 ->  80  scores every set under the Glows; a faster Glow (issue 19)
#                                  and a shared score cache bring it down
#   04_decomposition    15 ->  15  reads the score cache
#   05_constant_volume  76 ->  60  scores the constant-volume Glows
#   06_second_order    233 -> 200  Hessians and intervention sweeps (issue 18 caps it at 240)
#   07_explanations    245 ->  75  new (its first run); its issue caps it at 180; 15 s of its
#                                  budget went to the at-a-glance page
#   08_families        678 -> 120  636 s of it scored the PixelCNN and the VAE; the evaluation
#                                  speed-ups (benchmarks/bench_families.py) and a lighter set
#                                  of scored images must bring it down
#   09_remedies        218 -> 100  compressors, DoSE statistics, background models
#   10_scorecard         5 ->  10  reads the records
#   00_at_a_glance       - ->  15  new: reads three records, draws one figure (executed last;
#                                  17 s in the loaded smoke build, mostly the kernel's imports)
#   (HTML build)         8 ->  10  jupyter-book on the executed notebooks
# A chapter over its budget is flagged at the end of every run (print_summary), so that a
# chapter that grows has to take its time from another row of this table, not from the total.
CHAPTER_BUDGET_S: dict[str, dict[str, float]] = {
    "cpu": {
        "01_data": 20, "02_glow": 15, "03_phenomenon": 80, "04_decomposition": 15,
        "05_constant_volume": 60, "06_second_order": 200, "07_explanations": 75,
        "08_families": 120, "09_remedies": 100, "10_scorecard": 10, "00_at_a_glance": 15,
        HTML_ROW: 10,
    },
    # smoke: the whole build's budget only (its chapters' times are dominated by kernel starts
    # and tiny trainings, and CI machines vary more than the cpu profile's target machine)
    "smoke": {},
}


def budget_report(profile: str, times: dict[str, float], skipped: Sequence[str] = (),
                  budgets: dict[str, float] | None = None, total_budget: float | None = None,
                  order: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """The end-of-run table: ``(lines, over)``, ``over`` naming every row over its budget
    (``"total"`` for the whole run). ``times``: wall seconds per chapter executed in this run
    (and :data:`HTML_ROW`); ``skipped``: chapters left unchanged (no time spent); ``budgets``
    and ``total_budget`` default to the profile's :data:`CHAPTER_BUDGET_S` and
    :data:`BUDGET_S`; ``order``: the rows' order (chapter names; the HTML build comes last).
    A chapter without a budget in a profile that has per-chapter budgets is listed as
    ``no budget`` (and counted as over: every chapter needs a row)."""
    budgets = CHAPTER_BUDGET_S.get(profile, {}) if budgets is None else budgets
    total_budget = BUDGET_S.get(profile) if total_budget is None else total_budget
    if not times and not skipped:
        return [], []
    names = list(times) + [name for name in skipped if name not in times]
    rank = {name: n for n, name in enumerate(order or ())}
    # in ``order`` (the toc's), executed and skipped chapters alike; the HTML build last
    names.sort(key=lambda name: (name == HTML_ROW, rank.get(name, len(rank))))
    width = max(map(len, [*names, "total"]))
    total = sum(times.values())
    head = f", budget {total_budget / 60:.0f} min" if total_budget else ""
    lines = [f"[book] wall time, profile {profile!r}{head}:"]
    over = []
    for name in names:
        if name not in times:
            lines.append(f"  {name:<{width}}  {'-':>8}    unchanged, skipped")
            continue
        seconds = times[name]
        row = f"  {name:<{width}}  {seconds:8.1f} s  {100 * seconds / total if total else 0:5.1f}%"
        budget = budgets.get(name)
        if budget is not None:
            flag = "" if seconds <= budget else "  OVER BUDGET"
            row += f"  budget {budget:6.0f} s{flag}"
            if flag:
                over.append(name)
        elif budgets:
            row += "  no budget (add it to CHAPTER_BUDGET_S)"
            over.append(name)
        lines.append(row)
    verdict = ""
    if total_budget:
        verdict = " (within budget)" if total <= total_budget else " (OVER BUDGET)"
        if total > total_budget:
            over.append("total")
    lines.append(f"  {'total':<{width}}  {total:8.1f} s{verdict}")
    return lines, over


def print_summary(profile: str, times: dict[str, float], skipped: Sequence[str] = (),
                  order: Sequence[str] | None = None) -> None:
    """Print :func:`budget_report`: the wall times of this run, each beside its budget."""
    lines, _ = budget_report(profile, times, skipped, order=order)
    if lines:
        print("\n" + "\n".join(lines), flush=True)


# --- skipping unchanged chapters -------------------------------------------------------------
#
# A chapter is executed again only when something it may depend on changed since its last
# successful execution under the same profile. Its inputs are named parts, each a sha256:
#
# - source:      the chapter's own file;
# - library:     every .py file under <root>/ood_lib (by path and content: the chapters call
#                into all of it, and finding what one chapter imports is not worth the risk);
# - models:      the models it may load: for cpu/paper the top-level *.json of the checkpoint
#                folder (manifest.json with every model's key and sha256, the background
#                selection files) and the record.json and log.csv of every model in the
#                manifest (the chapters plot the logs). A smoke build trains its own models from
#                the library code, the data and the parameters, all hashed here, so the smoke
#                checkpoint folder is left out: otherwise a model trained by chapter 8 would
#                make chapters 1-7 of the next build look changed;
# - data:        the data root's manifest.json (every file's sha256), or, without one, the
#                names and sizes of its files;
# - environment: the Python version and every installed distribution's name and version;
# - parameters:  profile, seed and data_root;
# - earlier:     the run ids of every chapter before it in execution order (_toc.yml's, with the
#                pages marked ``last`` at the end). A chapter reads what earlier
#                chapters saved (records, caches), so each successful execution gets a fresh run
#                id, and re-executing a chapter re-executes every later one. Simpler and safer
#                than tracking which records a chapter reads; the cost is at most a rerun of
#                the cheap chapters after a changed one.
#
# A chapter is skipped only if its executed notebook exists and every result file (*.json in
# the results folder) it wrote on that execution is still there, unchanged. Training a model
# during a cpu build (--train-missing) changes the manifest, so the next build executes every
# chapter once more; a failed chapter forgets its run id, so every later chapter runs again.

LIBRARY = "ood_lib"


def sha256_bytes(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(len(chunk).to_bytes(8, "little"))  # length-prefixed: no ambiguous joins
        h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_sha256(paths: Iterable[Path], base: Path) -> str:
    """sha256 of the files' paths (relative to ``base``) and contents, in sorted order."""
    rows = sorted(f"{path.relative_to(base).as_posix()} {file_sha256(path)}" for path in paths)
    return sha256_bytes(*(row.encode() for row in rows))


def library_sha256(root: Path = PROJECT_ROOT) -> str:
    """Every ``.py`` file under ``<root>/ood_lib``, by relative path and content."""
    package = root / LIBRARY
    return files_sha256((p for p in package.rglob("*.py") if p.is_file()), root)


def models_sha256(profile: str) -> str:
    """The models a ``profile`` chapter may load (see the comment above ``LIBRARY``)."""
    if profile == "smoke":
        return sha256_bytes(b"smoke models: derived from library, data and parameters")
    from ood_lib.registry import checkpoint_root

    root = checkpoint_root(profile)
    if not root.is_dir():
        return sha256_bytes(b"no checkpoint folder")
    files = [p for p in root.glob("*.json") if p.is_file()]
    manifest = root / "manifest.json"
    keys = json.loads(manifest.read_text()) if manifest.is_file() else {}
    for key in keys:
        files += [f for f in (root / key / "record.json", root / key / "log.csv") if f.is_file()]
    return files_sha256(files, root)


def data_sha256(data_root: str | Path | None) -> str:
    """The data root's ``manifest.json``, or (without one) its files' names and sizes."""
    from ood_lib.data import resolve_data_root

    root = resolve_data_root(data_root)
    manifest = root / "manifest.json"
    if manifest.is_file():
        return file_sha256(manifest)
    if not root.is_dir():
        return sha256_bytes(b"no data root")
    rows = sorted(f"{p.relative_to(root).as_posix()} {p.stat().st_size}"
                  for p in root.rglob("*") if p.is_file())
    return sha256_bytes(*(row.encode() for row in rows))


def environment_sha256() -> str:
    """The Python version and every installed distribution's name and version."""
    dists = sorted({f"{d.metadata['Name']}=={d.version}"
                    for d in importlib.metadata.distributions() if d.metadata["Name"]})
    return sha256_bytes(sys.version.encode(), *(d.encode() for d in dists))


def shared_inputs(profile: str, parameters: dict[str, Any], root: Path = PROJECT_ROOT
                  ) -> dict[str, str]:
    """The input parts every chapter of one run shares (all but ``source`` and ``earlier``)."""
    return {
        "library": library_sha256(root),
        "models": models_sha256(profile),
        "data": data_sha256(parameters.get("data_root")),
        "environment": environment_sha256(),
        "parameters": sha256_bytes(json.dumps(parameters, sort_keys=True).encode()),
    }


def chapter_inputs(page: Page, shared: dict[str, str], earlier_runs: Sequence[str | None]
                   ) -> dict[str, str]:
    """A chapter's input parts: ``shared``, its source file and the run ids of the chapters
    before it (``None``: never executed successfully)."""
    runs = [(run or "never executed").encode() for run in earlier_runs]
    return {"source": file_sha256(page.source), **shared, "earlier": sha256_bytes(*runs)}


def results_snapshot(profile: str) -> dict[str, tuple[int, int]]:
    """``(mtime_ns, size)`` of every ``*.json`` result file of ``profile`` (records)."""
    folder = results_dir(profile)
    if not folder.is_dir():
        return {}
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.glob("*.json")}


def written_results(profile: str, before: dict[str, tuple[int, int]]) -> dict[str, str]:
    """The result files written since ``before`` (:func:`results_snapshot`), with their sha256."""
    after = results_snapshot(profile)
    folder = results_dir(profile)
    return {name: file_sha256(folder / name) for name, stamp in sorted(after.items())
            if before.get(name) != stamp}


def reasons_to_execute(entry: dict[str, Any] | None, inputs: dict[str, str], executed: Path,
                       profile: str) -> list[str]:
    """Why a chapter must be executed (``[]``: it is unchanged and may be skipped): its last
    successful execution (``entry``, from ``timings.json``) is missing or had other input
    parts, its executed notebook is gone, or a result file it wrote is gone or changed."""
    if not entry or "inputs" not in entry or not entry.get("run"):
        return ["no successful execution recorded"]
    stored = entry["inputs"]
    changed = [part for part in inputs if stored.get(part) != inputs[part]]
    reasons = [f"{', '.join(changed)} changed"] if changed else []
    if not executed.exists():
        reasons.append("executed notebook missing")
    folder = results_dir(profile)
    for name, sha in entry.get("outputs", {}).items():
        path = folder / name
        if not path.is_file() or file_sha256(path) != sha:
            reasons.append(f"result {name} missing or changed")
    return reasons


def forget_chapter(profile: str, name: str) -> None:
    """Drop a chapter's record from ``timings.json`` (after a failure: its results may be
    half written, so it and every later chapter must run again)."""
    path = executed_dir(profile) / "timings.json"
    if path.exists():
        timings = json.loads(path.read_text())
        if timings.get("chapters", {}).pop(name, None) is not None:
            path.write_text(json.dumps(timings, indent=1) + "\n")


def execute_chapters(chosen: Sequence[Page], pages: Sequence[Page], profile: str,
                     parameters: dict[str, Any], times: dict[str, float], skipped: list[str],
                     force: bool = False, root: Path = PROJECT_ROOT) -> None:
    """Execute the ``chosen`` notebook pages in :func:`execution_order`, skipping each whose
    inputs are unchanged (:func:`reasons_to_execute`; never with ``force``). The wall times of the
    executed ones go to ``times``, the names of the skipped ones to ``skipped`` (filled as it
    goes, so that a failure still leaves the summary). Raises :class:`ChapterFailed`.

    The inputs shared by all chapters are hashed once, before the first chapter: a file that
    changes during the run is seen as changed by the next run (re-executing, never skipping)."""
    timings = read_timings(profile)
    runs = {name: entry.get("run") for name, entry in timings.items()}
    shared = shared_inputs(profile, parameters, root)
    notebooks = execution_order(pages)
    for n, page in enumerate(notebooks):
        if page not in chosen:
            continue
        inputs = chapter_inputs(page, shared, [runs.get(p.name) for p in notebooks[:n]])
        output = executed_path(page, profile)
        reasons = ["--force"] if force else reasons_to_execute(
            timings.get(page.name), inputs, output, profile)
        if not reasons:
            print(f"[book] {page.name}: unchanged, skipped", flush=True)
            skipped.append(page.name)
            continue
        print(f"[book] {profile}: executing {page.name} ({'; '.join(reasons)})", flush=True)
        before = results_snapshot(profile)
        try:
            seconds = execute_notebook(page.source, output, parameters)
        except BookError:
            forget_chapter(profile, page.name)
            raise
        runs[page.name] = uuid.uuid4().hex
        times[page.name] = seconds
        record_timing(profile, page.name, seconds, seed=parameters.get("seed"),
                      data_root=parameters.get("data_root"), inputs=inputs,
                      run=runs[page.name], outputs=written_results(profile, before))
        print(f"[book] {page.name}: {seconds:.1f} s", flush=True)


def main(argv: Sequence[str] | None = None, root: Path = PROJECT_ROOT) -> int:
    """Entry point; returns the process exit status. ``root``: the project (tests use a tiny
    one; its library is ``<root>/ood_lib``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.html_only and args.chapter:
        parser.error("--chapter executes chapters, --html-only executes none: pick one")
    data_root = str(args.data_root.resolve()) if args.data_root else None
    if args.train_missing:  # read by ood_lib.registry in the chapters' kernels
        from ood_lib.registry import TRAIN_MISSING_ENV

        os.environ[TRAIN_MISSING_ENV] = "1"
    parameters = {"profile": args.profile, "seed": args.seed, "data_root": data_root}
    times: dict[str, float] = {}
    skipped: list[str] = []
    order: list[str] = []
    if not args.html_only:
        from ood_lib.data import DataError, checked_data_root

        try:  # a missing --data-root or $OOD_DATA_ROOT: say so now, not in every chapter
            checked_data_root(data_root)
        except DataError as exc:
            parser.error(str(exc))
    try:
        pages = read_pages(root)
        order = [page.name for page in pages]
        chosen = [] if args.html_only else select(pages, args.chapter)
        for page in pages:
            if not page.is_notebook:
                target = executed_path(page, args.profile)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(page.source, target)
        if chosen:
            execute_chapters(chosen, pages, args.profile, parameters, times, skipped,
                             force=args.force, root=root)

        if not args.no_html:
            start = time.perf_counter()
            html = build_html(stage_book(pages, args.profile, root), args.profile)
            times[HTML_ROW] = time.perf_counter() - start
            print(f"[book] HTML: {html / 'index.html'}")
    except UnknownChapter as exc:
        parser.error(str(exc))
    except BookError as exc:
        print_summary(args.profile, times, skipped, order)
        print(f"\n[book] ERROR: {exc}", file=sys.stderr)
        return 1
    print_summary(args.profile, times, skipped, order)
    return 0


if __name__ == "__main__":
    sys.exit(main())
