# Two entry points for newcomers (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install-system-deps.sh
	bash scripts/install-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

demo: setup
	$(BIN)/vuinspect demo

lint: setup
	$(BIN)/ruff check vuinspect tests bench
	$(BIN)/ruff format --check vuinspect tests bench
	$(BIN)/mypy

test: setup lint
	bash scripts/build-guest.sh
	$(BIN)/python -m pytest -ra --durations=15

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
