# The two commands of the README: `make demo` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast bench-quick clean
setup: $(STAMP)

$(STAMP): pyproject.toml scripts/install-system-deps.sh
	bash scripts/install-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/gridsight demo

# Tests run in JOBS processes (pytest-xdist), a test file per process at a time: most tests wait on
# brokers, databases and subprocesses, so 4 processes keep 2 cores busy. JOBS=0 runs in one process.
JOBS ?= 4
XDIST = $(if $(filter 0,$(JOBS)),,-n $(JOBS) --dist loadfile)

# Tests marked `serial` run alone after the parallel part (exit code 5: none among PYTEST_ARGS).
test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider $(XDIST) -m "not serial" --durations=25 $(PYTEST_ARGS)
	$(PY) -m pytest -q -p no:cacheprovider -m serial --durations=5 $(PYTEST_ARGS) || [ $$? -eq 5 ]

# Everything not marked slow: the edit-test loop (under 3 minutes on 2 cores).
test-fast: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider $(XDIST) -m "not slow" --durations=10 $(PYTEST_ARGS)

bench-quick: $(STAMP)
	for b in bench/*.py; do $(PY) $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) .gridsight
