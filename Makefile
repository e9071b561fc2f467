# The two Quickstart commands (`make demo`, `make test`) create .venv and install what they need.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all test-multiprocess bench bench-torchref clean

$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

# Main job: the whole pipeline on the built-in dataset (README, docs/demo.md); reuses runs/demo.
demo: $(STAMP)
	$(PY) launch/demo.py --gin_file=demo.gin

# Default test run (CI): everything but the tests marked slow, in TEST_WORKERS processes (one test
# file per process at a time, so module fixtures are built once; TEST_WORKERS=0 runs in-process).
# WITH_HUGE_PAGES runs pytest with glibc malloc on transparent huge pages, as the launch scripts
# run themselves (vp_jax/cpu_allocator.py: fewer page faults in every XLA:CPU call).
WITH_HUGE_PAGES := $(PY) -m vp_jax.cpu_allocator
TEST_WORKERS ?= 2
test: $(STAMP)
	$(WITH_HUGE_PAGES) $(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile \
	    --no-loadscope-reorder --durations=15 tests

test-all: $(STAMP)
	$(WITH_HUGE_PAGES) $(PY) -m pytest -q tests

# The multi-process battery alone (also part of `make test`): several jax processes on localhost
# through jax.distributed (training, joint checkpoints, resume, preemption, text encoder).
test-multiprocess: $(STAMP)
	$(WITH_HUGE_PAGES) $(PY) -m pytest -q -m multiprocess tests

bench: $(STAMP)
	$(PY) benchmarks/mfu.py

# PyTorch reference implementations (magvit2-pytorch, audiolm-pytorch SoundStream) for the tokenizer
# benchmarks: their own venv from an exact freeze (torch 2.11 CUDA wheels, several GB; see the
# comment at the top of benchmarks/torchref-requirements.txt), never in $(VENV).
TORCHREF_VENV ?= .venv-torchref
TORCHREF_STAMP := $(TORCHREF_VENV)/.installed

$(TORCHREF_STAMP): benchmarks/torchref-requirements.txt
	$(PYTHON) -m venv $(TORCHREF_VENV)
	$(TORCHREF_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TORCHREF_VENV)/bin/python -m pip install --quiet --no-deps -r benchmarks/torchref-requirements.txt
	touch $(TORCHREF_STAMP)

# Tokenizer speed against the PyTorch references, same clips, same run (small presets; pass the
# scripts' --configs paper / --presets paper for the paper widths).
bench-torchref: $(STAMP) $(TORCHREF_STAMP)
	TORCHREF_PYTHON=$(TORCHREF_VENV)/bin/python $(PY) benchmarks/video_tokenizer.py --configs small
	TORCHREF_PYTHON=$(TORCHREF_VENV)/bin/python $(PY) benchmarks/audio_tokenizer.py --presets small

clean:
	rm -rf $(VENV) $(TORCHREF_VENV) runs
