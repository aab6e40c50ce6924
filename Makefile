# One command runs the demo, one runs every test; both install what they need on a fresh
# Debian machine with Python 3.11+.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo run check stack bench test test-unit test-e2e lint typecheck fmt system-deps clean

demo: $(STAMP)            ## the real bot against local Discord + Gemini emulators
	$(PY) -m bot demo

run: $(STAMP)             ## the real bot against Discord + Gemini (needs .env)
	$(PY) -m bot run

check: $(STAMP)           ## validate settings and tokens
	$(PY) -m bot check

stack: $(STAMP) system-deps   ## Prometheus + Alertmanager (Debian packages, committed timings) for the local bot
	$(PY) deploy/local_stack.py --bot 127.0.0.1:9464 --token-file data/webhook_token

bench: $(STAMP)           ## the performance harness; writes benchmarks/RESULTS.md
	$(PY) -m benchmarks

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Prometheus/promtool, Alertmanager/amtool and redis-server for the ops and fleet tests
# (Debian packages; the tests start their own on random loopback ports).
system-deps:
	@if ! command -v promtool >/dev/null || ! command -v amtool >/dev/null || ! command -v redis-server >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    prometheus prometheus-alertmanager redis-server >/dev/null; \
	fi

# tests/ mirrors bot/ (tests/chat, tests/llm, ...); tests/conftest.py marks the folders that are
# not unit tests: tests/e2e (e2e), tests/deploy (ops: real Prometheus/Alertmanager), tests/bench.
# Three workers, a test file per worker at a time: the live alerting tests mostly wait on the
# shipped Prometheus/Alertmanager timings, so they overlap well even on two cores.
TEST_WORKERS ?= 3
test: $(STAMP) system-deps lint typecheck   ## everything CI runs: every test, lint, mypy
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-unit: $(STAMP)       ## every test but tests/e2e, tests/deploy and tests/bench
	$(PY) -m pytest -q -m "not e2e and not ops and not bench"

test-e2e: $(STAMP)        ## tests/e2e: the whole bot against the emulators
	$(PY) -m pytest -q -m e2e

lint: $(STAMP)             ## ruff, and the import-linter architecture contracts (pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy bot

fmt: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
