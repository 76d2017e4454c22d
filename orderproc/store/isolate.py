"""Writing a batch so that one row the database refuses does not stop the others.

A batch is written in one transaction. When the database refuses the data
(``RowsRefusedError``: a value too long, a broken constraint), the batch is split
in halves and each half written again, down to single rows: every good row is
stored, and each refused row is handed back with the reason. Writes must be
idempotent (rows already stored are ignored), since a half may be re-sent. A
connection-level ``StoreError`` is not about a row and goes up unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from orderproc.errors import RowsRefusedError

Row = TypeVar("Row")
Result = TypeVar("Result")


def write_isolating(
    rows: Sequence[Row],
    write: Callable[[Sequence[Row]], Result],
) -> tuple[list[Result], list[tuple[Row, RowsRefusedError]]]:
    """Write ``rows`` with ``write``; return the results of the writes that succeeded and
    the rows that were refused, each with its error.

    Raises:
        StoreError: the database could not be reached (not a row's fault).
    """
    results: list[Result] = []
    refused: list[tuple[Row, RowsRefusedError]] = []
    pending = [rows]
    while pending:
        part = pending.pop()
        try:
            results.append(write(part))
        except RowsRefusedError as exc:
            if len(part) == 1:
                refused.append((part[0], exc))
            else:
                middle = len(part) // 2
                pending += [part[middle:], part[:middle]]  # the first half is written first
    return results, refused
