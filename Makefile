# Two entry points: `make demo` and `make test`. Both create the virtualenv on first use.
#
# PyTorch: on a CPU machine we must not pull multi-GB CUDA wheels. TORCH_SPEC pins the
# version this project is tested with; where pip's find-links holds a local CPU wheel of it
# (as on the project's machines) that wheel is taken. Elsewhere point TORCH_INDEX_URL at
# PyTorch's CPU wheel index, or pre-install the torch you want into .venv.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX_URL ?=
DEMO_OUT ?= demo-out
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.xlt-installed

export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export MPLBACKEND ?= Agg

.PHONY: demo test install clean bench

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || \
	  $(PIP) install $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) "$(TORCH_SPEC)"
	$(PIP) install -e ".[test]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/xlt demo --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) $(DEMO_OUT) build src/*.egg-info .pytest_cache
