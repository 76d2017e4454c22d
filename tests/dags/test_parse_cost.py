"""Parsing a DAG file stays cheap: the scheduler re-parses them all the time.

Each DAG file is parsed in a fresh interpreter (as Airflow's DAG processor does),
and the modules it pulled in are checked: no Kafka client, no Avro, none of the
worker, dead-letter, report, store or Kafka wings of orderproc. Those load inside
the tasks, when a task runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

DAGS = sorted((Path(__file__).resolve().parents[2] / "dags").glob("*.py"))
HEAVY = ("confluent_kafka", "fastavro", "matplotlib")
HEAVY_OURS = (
    "orderproc.worker",
    "orderproc.dlq",
    "orderproc.report",
    "orderproc.store",
    "orderproc.kafka",
    "orderproc.airflow.tasks",
    "orderproc.airflow.hooks",
)

PROBE = """
import json, runpy, sys
runpy.run_path(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("dag_file", DAGS, ids=[p.stem for p in DAGS])
def test_parsing_a_dag_file_loads_no_kafka_avro_or_worker_modules(
    dag_file: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(dag_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])

    assert "airflow.sdk" in loaded  # the probe really parsed a DAG file
    heavy = [m for m in loaded if m.split(".")[0] in HEAVY or m.startswith(HEAVY_OURS)]
    assert heavy == []
