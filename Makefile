# The two set-up commands: `make demo` and `make test` each install everything on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
MIRBATCH := $(VENV)/bin/mirbatch
DATA ?= data

.PHONY: install system-deps demo test test-fast lint examples weights clean

# torch first, pinned to the CPU build on this disk: otherwise pip resolves a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

system-deps:
	scripts/install-system-deps.sh

demo: install
	$(MIRBATCH) tag examples --out build/demo-labels --no-resume
	$(MIRBATCH) show build/demo-labels

lint: install
	$(VENV)/bin/ruff check mirbatch tests scripts
	$(VENV)/bin/ruff format --check mirbatch tests scripts
	$(VENV)/bin/mypy mirbatch

test: install system-deps lint
	$(VENV)/bin/pytest

test-fast: install
	$(VENV)/bin/pytest -m "not slow"

# Rebuild the bundled example clips (TimGM6mb renders) and the default weights (all three libraries).
examples: install system-deps
	$(PY) scripts/make_examples.py examples

weights: install system-deps
	$(MIRBATCH) data render --soundfont fluidr3 --out $(DATA)/fluidr3 --per-class 200 --seed 1
	$(MIRBATCH) data render --soundfont freepats --out $(DATA)/freepats --per-class 200 --seed 3
	$(MIRBATCH) data render --soundfont timgm6mb --out $(DATA)/timgm6mb_train --per-class 200 --seed 1
	$(MIRBATCH) train --model cnn-freq --data $(DATA)/fluidr3 --data $(DATA)/freepats --data $(DATA)/timgm6mb_train \
		--out mirbatch/weights/cnn-default.safetensors --epochs 40 --patience 10 --storage build/runs

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
