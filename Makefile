# The README's two commands: `make demo` and `make test`. Both set up .venv from scratch.
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: demo test lint setup clean fuzz

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first, from the CPU wheel on disk: a bare `torch` would pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fusegraph demo

test: $(STAMP)
	# the venv's bin on PATH so the FileCheck tests find `fusegraph` and `filecheck`
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m pytest -q

# The mutation fuzzer's long run (CI runs 300 mutants in tests/fuzz/test_fuzz.py):
# `make fuzz`, `make fuzz FUZZ_COUNT=10000 FUZZ_SEED=7`. Failing mutants go to fuzz-failures/.
FUZZ_COUNT ?= 3000
fuzz: $(STAMP)
	$(PY) -m tests.fuzz.run --count $(FUZZ_COUNT) $(if $(FUZZ_SEED),--seed $(FUZZ_SEED))

lint: $(STAMP)
	$(VENV)/bin/ruff check fusegraph tests benchmarks examples
	$(VENV)/bin/ruff format --check fusegraph tests benchmarks examples
	# pyproject's [tool.mypy]: check_untyped_defs, so test and benchmark bodies are checked too
	$(VENV)/bin/mypy fusegraph tests benchmarks examples

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
