# The two commands a newcomer needs: `make demo` and `make test` (both set everything up first).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(HOME)/.cache/llmpulse/tools/bin:$(PATH)

.PHONY: setup test test-fast lint demo bench bench-quick bench-alerts clean

setup:
	bash scripts/setup.sh

lint: setup
	$(PY) -m ruff check .

## test: lint, then every test (unit, integration against a real Kafka broker, ops, reliability)
test: lint
	$(PY) -m pytest -q --durations=15

## test-fast: the tests that need no broker and no external binaries
test-fast:
	$(PY) -m pytest -q -m unit

## demo: broker + worker + simulated traffic with an incident; shows alerts and metrics; stops all it started
demo: setup
	bash scripts/demo.sh

## bench, bench-quick: the benchmark suite; a local broker is started (and stopped) when none answers
bench: setup
	bash scripts/bench.sh --full

bench-quick: setup
	bash scripts/bench.sh --quick

## bench-alerts: alert quality in event time (a control day, a labelled day of incidents; in process, no broker)
bench-alerts: setup
	$(PY) -m bench.run --full --only alert_quality --no-profile

clean:
	rm -rf .demo .pytest_cache .ruff_cache build dist *.egg-info
