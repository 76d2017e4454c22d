"""The DLQ drain as a process of its own, for the fault scenarios (``orderproc`` has no
drain command: Airflow runs it). ``python -m tests.faults.drain_process`` reads the
``ORDERPROC_*`` settings, drains the DLQ into the store once and prints
``consumed=N inserted=N duplicates=N caught_up=B``; an expected failure is one line
on stderr and exit status 1, as the CLI does."""

from __future__ import annotations

import sys

from orderproc.config import Settings
from orderproc.dlq.drain import run_drain
from orderproc.errors import OrderProcError
from orderproc.logs import configure_logging


def main() -> int:
    configure_logging(json_output=False, level="INFO")
    try:
        result = run_drain(Settings())
    except OrderProcError as exc:
        print(f"drain: error: {exc}", file=sys.stderr)
        return 1
    print(
        f"consumed={result.consumed} inserted={result.inserted} "
        f"duplicates={result.duplicates} caught_up={result.caught_up}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
