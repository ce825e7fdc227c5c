"""What the console shows while a chapter runs (book_runner.console, execute_notebook)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from book_runner.console import ConsoleStream
from book_runner.execute import execute_notebook
from tests.test_book import write_chapter


def stream(tty: bool, every: float = 3600.0) -> tuple[io.StringIO, ConsoleStream]:
    out = io.StringIO()
    return out, ConsoleStream(out, tty=tty, every=every)


def bar(console: ConsoleStream, name: str, steps: int, leave: bool = True) -> None:
    """Write what tqdm writes for a bar of ``steps`` steps."""
    for i in range(steps + 1):
        console.write(f"\r{name}: {i}/{steps}")
    console.write("\n" if leave else "\r" + " " * 20 + "\r")


def test_log_keeps_the_final_state_of_each_bar_only() -> None:
    out, console = stream(tty=False)
    console.message("[book] ch: cell 1/2: x = 1")
    bar(console, "train", 5)
    bar(console, "eval", 3, leave=False)  # erases itself: nothing stays, as on a terminal
    console.write("a warning\n")
    console.write("no newline yet")
    console.message("[book] ch: cell 2/2: y = 2")
    assert out.getvalue().splitlines() == [
        "[book] ch: cell 1/2: x = 1",
        "train: 5/5",
        "a warning",
        "no newline yet",
        "[book] ch: cell 2/2: y = 2",
    ]


def test_side_by_side_each_kernel_line_carries_its_chapter() -> None:
    out = io.StringIO()
    console = ConsoleStream(out, tty=False, prefix="[03_x] ")
    console.message("[book] 03_x: cell 1/2: x = 1")
    bar(console, "eval", 2)
    console.write("a warning\n")
    assert out.getvalue().splitlines() == [
        "[book] 03_x: cell 1/2: x = 1", "[03_x] eval: 2/2", "[03_x] a warning"]


def test_log_shows_a_long_bar_now_and_then() -> None:
    out, console = stream(tty=False, every=0.0)
    bar(console, "train", 3)
    lines = out.getvalue().splitlines()
    assert lines[-1] == "train: 3/3" and len(lines) >= 2
    assert all(line.startswith("train: ") for line in lines)


def test_terminal_gets_the_bar_as_it_comes() -> None:
    out, console = stream(tty=True)
    bar(console, "eval", 2, leave=False)
    console.write("partial")
    console.message("[book] next")
    text = out.getvalue()
    assert text.startswith("\reval: 0/2\reval: 1/2\reval: 2/2\r")
    assert text.endswith("partial\n[book] next\n")


def test_chapter_progress_reaches_the_console_over_ipc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OOD_BUILD_DIR", str(tmp_path / "_build"))
    source = write_chapter(
        tmp_path,
        "tiny",
        "import sys\nfrom tqdm import tqdm\nfor _ in tqdm(range(3), desc='steps'):\n    pass",
        "print('to the book')\nprint('to the console', file=sys.stderr)",
    )
    out, console = stream(tty=False)
    execute_notebook(
        source, tmp_path / "out" / "tiny.ipynb",
        {"profile": "smoke", "seed": 0, "data_root": None}, console=console,
    )
    lines = out.getvalue().splitlines()
    assert lines[0] == '[book] tiny: cell 1/4: profile = "cpu"'
    assert '[book] tiny: cell 3/4: import sys' in lines
    assert any(line.startswith("steps: 100%") and "3/3" in line for line in lines), lines
    assert lines[-1] == "to the console"
    assert "to the book" not in lines  # stdout belongs to the book
    kernel_log = capfd.readouterr().err
    assert "without encryption" not in kernel_log, kernel_log
    assert not list(tmp_path.glob("kernel-ipc*")), "IPC sockets must not land in the cwd"
