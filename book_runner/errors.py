"""The runner's exceptions: what went wrong, and where, in a form the command line reports."""


class BookError(RuntimeError):
    """The book could not be executed or built; the message says where and why."""


class ChapterFailed(BookError):
    """A chapter did not execute; the message names the chapter and, if known, the cell."""


class UnknownChapter(BookError):
    """``--chapter`` named a chapter that is not a notebook in ``_toc.yml``."""


class DataRootError(BookError):
    """The chapters' data root (``--data-root`` or ``$OOD_DATA_ROOT``) is unusable."""
