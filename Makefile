# store-edge. `make demo` runs the product, `make test` runs every check. Both install what
# they need on a fresh Debian machine (the mosquitto package, a virtualenv) and nothing on a
# second run.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench chaos schemas deps clean image

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

# The appliance image (image/README.md): a bootable GPT disk image, build/image/store-edge.raw.
# As root (mkosi uses loop devices and systemd-nspawn); the first build downloads ~300 MB of
# Debian packages, kept in $(IMAGE_CACHE) for the next one. The hub's wheels come from PyPI
# through pip's cache. Root tree only: make image IMAGE_ARGS="--format=directory --bootable=no"
IMAGE_CACHE ?= $(HOME)/.cache/store-edge-image
IMAGE_OUT ?= build/image/store-edge.raw
IMAGE_ARGS ?=
image: deps
	@command -v mkosi >/dev/null && command -v debootstrap >/dev/null \
	  && command -v systemd-nspawn >/dev/null && command -v mkfs.fat >/dev/null || { \
	  echo "installing the Debian packages mkosi, debootstrap, systemd-container, dosfstools"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    mkosi debootstrap systemd-container dosfstools e2fsprogs fdisk binutils; }
	mkdir -p $(IMAGE_CACHE)/apt $(dir $(abspath $(IMAGE_OUT)))
	cd image && $(SUDO) mkosi --nspawn-keep-unit --cache=$(IMAGE_CACHE)/apt \
	  --output=$(abspath $(IMAGE_OUT)) --force $(IMAGE_ARGS) build

schemas: deps
	$(BIN)/python -m edge.schemas
	$(BIN)/python -m edge.hq.schemas

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
