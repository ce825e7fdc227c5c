"""What the console shows while a chapter runs: the kernel's stderr and one line per code cell.

stderr (tqdm progress bars of training and evaluation, warnings) is left out of the book
(``nb_output_stderr: remove`` in ``_config.yml``) but never lost: it comes here.
"""

from __future__ import annotations

import re
import sys
import time
from typing import Any

CELL_PREVIEW_CHARS = 70


class ConsoleStream:
    """Where a running chapter's progress goes: the kernel's stderr and one line per code cell.

    On a terminal the text is passed through as it comes, so tqdm bars redraw in place (their
    ``\\r`` updates). Anywhere else (CI logs, a pipe) text is written line by line and a bar
    leaves what it would leave on a terminal: its final state (a bar that erases itself,
    ``leave=False``, leaves nothing), plus its state every ``every`` seconds while it runs, so
    that a long training shows its progress in a log too. Every line of the kernel's starts
    with ``prefix`` (the chapter's name, when chapters execute side by side and their lines
    interleave; the runner's own messages name it already).
    """

    def __init__(self, target: Any = None, tty: bool | None = None, every: float = 30.0,
                 prefix: str = "") -> None:
        self.target = target if target is not None else sys.stderr
        self.prefix = prefix  # before every line (chapters executing side by side)
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
            self.target.write(self.prefix + line.rstrip() + "\n")
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
