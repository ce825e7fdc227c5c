"""Execute one chapter with papermill, in a kernel of this interpreter, into its ``.ipynb``.

The kernel runs with the chapter's own folder (``chapters/``) as working directory,
``PYTHONPATH`` = the project root and matplotlib's inline backend (the runner itself uses
``MPLBACKEND=Agg``), so that figures are saved in the notebook. It talks to the runner over
IPC sockets, not TCP. While it runs, the console shows which code cell it is in and everything
the kernel writes to stderr (:class:`book_runner.console.ConsoleStream`).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from book_runner.console import ConsoleStream, cell_preview
from book_runner.errors import ChapterFailed
from ood_lib.paths import PROJECT_ROOT, build_dir

KERNEL = "python3"
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
SOURCE_LINES_SHOWN = 6


def project_env() -> dict[str, str]:
    """A copy of ``os.environ`` with the project root first on ``PYTHONPATH``: for a
    subprocess that imports ``ood_lib`` or ``book_runner`` from this checkout."""
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PROJECT_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    )
    return env


def prepare_environment(root: Path = PROJECT_ROOT, threads: int | None = None) -> None:
    """Set what chapters need in ``os.environ`` (inherited by the kernels papermill starts).

    ``PYTHONPATH`` gets the project root and ``MPLBACKEND`` is ``Agg`` (headless). A kernelspec
    named ``python3`` that runs *this* interpreter is put first on ``JUPYTER_PATH``, so a
    user-wide ``python3`` kernelspec pointing at another Python cannot be picked up by mistake.
    Inside that kernel ``MPLBACKEND`` is matplotlib's inline backend: under ``Agg`` a
    notebook's figures would silently be missing from its outputs. ``threads``: the kernel's
    ``OMP_NUM_THREADS`` (torch's threads), where chapters share the cores; one the user set
    is kept.
    """
    from ipykernel.kernelspec import get_kernel_dict  # argv[0] is sys.executable

    # ipywidgets is not installed, so tqdm.auto in a kernel falls back to its text bar (which
    # the runner streams to the console) after warning "IProgress not found" once per chapter.
    warnings = [os.environ.get("PYTHONWARNINGS", ""), "ignore:IProgress not found"]
    env = {"MPLBACKEND": INLINE_BACKEND, "PYTHONWARNINGS": ",".join(filter(None, warnings))}
    if threads and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(threads)
    spec = json.dumps(get_kernel_dict() | {"env": env}, indent=1)
    spec_dir = build_dir() / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True, exist_ok=True)
    path = spec_dir / "kernel.json"
    if not path.is_file() or path.read_text() != spec:
        tmp = path.with_name(f".kernel.{os.getpid()}.{threading.get_ident()}.json")
        tmp.write_text(spec)
        tmp.replace(path)  # whole: a kernel starting now reads the old spec or the new

    def prepend(var: str, value: str) -> None:
        parts = [p for p in os.environ.get(var, "").split(os.pathsep) if p and p != value]
        os.environ[var] = os.pathsep.join([value, *parts])

    prepend("PYTHONPATH", str(root))
    prepend("JUPYTER_PATH", str(spec_dir.parents[1]))
    os.environ["MPLBACKEND"] = "Agg"


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

    name = "book_runner"
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
    threads: int | None = None,
) -> float:
    """Execute the notebook ``source`` into ``output`` with papermill; return the wall time.

    ``source`` may be a jupytext text notebook or an ``.ipynb``. The working directory is
    ``cwd`` (default: the folder of ``source``). While it runs the notebook is written to
    ``<name>.running.ipynb``; it becomes ``output`` only on success. Progress (the code cell
    being run, the kernel's stderr) goes to ``console`` (default: a :class:`ConsoleStream` on
    ``sys.stderr``); ``threads``: as :func:`prepare_environment`. On failure the partial
    notebook is kept as ``<name>.failed.ipynb``, any older ``output`` is removed (a failed
    chapter must never be published with stale outputs) and :class:`ChapterFailed` is raised.
    """
    import jupytext
    import papermill
    from papermill.exceptions import PapermillExecutionError

    prepare_environment(threads=threads)
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
