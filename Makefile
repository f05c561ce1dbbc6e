# outloop: `make demo` sets everything up and runs the main job; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-fast bench lint clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("outloop needs Python 3.11+") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/outloop demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	# every test on both cores (each isolates itself: its own topics, group, ports, folders; a broker per
	# pytest worker), one test at a time to whichever is free,
	# the long reliability scenarios first so neither core idles at the end; then the tests
	# that time themselves against a throughput or wall-clock bound (marked serial) alone, one at a time
	$(BIN)/pytest -q -n 2 --maxschedchunk 1 -m "not serial" tests/reliability tests/integration tests/unit
	$(BIN)/pytest -q -m serial tests

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow and not integration"

# quick sizes; run a benchmark on its own (without --quick) for the full figures (see bench/README.md)
QUICK_BENCH := pipeline freshness startup sink replay memory query
bench: $(STAMP)
	$(BIN)/python bench/bench_signatures.py
	$(BIN)/python bench/bench_shim.py
	$(BIN)/python bench/bench_redact.py
	for b in $(QUICK_BENCH); do $(BIN)/python bench/bench_$$b.py --quick || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis
