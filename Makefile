# The project's vocabulary. Everything installs what it needs on first use.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
ORDERPROC := $(BIN)/orderproc

.PHONY: install demo test test-faults lint format bench bench-quick bench-visibility airflow up down clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml uv.lock scripts/bootstrap.sh
	@scripts/bootstrap.sh
	@touch $@

demo: install  ## the main job end to end on the local broker and embedded SQLite
	@$(ORDERPROC) demo

test: install  ## lint, types and the whole suite against a real Kafka broker and PostgreSQL
	@scripts/test.sh

test-faults: install  ## only the fault-injection scenarios (tests/faults), each reconciled order by order
	@SKIP_LINT=1 scripts/test.sh -m faults

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install  ## throughput ratios against raw confluent-kafka + fastavro baselines
	@$(ORDERPROC) dev up --registry >/dev/null
	@$(BIN)/python -m devstack.postgres up >/dev/null
	$(BIN)/python -m bench.run

bench-quick: install  ## every bench scenario once at reduced sizes (make test runs it), no thresholds
	@SKIP_LINT=1 scripts/test.sh tests/integration/bench

bench-visibility: install  ## how soon good orders become visible at 1,000 orders/s, 10 % and 36 % failing
	@$(ORDERPROC) dev up
	@$(BIN)/python -m devstack.postgres up >/dev/null
	$(BIN)/python -m bench.visibility

airflow: install  ## a local Airflow on 127.0.0.1 with the project's DAGs, plugins and connections
	@scripts/airflow-local.sh

up: install
	@$(ORDERPROC) dev up

down: install
	@$(ORDERPROC) dev down

clean:
	@if [ -x $(ORDERPROC) ]; then $(ORDERPROC) dev down; fi
	rm -rf .devstack reports bench/results
