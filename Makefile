# Entry points of the executable study. `make book` and `make test` do all the set-up a fresh
# machine needs: a virtualenv in .venv with requirements.txt, reinstalled when that file changes.
#
#   make book [PROFILE=smoke|cpu|paper] [DATA_ROOT=path] [JOBS=n]   execute every chapter (JOBS
#                      side by side; default 2 for cpu/paper on 2+ cores), build the HTML
#   make test          lint, wheel check, unit tests, smoke build of the book, browser test
#   make test-fast     lint and the tests not marked slow, ddp or browser (under 2 minutes)
#   make browser       the browser test alone, on the last build (_build/html)
#   make smoke | make lint | make clean
#   make retrain [PROFILE=cpu]      retrain every model of a profile, the Glow ensembles' extra
#                                   members and the likelihood-ratio background models (PixelCNN
#                                   and Glow: Ren et al.'s mu x lambda grid, extended at an edge)
#   make bench [PROFILE=cpu]          Glow throughput, memory, % of fp32 peak; evaluation with
#                                     and without the allocator settings of ood_lib.allocator

PYTHON ?= python3
VENV ?= .venv
PROFILE ?= cpu
DATA_ROOT ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.requirements.stamp
DATA_ARG := $(if $(DATA_ROOT),--data-root "$(DATA_ROOT)")
JOBS_ARG := $(if $(JOBS),--jobs $(JOBS))
BOOK := $(BIN)/python -m book_runner

.PHONY: book smoke test test-fast wheel-check lint browser clean venv retrain bench

venv: $(STAMP)

# The stamp is newer than requirements.txt once it is installed.
$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps --no-build-isolation -e .  # the ood-score command
	touch $@

book: $(STAMP)
	$(BOOK) --profile $(PROFILE) $(DATA_ARG) $(JOBS_ARG)

smoke: $(STAMP)
	$(BOOK) --profile smoke $(DATA_ARG)

# Delete and retrain every model of a profile (the shipped cpu checkpoints included).
retrain: $(STAMP)
	$(BIN)/python -m ood_lib.zoo.registry train --profile $(PROFILE) --retrain $(DATA_ARG)
	$(BIN)/python -m ood_lib.zoo.ensemble --profile $(PROFILE) --retrain $(DATA_ARG)
	$(BIN)/python -m ood_lib.zoo.background --profile $(PROFILE) --retrain --extend $(DATA_ARG)

bench: $(STAMP)
	PYTHONPATH=. $(BIN)/python benchmarks/bench_glow.py --profile $(PROFILE)
	$(BIN)/python benchmarks/bench_allocator.py

# The library and tests, then the chapters' code cells (converted to notebooks in _build/lint);
# both always run, so that one run reports every problem.
lint: $(STAMP)
	status=0; \
	$(BIN)/python -m ruff check . || status=1; \
	$(BIN)/python .ci/lint_chapters.py || status=1; \
	exit $$status

# Opens every page of _build/html in headless Chromium (tests/test_browser.py) at 1280 and 390 px:
# formulas typeset, images loaded, no error outputs, no broken links, no console errors, and at
# 390 px nothing wider than the screen; screenshots of both widths go to
# _build/screenshots/<profile>/. It needs a built book, so it runs after the book.
browser: $(STAMP)
	$(BIN)/python -m pytest tests/test_browser.py

test: lint wheel-check
	$(BIN)/python -m pytest -m "not browser"
	$(BOOK) --profile smoke $(DATA_ARG)
	$(BIN)/python -m pytest -m browser

# The inner loop while editing: lint and every test not marked slow, ddp or browser (see the
# markers in pyproject.toml); under 2 minutes on 2 cores. `make test` still runs everything.
test-fast: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest -m "not slow and not ddp and not browser"

# Build the wheel, install it without dependencies into a temporary folder and import every
# module from it, outside the checkout (.ci/check_wheel.sh).
wheel-check: $(STAMP)
	VENV=$(VENV) bash .ci/check_wheel.sh

# Build outputs and caches only; the virtualenv and downloaded data (data_cache/) stay.
clean:
	rm -rf _build .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
