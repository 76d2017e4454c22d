"""Scenario 6: a ``hypothesis`` fuzz through the real broker, one consumer process for all of it.

Every example is a batch of hostile records, each followed by a good order, written
to the orders topic by confluent-kafka or by Debian's kcat (the only way to write a
header name that is not UTF-8): random and bit-flipped values, truncated and padded
Avro, every field at and beyond its limits (length 200 vs 201, NUL, whitespace,
price at the Avro float maximum, infinite, NaN, negative), values near and above
1 MB, absurd keys, and absurd, stale or non-UTF-8 header names and values.

The expected fate of each record comes from an oracle written here from the rules
(plain fastavro plus the store's limits), not from orderproc's own code:

* a header name that is not UTF-8, or bytes that are not exactly one Avro order:
  dead-lettered, category ``deserialization``, the raw bytes described exactly;
* an order that decodes but breaks a limit: dead-lettered, category ``validation``;
* a valid order above the price threshold: retried, then ``business_rule``;
* any other order: processed.

The consumer never stops: it is the same process from the first example to the last,
and exits 0 on SIGTERM at the end. Deterministic: ``derandomize=True`` and a bounded
number of examples (scaled by ``ORDERPROC_TEST_SCALE``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import random
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import fastavro
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from hypothesis import HealthCheck, Phase, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import text

from orderproc.config import Settings
from orderproc.serde import load_schema
from orderproc.store.engine import open_engine

pytestmark = pytest.mark.faults

SCALE = int(os.environ.get("ORDERPROC_TEST_SCALE", "1"))
EXAMPLES = 30 * SCALE
THRESHOLD = 100.0
MAX_TEXT = 200
FLOAT32_MAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]
TOPIC_MAX_BYTES = 2_000_000
HUGE_SIZES = (900_000, 1_000_000, 1_048_576, 1_500_000, 1_900_000)

# -- the records -----------------------------------------------------------------------


@dataclass(frozen=True)
class Fuzzed:
    """One record as written: raw value, key and headers, and the client that writes it."""

    value: bytes | None
    key: bytes | None = None
    headers: tuple[tuple[bytes, bytes | None], ...] = ()
    kcat: bool = False
    label: str = ""  # what the generator meant, for failure messages only

    def __repr__(self) -> str:  # failure messages and hypothesis: keep megabytes out
        size = "None" if self.value is None else f"{len(self.value)} bytes"
        head = None if self.value is None else self.value[:40]
        key = None if self.key is None else self.key[:40]
        headers = [(n[:30], None if v is None else v[:30]) for n, v in self.headers]
        return (
            f"Fuzzed({self.label}: {size} {head!r}, key={key!r}, headers={headers}, "
            f"kcat={self.kcat})"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis's printer
        printer.text(repr(self))


def zigzag(n: int) -> bytes:
    """An Avro ``long``."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def avro_order(order_id: bytes, product: bytes, price: bytes) -> bytes:
    """An Avro ``Order`` written by hand, so any field can break any rule."""
    return zigzag(len(order_id)) + order_id + zigzag(len(product)) + product + price


def f32(value: float) -> bytes:
    return struct.pack("<f", value)


# -- the oracle ----------------------------------------------------------------------------

PROCESSED, DESERIALIZATION, VALIDATION, BUSINESS = (
    "processed",
    "deserialization",
    "validation",
    "business_rule",
)


def decoded(value: bytes | None) -> dict[str, Any] | None:
    """The Avro order in ``value`` if the bytes are exactly one, else None."""
    if not value:
        return None
    buf = io.BytesIO(value)
    try:
        record = fastavro.schemaless_reader(buf, load_schema(), None)
    except Exception:
        return None
    return record if isinstance(record, dict) and buf.tell() == len(value) else None


def within_limits(order: dict[str, Any]) -> bool:
    texts_ok = all(
        order[name].strip() and len(order[name]) <= MAX_TEXT and "\x00" not in order[name]
        for name in ("orderId", "product")
    )
    price = order["price"]
    return bool(texts_ok) and math.isfinite(price) and 0 <= price <= FLOAT32_MAX


def utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def expected(record: Fuzzed) -> str:
    """What must become of ``record``, from the rules alone."""
    if not all(utf8(name) for name, _ in record.headers):
        return DESERIALIZATION
    order = decoded(record.value)
    if order is None:
        return DESERIALIZATION
    if not within_limits(order):
        return VALIDATION
    return BUSINESS if order["price"] > THRESHOLD else PROCESSED


# -- the strategies ----------------------------------------------------------------------

_ids = iter(range(10**9))


def unique(prefix: str) -> str:
    """A fresh order id prefix, so that decodable orders can be told apart by id."""
    return f"{prefix}{next(_ids):07d}-"


CHARS = {
    "ascii": "abcdefghij0123456789-",
    "cjk": "注文品物価格",
    "emoji": "\U0001f4e6\U0001f680\U0001f9fe",
    "blank": " \t\n\u3000",
}
BOUNDARY_LENGTHS = (0, 1, 199, 200, 201, 250)
BOUNDARY_PRICES = (
    0.0,
    -0.0,
    1e-45,
    42.5,
    100.0,
    100.00001,
    150.0,
    FLOAT32_MAX,
    math.inf,
    -math.inf,
    math.nan,
    -1.0,
    -FLOAT32_MAX,
)
OWN_HEADERS = (
    b"orderproc.attempts",
    b"orderproc.source.topic",
    b"orderproc.source.partition",
    b"orderproc.source.offset",
    b"orderproc.retry.due.ms",
    b"orderproc.first.failure.ms",
    b"replay.id",
    b"replay.count",
    b"replay.dlq.partition",
)
ABSURD_VALUES = (
    b"-5",
    b"99999999999999999999999",
    b"NaN",
    b"1e400",
    b"",
    b"\x00",
    b"\xff\xfe",
    b"0x10",
    b" 7 ",
    "७".encode(),
    b"r" * 65,
    b"9" * 5000,
    b"v" * 60_000,
)
NOT_UTF8_NAMES = (b"\xff\xfe", b"\xc3\x28", b"\x80", b"ok\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf")
ANY_TEXT = st.text(max_size=20).map(lambda s: s.encode("utf-8", "surrogatepass"))


@st.composite
def text_field(draw: Any, *, as_id: bool) -> bytes:
    """An orderId or product at and beyond its limits: length, script, blanks, NUL."""
    length = draw(st.sampled_from(BOUNDARY_LENGTHS))
    chars = CHARS[draw(st.sampled_from(sorted(CHARS)))]
    body = (chars * (length // len(chars) + 1))[:length]
    tag = unique("i")
    if as_id and body.strip() and length > len(tag):
        body = tag + body[len(tag) :]
    if body and draw(st.integers(0, 3)) == 0:
        at = draw(st.integers(0, len(body) - 1))
        body = body[:at] + "\x00" + body[at + 1 :]
    return body.encode()


@st.composite
def valid_order(draw: Any, *, expensive: bool = False) -> bytes:
    product = draw(
        st.text(
            st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
            min_size=1,
            max_size=30,
        ).filter(str.strip)
    )
    prices = st.floats(100.5, 1e6, width=32) if expensive else st.floats(0, 100, width=32)
    return avro_order(unique("v").encode(), product.encode(), f32(draw(prices)))


@st.composite
def hostile_value(draw: Any) -> tuple[str, bytes | None]:
    """A value and what it is meant to be; about one in ten is near or above 1 MB."""
    kind = draw(st.sampled_from(range(19)))
    if kind <= 1:
        return "valid", draw(valid_order())
    if kind == 2:
        return "expensive", draw(valid_order(expensive=True))
    if kind <= 5:
        return "random", draw(st.binary(max_size=200))
    if kind <= 8:
        raw = bytearray(draw(valid_order()))
        for bit in draw(st.lists(st.integers(0, len(raw) * 8 - 1), min_size=1, max_size=4)):
            raw[bit // 8] ^= 1 << (bit % 8)
        return "bit-flipped", bytes(raw)
    if kind <= 10:
        raw = draw(valid_order())
        cut = draw(st.integers(-len(raw), 8))
        return "truncated/padded", raw[:cut] if cut < 0 else raw + b"\x00" * cut
    if kind <= 15:
        order_id, product = draw(text_field(as_id=True)), draw(text_field(as_id=False))
        return "boundary", avro_order(
            order_id, product, f32(draw(st.sampled_from(BOUNDARY_PRICES)))
        )
    if kind == 16:
        return "empty", draw(st.sampled_from([None, b""]))
    size = draw(st.sampled_from(HUGE_SIZES))
    if kind == 17:
        return f"huge random {size}", random.Random(draw(st.integers(0, 2**32))).randbytes(size)
    product = ("注文" * (size // 6 + 1))[: size // 3]  # valid UTF-8, far beyond 200 characters
    return f"huge order {size}", avro_order(unique("h").encode(), product.encode(), f32(9.0))


@st.composite
def header(draw: Any) -> tuple[bytes, bytes | None]:
    """A header; about one name in ten is not UTF-8 (that alone dead-letters the record)."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        name = draw(st.sampled_from(NOT_UTF8_NAMES))
    elif kind <= 3:
        name = draw(st.sampled_from(OWN_HEADERS))
    elif kind == 4:
        name = draw(st.sampled_from([b"", b"n" * 5000]))
    else:
        name = draw(ANY_TEXT)
    value = draw(st.one_of(st.sampled_from(ABSURD_VALUES), st.binary(max_size=40), st.none()))
    return name, value


def sendable(record: Fuzzed) -> Fuzzed:
    """The record as one of the two clients can write it.

    confluent-kafka takes header names as text (so a name that is not UTF-8 needs kcat)
    and refuses NUL in them; kcat takes key and headers in argv (no NUL at all, no '='
    or emptiness in names) and cannot write an empty or null value.
    """
    if record.kcat or not all(utf8(n) for n, _ in record.headers):
        headers = tuple(
            (
                n.replace(b"\x00", b"_").replace(b"=", b"_") or b"_",
                None if v is None else v.replace(b"\x00", b"\x01"),
            )
            for n, v in record.headers
        )
        key = None if record.key is None else record.key.replace(b"\x00", b"\x01")
        value = record.value or b"\x00"  # kcat skips an empty file; one NUL byte instead
        return Fuzzed(value, key, headers, True, record.label)
    headers = tuple((n.replace(b"\x00", b"_"), v) for n, v in record.headers)
    return Fuzzed(record.value, record.key, headers, False, record.label)


@st.composite
def hostile_record(draw: Any) -> Fuzzed:
    label, value = draw(hostile_value())
    headers = tuple(draw(st.lists(header(), max_size=3)))
    key = draw(
        st.one_of(
            st.none(), st.binary(max_size=40), ANY_TEXT, st.sampled_from([b"", b"\xff" * 20_000])
        )
    )
    return sendable(Fuzzed(value, key, headers, draw(st.booleans()), label))


def boundary_batch() -> list[Fuzzed]:
    """Every field at and just beyond its limit, deterministically (an explicit example)."""
    ok = f32(42.5)

    def order(
        label: str, order_id: bytes, product: bytes = b"item", price: bytes = ok, **kwargs: Any
    ) -> Fuzzed:
        return Fuzzed(avro_order(order_id, product, price), label=label, **kwargs)

    def uid() -> bytes:
        return unique("b").encode()

    records = [
        order("orderId 200", uid() + b"o" * (200 - len(uid()))),
        order("orderId 201", b"o" * 201),
        order("product 200", uid(), b"p" * 200),
        order("product 201", uid(), b"p" * 201),
        order("product 200 CJK", uid(), "注".encode() * 200),
        order("product 200 emoji", uid(), "\U0001f4e6".encode() * 200),
        order("NUL in orderId", uid() + b"\x00"),
        order("NUL in product", uid(), b"it\x00em"),
        order("blank product", uid(), " \t\u3000".encode()),
        order("empty orderId", b""),
        order("price at the float max", uid(), price=f32(FLOAT32_MAX)),
        order("price infinite", uid(), price=f32(math.inf)),
        order("price NaN", uid(), price=f32(math.nan)),
        order("price negative", uid(), price=f32(-1.0)),
        order("price 100", uid(), price=f32(100.0)),
        order("price 0", uid(), price=f32(0.0)),
        Fuzzed(avro_order(uid(), b"item", ok)[:-1], label="truncated"),
        Fuzzed(avro_order(uid(), b"item", ok) + b"\x00", label="trailing byte"),
        Fuzzed(avro_order(b"\xed\xa0\x80", b"item", ok), label="surrogate in orderId"),
        Fuzzed(None, label="null value"),
        Fuzzed(random.Random(1).randbytes(1_040_000), kcat=True, label="1.04 MB random"),
        order("900 KB CJK product", uid(), "注文".encode() * 150_000),
        order(
            "header name not UTF-8", uid(), headers=((b"\xff\xfe", b"v"), (b"ok", b"1")), kcat=True
        ),
        order(
            "absurd headers and a 20 KB key",
            uid(),
            key=b"\xff" * 20_000,
            headers=(
                (b"ok", b"\xff\xfe\x00"),
                (b"replay.id", b"r" * 65),
                (b"orderproc.attempts", b"-5"),
                (b"orderproc.retry.due.ms", b"9" * 30),
            ),
        ),
        order(
            "expensive with stale provenance",
            uid(),
            price=f32(150.0),
            headers=((b"orderproc.attempts", b"7"), (b"orderproc.source.topic", b"elsewhere")),
        ),
    ]
    return [sendable(r) for r in records]


# -- the run -----------------------------------------------------------------------------


@dataclass
class FuzzRun:
    """The one consumer, the clients that write, and what became of every record."""

    settings: Settings
    consumer: Any
    kcat_produce: Callable[..., None]
    producer: Producer
    reader: Consumer
    records: list[tuple[Fuzzed, str]] = field(default_factory=list)  # by offset
    envelopes: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # by source offset
    processed: set[str] = field(default_factory=set)

    def write(self, batch: list[Fuzzed]) -> range:
        """Write the batch, each hostile record followed by a good order; their offsets."""
        start, topic = len(self.records), self.settings.orders_topic
        for record in batch:
            n = len(self.records)
            good = Fuzzed(
                avro_order(f"good-{n:06d}".encode(), b"item1", f32(float(n % 100))), label="good"
            )
            for item in (record, good):
                if item.kcat:
                    assert self.producer.flush(60) == 0  # offsets follow the write order
                    self.kcat_produce(
                        self.settings.bootstrap_servers,
                        topic,
                        item.value or b"",
                        headers=item.headers,
                        key=item.key,
                    )
                else:
                    self.producer.produce(
                        topic,
                        value=item.value,
                        key=item.key,
                        headers=[(n.decode(), v) for n, v in item.headers],
                        on_delivery=self.delivered,
                    )
                    self.producer.poll(0)
                self.records.append((item, expected(item)))
        assert self.producer.flush(60) == 0
        _, end = self.reader.get_watermark_offsets(
            TopicPartition(topic, 0), timeout=30, cached=False
        )
        assert end == len(self.records), f"wrote {len(self.records)} records, the topic has {end}"
        return range(start, len(self.records))

    def delivered(self, err: Any, msg: Any) -> None:
        assert err is None, f"the broker refused a fuzzed record: {err}"

    def refresh(self) -> None:
        for msg in self.reader.consume(500, timeout=0.5):
            if msg.error() is None:
                envelope = json.loads(msg.value())
                self.envelopes.setdefault(envelope["source"]["offset"], []).append(envelope)
        with open_engine(self.settings.effective_database_url) as engine, engine.connect() as c:
            self.processed = set(c.scalars(text("SELECT order_id FROM processed_orders")))

    def accounted(self, offset: int) -> bool:
        record, fate = self.records[offset]
        if fate == PROCESSED:
            return (decoded(record.value) or {}).get("orderId") in self.processed
        return offset in self.envelopes

    def wait_for(self, offsets: range, timeout_s: float = 240.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            self.refresh()
            missing = [o for o in offsets if not self.accounted(o)]
            assert self.consumer.running, f"the consumer stopped:\n{self.consumer.tail()}"
            if not missing:
                return
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{len(missing)} records unaccounted after {timeout_s:.0f}s, e.g. "
                    f"{[self.records[o] for o in missing[:3]]}"
                )
            time.sleep(0.3)

    def check(self, offsets: range) -> None:
        """Each record where the oracle sends it, dead letters with the right category."""
        for offset in offsets:
            record, fate = self.records[offset]
            if fate == PROCESSED:
                assert offset not in self.envelopes, f"dead-lettered, not processed: {record}"
                continue
            [envelope] = self.envelopes[offset]
            got = envelope["error"]["category"]
            assert got == fate, f"{record}: {got} ({envelope['reason']}), expected {fate}"
            if fate != BUSINESS and record.value:  # the raw bytes, described exactly
                assert envelope["raw_value_length"] == len(record.value), record
                assert envelope["raw_value_sha256"] == hashlib.sha256(record.value).hexdigest()
                assert record.value.startswith(base64.b64decode(envelope["raw_value_b64"]))

    def line(self) -> tuple[str, int]:
        """The scenario line (records, not order ids: not every record has one) and lost."""
        fates = [fate for _, fate in self.records]
        processed = sum(1 for o, f in enumerate(fates) if f == PROCESSED and self.accounted(o))
        dead = sum(1 for o, f in enumerate(fates) if f != PROCESSED and self.accounted(o))
        lost = len(fates) - processed - dead
        duplicated = sum(len(e) - 1 for e in self.envelopes.values())
        return (
            f"scenario=hypothesis-fuzz produced={len(fates)} processed={processed} "
            f"dead_lettered={dead} lost={lost} duplicated={duplicated}",
            lost,
        )


@pytest.fixture
def fuzz_run(
    make_settings: Callable[..., Settings],
    pg_url: str,
    procs: Any,
    kcat_produce: Callable[..., None],
    set_topic_config: Callable[..., None],
) -> Iterator[FuzzRun]:
    """Topics with one partition (offsets are the records' identity), an orders topic that
    takes 2 MB records, and one consumer process."""
    settings = make_settings(
        partitions=1, database_url=pg_url, max_attempts=2, backoff_initial_s=0.1, backoff_max_s=0.2
    )
    set_topic_config(settings, settings.orders_topic, "max.message.bytes", str(TOPIC_MAX_BYTES))
    producer = Producer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "enable.idempotence": True,
            "message.max.bytes": TOPIC_MAX_BYTES,
        }
    )
    reader = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": "fuzz-dlq",
            "enable.auto.commit": False,
        }
    )
    reader.assign([TopicPartition(settings.dlq_topic, 0, 0)])
    run = FuzzRun(settings, procs.consume(settings), kcat_produce, producer, reader)
    try:
        yield run
    finally:
        reader.close()


def test_fuzzed_records_through_the_broker_never_stop_the_consumer(
    fuzz_run: FuzzRun, record_line: Callable[[str], None]
) -> None:
    @hypothesis_settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=(Phase.explicit, Phase.generate),  # no shrinking: each try is a broker round trip
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(batch=st.lists(hostile_record(), min_size=5, max_size=25))
    @example(batch=boundary_batch())
    def one_batch(batch: list[Fuzzed]) -> None:
        offsets = fuzz_run.write(batch)
        fuzz_run.wait_for(offsets)
        fuzz_run.check(offsets)

    one_batch()

    line, lost = fuzz_run.line()
    record_line(line)
    fates = Counter(fate for _, fate in fuzz_run.records)
    kinds = Counter(record.label.split(" ")[0] for record, _ in fuzz_run.records)
    print(f"fuzz fates: {dict(fates)}; kinds: {dict(kinds)}")
    assert lost == 0
    assert set(fuzz_run.envelopes) <= set(range(len(fuzz_run.records)))
    assert fuzz_run.consumer.running  # the same process from the first record to the last
    assert fuzz_run.consumer.sigterm() == 0, fuzz_run.consumer.tail()
