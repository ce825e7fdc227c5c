"""The book's build runner: execute the chapters with papermill, build the HTML with jupyter-book.

Run as ``python -m book_runner [--profile smoke|cpu|paper] [--chapter NAME ...]`` (see
:mod:`book_runner.cli`). It lives beside the library, not in it: the wheel ships ``ood_lib``
only, and nothing here imports torch. From the library it reads :mod:`ood_lib.paths`,
:mod:`ood_lib.catalogue` and :mod:`ood_lib.data.files` (the data root's rule), all torch-free. Modules, one job each:

- ``cli``         the command line, and one run: execute, build the HTML, print the budgets
- ``pages``       the pages of ``_toc.yml``: sources, front matter, execution order, selection
- ``execute``     one chapter executed by papermill in a kernel of this interpreter
- ``console``     what the console shows while a chapter runs
- ``data_root``   the chapters' data root, resolved and checked by the chapters' rule
- ``skip``        the content hashes that let a warm rebuild skip unchanged chapters
- ``timings``     ``timings.json``: each chapter's last successful execution
- ``budgets``     the per-chapter wall-time budgets and the end-of-run table
- ``html``        the staged book source and the jupyter-book HTML build
- ``sphinx_ext``  the Sphinx extension listed in ``_config.yml`` (imports nothing of ``ood_lib``)
- ``errors``      the runner's exceptions
"""
