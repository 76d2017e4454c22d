"""Database URLs: bad ones are one line that never repeats the password."""

from __future__ import annotations

import pytest

from orderproc.errors import ConfigError
from orderproc.store.engine import normalize_url, redacted

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:s3cr3t-pw@db/orders", "unsupported database 'mysql'"),
        ("postgresql://u:s3cr3t-pw@db:notaport/orders", "invalid database URL"),
        ("not a url s3cr3t-pw", "invalid database URL"),
    ],
)
def test_a_bad_database_url_is_one_line_without_the_password(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        normalize_url(url)

    text = str(caught.value)
    assert message in text
    assert "s3cr3t-pw" not in text
    assert "\n" not in text
    assert caught.value.__cause__ is None  # no chained error that repeats the URL


def test_plain_postgresql_urls_use_psycopg_3() -> None:
    assert normalize_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"


def test_redacted_hides_the_password() -> None:
    assert redacted("postgresql+psycopg://u:s3cr3t-pw@h/db") == "postgresql+psycopg://u:***@h/db"
    assert "s3cr3t" not in redacted("::: s3cr3t")
