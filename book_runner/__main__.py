"""``python -m book_runner``: run :func:`book_runner.cli.main` and exit with its status."""

import sys

from book_runner.cli import main

if __name__ == "__main__":
    sys.exit(main())
