"""Every expected failure is one line, a non-zero exit and no traceback, and no output of a
failing run ever contains a password (a planted one, in every setting that can hold one)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orderproc.config import Settings
from orderproc.dlq.store import DlqStore
from orderproc.models import Order
from orderproc.store.engine import open_engine

pytestmark = pytest.mark.integration

PLANTED = "Pl4nted-s3cret-pw"


@pytest.fixture
def fail(
    make_settings: Callable[..., Settings], settings_env: Callable[[Settings], dict[str, str]]
) -> Callable[..., str]:
    """``fail(*args, **env)``: run ``orderproc <args>`` with the password planted in every
    secret setting (plus ``env``), expect a failure, and return its one line."""
    settings = make_settings()

    def run(*args: str, timeout: float = 120, **env: str) -> str:
        environ = settings_env(settings)
        environ["ORDERPROC_SASL_PASSWORD"] = PLANTED  # unused with PLAINTEXT, but set
        environ["ORDERPROC_SSL_KEY_PASSWORD"] = PLANTED
        environ.update(env)
        done = subprocess.run(
            [sys.executable, "-m", "orderproc", *args],
            env=environ,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        output = done.stdout + done.stderr
        assert done.returncode != 0, output
        assert PLANTED not in output
        assert "Traceback" not in output
        errors = [line for line in output.splitlines() if line.startswith("orderproc: error:")]
        assert len(errors) == 1, output
        # Besides the error, at most one quietened librdkafka warning may precede it.
        assert len(output.strip().splitlines()) <= 2, output
        return errors[0].removeprefix("orderproc: error: ")

    return run


@pytest.fixture
def closed_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def pg_url_with(postgres_server_url: str, *, password: str, port: int | None = None) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(postgres_server_url).set(password=password)
    if port is not None:
        url = url.set(port=port)
    return url.render_as_string(hide_password=False)


@pytest.mark.parametrize("command", [["db", "upgrade"], ["consume", "--max-messages", "1"]])
def test_a_wrong_database_password_is_one_line(
    fail: Callable[..., str], postgres_server_url: str, command: list[str]
) -> None:
    url = pg_url_with(postgres_server_url, password=PLANTED)

    line = fail(*command, ORDERPROC_DATABASE_URL=url)

    assert "password authentication failed" in line
    assert ":***@" in line


def test_postgresql_down_at_start_is_one_line(
    fail: Callable[..., str], postgres_server_url: str, closed_port: int
) -> None:
    url = pg_url_with(postgres_server_url, password=PLANTED, port=closed_port)

    line = fail("consume", "--max-messages", "1", ORDERPROC_DATABASE_URL=url)

    assert "could not migrate the store" in line
    assert "Connection refused" in line or "connection failed" in line


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"mysql://orderproc:{PLANTED}@db/orders", "unsupported database 'mysql'"),
        (f"postgresql://orderproc:{PLANTED}@db:port/orders", "invalid database URL"),
    ],
)
def test_a_database_url_orderproc_cannot_use_is_one_line(
    fail: Callable[..., str], url: str, expected: str
) -> None:
    assert expected in fail("db", "upgrade", ORDERPROC_DATABASE_URL=url)


def test_a_taken_metrics_port_is_one_line(fail: Callable[..., str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        line = fail("consume", "--max-messages", "1", "--metrics-port", str(port))

    assert line == f"cannot serve metrics on 127.0.0.1:{port}: Address already in use"


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_a_setting_that_is_not_finite_is_refused(fail: Callable[..., str], value: str) -> None:
    line = fail("topics", "create", ORDERPROC_BACKOFF_INITIAL_S=value)

    assert line == "invalid setting ORDERPROC_BACKOFF_INITIAL_S: Input should be a finite number"


@pytest.mark.parametrize(
    "command",
    [["consume", "--max-messages", "1"], ["dlq", "tail", "--idle-exit", "2"], ["topics", "create"]],
)
def test_an_unreachable_broker_is_one_line(
    fail: Callable[..., str], closed_port: int, command: list[str]
) -> None:
    line = fail(
        *command,
        ORDERPROC_BOOTSTRAP_SERVERS=f"127.0.0.1:{closed_port}",
        ORDERPROC_ADMIN_TIMEOUT_S="3",
    )

    assert line.startswith(f"cannot reach Kafka at 127.0.0.1:{closed_port}")


@pytest.fixture
def one_event(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    settings = make_settings(create=False, database_url=f"sqlite:///{tmp_path / 'review.db'}")
    from orderproc.store.migrate import upgrade

    with open_engine(settings.effective_database_url) as engine:
        upgrade(engine)
        from orderproc.clock import utcnow

        order = Order("o-1", "item1", 150.0)
        row = {
            "dlq_topic": "orders_dlq", "dlq_partition": 0, "dlq_offset": 1, "drained_at": utcnow(),
            "status": "new", "reason": "Simulated error: high price", "category": "business_rule",
            "attempts": 3, "replay_count": 0, "failure_key": "g|src:orders:0:1|r0",
            "order_id": order.order_id, "product": order.product, "price": order.price,
        }  # fmt: skip
        DlqStore(engine).insert_events([row], actor="test")
    return settings


def test_review_refusals_are_one_line_and_change_nothing(
    one_event: Settings, settings_env: Callable[[Settings], dict[str, str]]
) -> None:
    def refused(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "orderproc", "dlq", *args],
                              env=settings_env(one_event), capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        [line] = done.stderr.strip().splitlines()
        return line.removeprefix("orderproc: error: ")

    # The valid id first: the message names the id that blocked, and event 1 stays new.
    assert refused("approve", "1", "999999") == (
        "cannot approve, nothing changed: no DLQ event with id 999999"
    )
    assert refused("edit", "1", "--set", "price=1e39") == (
        "event 1: price 1e+39 is larger than an Avro float can hold"
    )
    assert refused("edit", "1", "--set", "product=" + "x" * 201) == (
        "event 1: product is 201 characters long; the store holds 200"
    )
    with open_engine(one_event.effective_database_url) as engine:
        event = DlqStore(engine).get(1)
    assert (event.status, event.corrected_payload) == ("new", None)


def test_passwords_never_appear_in_status_or_demo_lines(
    settings_env: Callable[[Settings], dict[str, str]], make_settings: Callable[..., Settings]
) -> None:
    env = settings_env(make_settings(create=False))
    done = subprocess.run([sys.executable, "-m", "orderproc", "dev", "status"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip

    assert "postgres" in done.stdout
    assert "orderproc:orderproc@" not in done.stdout  # the dev cluster's password is masked
