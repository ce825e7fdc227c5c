"""The command line ``python -m book_runner``: its options, and one run of the book.

One run with profile ``P`` does, in order:

1. read ``_toc.yml`` and find every page's source file (:mod:`book_runner.pages`);
2. execute each chapter that is a jupytext notebook with papermill into
   ``_build/executed/P/<docname>.ipynb`` (:mod:`book_runner.execute`), passing the parameters
   ``profile``, ``seed`` and ``data_root``, up to ``--jobs`` chapters side by side (each after
   the pages whose results it reads, :func:`book_runner.pages.prerequisites`; the longest
   expected first; the machine's cores shared among them); plain markdown pages are copied
   there; each
   chapter's wall time goes to ``_build/executed/P/timings.json`` (:mod:`book_runner.timings`),
   together with a content hash of its inputs: a chapter whose inputs are unchanged since its
   last successful execution is skipped (``unchanged, skipped``; ``--force`` executes it
   anyway, see :mod:`book_runner.skip`);
3. stage a book source folder ``_build/book_src/P`` and build it with jupyter-book into
   ``_build/html`` (:mod:`book_runner.html`);
4. print each chapter's wall time beside its budget (:mod:`book_runner.budgets`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from book_runner import data_root, execute, html, skip, timings
from book_runner.budgets import CHAPTER_BUDGET_S, HTML_ROW, print_summary
from book_runner.console import ConsoleStream
from book_runner.errors import BookError, DataRootError, UnknownChapter
from book_runner.pages import (
    Page,
    executed_path,
    execution_order,
    prerequisites,
    read_pages,
    select,
)
from ood_lib.catalogue import PROFILES, TRAIN_MISSING_ENV
from ood_lib.paths import PROJECT_ROOT


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of ``python -m book_runner``."""
    parser = argparse.ArgumentParser(
        prog="python -m book_runner",
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
        "--jobs", type=int, default=None, metavar="N",
        help="chapters executed side by side, the cores shared among them (default: 2 on a "
        "machine with 2 or more cores, for the cpu and paper profiles; 1 for smoke and with "
        "--train-missing, whose chapters train models)",
    )
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


def default_jobs(profile: str, train_missing: bool) -> int:
    """Chapters executed side by side unless ``--jobs`` says: two on a machine with two or
    more cores, one where chapters train models (smoke, ``--train-missing``: two chapters
    wanting one untrained model would both train it)."""
    if profile == "smoke" or train_missing:
        return 1
    return min(2, os.cpu_count() or 1)


def expected_seconds(page: Page, profile: str, recorded: dict[str, dict[str, Any]]) -> float:
    """How long ``page`` is expected to take: its last recorded wall time, else its budget."""
    seconds = recorded.get(page.name, {}).get("seconds")
    return seconds if seconds is not None else CHAPTER_BUDGET_S.get(profile, {}).get(page.name, 0)


def execute_chapters(chosen: Sequence[Page], pages: Sequence[Page], profile: str,
                     parameters: dict[str, Any], resolved_data_root: Path,
                     times: dict[str, float], skipped: list[str], force: bool = False,
                     root: Path = PROJECT_ROOT, jobs: int = 1) -> None:
    """Execute the ``chosen`` notebook pages, up to ``jobs`` at a time, each once its
    :func:`~book_runner.pages.prerequisites` are done, the longest expected
    (:func:`expected_seconds`) first; skip each whose inputs are unchanged
    (:func:`~book_runner.skip.reasons_to_execute`; never with ``force``), and leave out each
    whose prerequisites have never executed successfully. The wall times of
    the executed ones go to ``times``, the names of the skipped ones to ``skipped`` (filled as
    it goes, so that a failure still leaves the summary). ``resolved_data_root``: the root
    ``parameters["data_root"]`` resolves to. After a failure no other chapter starts; those
    running finish; then :class:`~book_runner.errors.ChapterFailed` is raised.

    The inputs shared by all chapters are hashed once, before the first chapter: a file that
    changes during the run is seen as changed by the next run (re-executing, never skipping)."""
    recorded = timings.read_timings(profile)
    runs = {name: entry.get("run") for name, entry in recorded.items()}
    shared = skip.shared_inputs(profile, parameters, resolved_data_root, root)
    notebooks = execution_order(pages)
    waiting = [page for page in notebooks if page in chosen]
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    execute.prepare_environment(threads=threads)  # once, before any kernel starts

    def run(page: Page) -> tuple[float, dict[str, tuple[int, int]]]:
        before = skip.results_snapshot(profile)
        # side by side, each chapter's lines are whole and carry its name
        console = ConsoleStream(tty=False, prefix=f"[{page.name}] ") if jobs > 1 else None
        seconds = execute.execute_notebook(page.source, executed_path(page, profile),
                                           parameters, console=console, threads=threads)
        return seconds, before

    failure: BookError | None = None
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        running: dict[Future, tuple[Page, dict[str, str]]] = {}
        while waiting or running:
            pending = set(waiting) | {page for page, _ in running.values()}
            ready = [] if failure else [
                p for p in waiting if not pending.intersection(prerequisites(p, notebooks))]
            if jobs > 1:  # the longest first, so that no long chapter is left to run alone
                ready.sort(key=lambda p: -expected_seconds(p, profile, recorded))
            for page in ready:
                if len(running) >= jobs:
                    break
                waiting.remove(page)
                before = prerequisites(page, notebooks)
                never = [p.name for p in before if runs.get(p.name) is None]
                if never:  # e.g. --chapter X on a fresh clone: the scorecard has nothing to read
                    print(f"[book] {page.name}: not executed, it reads the results of "
                          f"{', '.join(never)}, never executed successfully for profile "
                          f"{profile!r} (build the whole book first)", flush=True)
                    continue
                inputs = skip.chapter_inputs(page, shared, [runs[p.name] for p in before])
                reasons = ["--force"] if force else skip.reasons_to_execute(
                    recorded.get(page.name), inputs, executed_path(page, profile), profile)
                if not reasons:
                    print(f"[book] {page.name}: unchanged, skipped", flush=True)
                    skipped.append(page.name)
                    continue
                print(f"[book] {profile}: executing {page.name} ({'; '.join(reasons)})",
                      flush=True)
                running[pool.submit(run, page)] = (page, inputs)
            if not running:
                if failure:
                    break
                continue  # pages were skipped: others may be ready now
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                page, inputs = running.pop(future)
                try:
                    seconds, before = future.result()
                except BookError as exc:
                    timings.forget_chapter(profile, page.name)
                    failure = failure or exc
                    continue
                runs[page.name] = uuid.uuid4().hex
                times[page.name] = seconds
                timings.record_timing(profile, page.name, seconds, seed=parameters.get("seed"),
                                      data_root=parameters.get("data_root"), inputs=inputs,
                                      run=runs[page.name],
                                      outputs=skip.written_results(profile, before))
                print(f"[book] {page.name}: {seconds:.1f} s", flush=True)
    if failure is not None:
        raise failure


def main(argv: Sequence[str] | None = None, root: Path = PROJECT_ROOT) -> int:
    """Entry point; returns the process exit status. ``root``: the project (tests use a tiny
    one; its library is ``<root>/ood_lib``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.html_only and args.chapter:
        parser.error("--chapter executes chapters, --html-only executes none: pick one")
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    given_root = str(args.data_root.resolve()) if args.data_root else None
    if args.train_missing:  # read by ood_lib.zoo.registry in the chapters' kernels
        os.environ[TRAIN_MISSING_ENV] = "1"
    parameters = {"profile": args.profile, "seed": args.seed, "data_root": given_root}
    times: dict[str, float] = {}
    skipped: list[str] = []
    order: list[str] = []
    started = time.perf_counter()
    try:
        # a missing --data-root or $OOD_DATA_ROOT: say so now, not in every chapter
        resolved = None if args.html_only else data_root.checked_data_root(given_root)
        pages = read_pages(root)
        order = [page.name for page in pages]
        chosen = [] if args.html_only else select(pages, args.chapter)
        for page in pages:
            if not page.is_notebook:
                target = executed_path(page, args.profile)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(page.source, target)
        if chosen and resolved is not None:
            jobs = args.jobs or default_jobs(args.profile, args.train_missing)
            execute_chapters(chosen, pages, args.profile, parameters, resolved, times, skipped,
                             force=args.force, root=root, jobs=jobs)

        if not args.no_html:
            start = time.perf_counter()
            built = html.build_html(html.stage_book(pages, args.profile, root), args.profile)
            times[HTML_ROW] = time.perf_counter() - start
            print(f"[book] HTML: {built / 'index.html'}")
    except (UnknownChapter, DataRootError) as exc:
        parser.error(str(exc))
    except BookError as exc:
        print_summary(args.profile, times, skipped, order, time.perf_counter() - started)
        print(f"\n[book] ERROR: {exc}", file=sys.stderr)
        return 1
    print_summary(args.profile, times, skipped, order, time.perf_counter() - started)
    return 0
