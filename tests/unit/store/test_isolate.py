"""Isolating the rows a database refuses: every good row written, each bad one handed back."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
import pytest
from sqlalchemy import exc as sa_exc

from orderproc.errors import RowsRefusedError, StoreError
from orderproc.store.engine import refuses_rows, store_error
from orderproc.store.isolate import write_isolating

pytestmark = pytest.mark.unit


def test_good_batches_are_written_in_one_go() -> None:
    calls: list[Sequence[int]] = []

    def write(rows: Sequence[int]) -> int:
        calls.append(rows)
        return len(rows)

    results, refused = write_isolating(list(range(100)), write)

    assert results == [100]
    assert refused == []
    assert len(calls) == 1


def test_bad_rows_are_isolated_and_every_good_row_is_written() -> None:
    stored: list[int] = []

    def write(rows: Sequence[int]) -> int:
        if any(r % 17 == 5 for r in rows):
            raise RowsRefusedError("value too long")
        stored.extend(rows)
        return len(rows)

    results, refused = write_isolating(list(range(100)), write)

    assert sorted(stored) == [r for r in range(100) if r % 17 != 5]
    assert [row for row, _ in refused] == [5, 22, 39, 56, 73, 90]
    assert sum(results) == 94


def test_a_database_that_is_down_is_not_a_row_problem() -> None:
    def write(rows: Sequence[int]) -> int:
        raise StoreError("connection refused")

    with pytest.raises(StoreError, match="connection refused"):
        write_isolating([1, 2, 3], write)


@pytest.mark.parametrize(
    ("exc", "per_row"),
    [
        (psycopg.errors.StringDataRightTruncation("value too long"), True),
        (psycopg.errors.NumericValueOutOfRange("integer out of range"), True),
        (sa_exc.IntegrityError("insert", {}, psycopg.errors.CheckViolation("check")), True),
        (ValueError("PostgreSQL text fields cannot contain NUL (0x00) bytes"), True),
        (sa_exc.OperationalError("connect", {}, psycopg.OperationalError("refused")), False),
        (sa_exc.ProgrammingError("select", {}, psycopg.errors.UndefinedTable("no table")), False),
    ],
)
def test_which_database_errors_are_about_a_row(exc: BaseException, per_row: bool) -> None:
    assert refuses_rows(exc) is per_row
    assert isinstance(store_error("could not write", exc), RowsRefusedError) is per_row
