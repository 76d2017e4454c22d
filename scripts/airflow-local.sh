#!/usr/bin/env bash
# `make airflow`: a local Airflow 3 (API server, scheduler, DAG processor, triggerer) on http://127.0.0.1:${AIRFLOW_PORT:-8080} with the
# project's dags/ and plugins/, AIRFLOW_HOME=.devstack/airflow, and the kafka_default and
# orderproc_db connections built from the ORDERPROC_* settings. Runs until Ctrl-C, which
# stops every Airflow process. The logic is in devstack/airflow.py.
set -euo pipefail
cd "$(dirname "$0")/.."
# exec: Ctrl-C and SIGTERM reach the Python process, which stops Airflow cleanly.
exec .venv/bin/python -m devstack.airflow --port "${AIRFLOW_PORT:-8080}" "$@"
