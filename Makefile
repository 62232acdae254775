# Entry points: `make demo` and `make test` (both create the virtualenv on first use), and for
# maintainers `make test-latest` (the newest releases pyproject.toml allows) and `make lock`.
#
# Versions. `make demo` / `make test` install exactly the versions in constraints.txt (the lock,
# every package pinned with ==, torch included), so a new release of a dependency cannot turn them
# red; tools/environment.py checks after installing that what is installed equals the lock.
# `pip install xlt` keeps pyproject.toml's ranges. docs/development.md says when and how to
# refresh the lock.
#
# PyTorch: on a CPU machine we must not pull multi-GB CUDA wheels. The lock pins torch's version;
# where pip's find-links holds a local CPU wheel of it (as on the project's machines) that wheel
# is taken. Elsewhere point TORCH_INDEX_URL at PyTorch's CPU wheel index, or set TORCH_SPEC
# (e.g. TORCH_SPEC='torch==2.14.1') to install another torch than the lock's.
PYTHON ?= python3
VENV ?= .venv
LOCK ?= constraints.txt
TORCH_SPEC ?=
TORCH_INDEX_URL ?=
DEMO_OUT ?= demo-out
PY := $(VENV)/bin/python
STAMP := $(VENV)/.xlt-installed
ENVTOOL := tools/environment.py
TORCH_ARGS = $(if $(TORCH_SPEC),--torch-spec '$(TORCH_SPEC)') $(if $(TORCH_INDEX_URL),--torch-index-url '$(TORCH_INDEX_URL)')
LATEST_VENV ?= .venv-latest
LOCK_VENV ?= .venv-lock

export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export MPLBACKEND ?= Agg

.PHONY: demo test install clean bench test-latest lock versions

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK) $(ENVTOOL)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) $(ENVTOOL) install --lock $(LOCK) $(TORCH_ARGS)
	@touch $(STAMP)

versions: $(STAMP)
	@$(PY) $(ENVTOOL) versions

demo: $(STAMP)
	$(VENV)/bin/xlt demo --out $(DEMO_OUT)

test: $(STAMP)
	@$(PY) $(ENVTOOL) versions
	@$(PY) $(ENVTOOL) check --lock $(LOCK) $(TORCH_ARGS)
	$(PY) -m pytest -q --durations=25

# The drift check: a separate virtualenv with the newest releases pyproject.toml allows (torch
# stays at the lock's version unless TORCH_SPEC says otherwise), then the whole suite.
test-latest:
	@test -x $(LATEST_VENV)/bin/python || $(PYTHON) -m venv $(LATEST_VENV)
	@$(LATEST_VENV)/bin/python $(ENVTOOL) latest --lock $(LOCK) $(TORCH_ARGS)
	@$(LATEST_VENV)/bin/python $(ENVTOOL) versions
	$(LATEST_VENV)/bin/python -m pytest -q

# Refresh the lock: a fresh resolve in a new virtualenv, the whole suite there, and only if it
# passes, constraints.txt rewritten from what that virtualenv holds.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	@$(LOCK_VENV)/bin/python $(ENVTOOL) latest --lock $(LOCK) $(TORCH_ARGS)
	@$(LOCK_VENV)/bin/python $(ENVTOOL) versions
	$(LOCK_VENV)/bin/python -m pytest -q
	$(LOCK_VENV)/bin/python $(ENVTOOL) freeze --lock $(LOCK)

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) $(LATEST_VENV) $(LOCK_VENV) $(DEMO_OUT) build src/*.egg-info .pytest_cache

# Mutation testing of the core modules (docs/testing.md): each sampled mutant runs against the
# tests that execute its line; prints the kill ratio per module and the surviving mutants.
# e.g. make mutation MUTATION_ARGS='--modules src/xlt/align/pooling.py --sample 0'
MUTATION_ARGS ?= --sample 30 --seed 1
.PHONY: mutation
mutation: $(STAMP)
	$(PY) tools/mutation.py $(MUTATION_ARGS)
