# The two Quickstart commands (`make demo`, `make test`) create .venv and install what they need.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all test-multiprocess bench clean

$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

# Main job: the whole pipeline on the built-in dataset (README, docs/demo.md); reuses runs/demo.
demo: $(STAMP)
	$(PY) launch/demo.py --gin_file=demo.gin

# Default test run (CI): everything but the tests marked slow.
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

test-all: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) benchmarks/mfu.py

clean:
	rm -rf $(VENV) runs
