# store-edge. `make demo` runs the product, `make test` runs every check. Both install what
# they need on a fresh Debian machine (the mosquitto package, a virtualenv) and nothing on a
# second run.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench chaos schemas deps clean

demo: deps
	$(BIN)/edge demo

test: deps lint typecheck pytest

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: deps
	$(BIN)/mypy edge devices

pytest: deps /usr/bin/chromium
	$(BIN)/pytest -q

bench: deps
	$(BIN)/python -m bench

# Randomized faults, then the promise checked (docs/operations.md, "Chaos suite"). Longer:
# make chaos CHAOS_ARGS="--duration 1800 --seed 7"
CHAOS_ARGS ?=
chaos: deps
	$(BIN)/python -m edge.chaos --duration 120 --json test-artifacts/chaos/summary.json $(CHAOS_ARGS)

schemas: deps
	$(BIN)/python -m edge.schemas

deps: $(STAMP) /usr/sbin/mosquitto

/usr/sbin/mosquitto:
	@command -v mosquitto >/dev/null || { \
	  echo "installing the Debian package mosquitto"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends mosquitto; }

# The console's browser test drives Debian's chromium with Playwright (no browser download).
/usr/bin/chromium:
	@echo "installing the Debian package chromium (for the console's browser test)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .edge-state .mypy_cache .ruff_cache .pytest_cache
