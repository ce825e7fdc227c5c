"""``python -m ood_lib COMMAND ...``: the library's console commands.

- ``score``  score your own images for being out of distribution under a shipped model
  (:mod:`ood_lib.cli`; installed as the ``ood-score`` console script too).

The book's other entry points keep their own modules: ``python -m ood_lib.zoo.registry`` (train or
list models) and ``python -m book_runner`` (build the book).
"""

from __future__ import annotations

import sys

USAGE = """usage: python -m ood_lib COMMAND [ARGS ...]

commands:
  score    score a folder of images (or an .npz) for being out of distribution under one of
           the book's shipped models; `python -m ood_lib score --help` for its options
           (the same command as `ood-score`)

other entry points: python -m ood_lib.zoo.registry (train, list models), python -m book_runner
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "score":
        from ood_lib.cli import main as score

        return score(rest, prog="python -m ood_lib score")
    print(USAGE, end="", file=sys.stderr)
    print(f"python -m ood_lib: error: unknown command {command!r} (choose from 'score')",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
