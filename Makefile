# Two commands for a fresh machine: `make demo` and `make test`. Either works first or second:
# each dependency set has its own stamp, rebuilt only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := $(VENV)/.stamps
# llama-cpp-python compiles from source (~6-10 min on 2 cores, cached by pip afterwards).
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
DEMO_INPUT ?= A customer wrote: 'I ordered a new card on 2026-03-02 and it still has not arrived.' Today is 2026-03-20. Classify the message and say how many days the customer has waited.

.PHONY: demo test lint typecheck unit models bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMPS)/core: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/local: pyproject.toml $(STAMPS)/core
	$(PY) -m pip install --quiet -e '.[local]'
	@touch $@

$(STAMPS)/dev: pyproject.toml $(STAMPS)/core
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

models: $(STAMPS)/local
	$(VENV)/bin/orch models build

demo: models
	$(VENV)/bin/orch run assistant "$(DEMO_INPUT)"

lint: $(STAMPS)/dev
	$(VENV)/bin/ruff check .

typecheck: $(STAMPS)/dev
	$(VENV)/bin/mypy --strict

unit: $(STAMPS)/dev $(STAMPS)/local
	$(VENV)/bin/pytest

test: lint typecheck models unit

bench: $(STAMPS)/dev models
	$(PY) bench/run.py

clean:
	rm -rf $(VENV)
