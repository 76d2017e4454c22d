"""The header vocabulary: one name per meaning, tolerant readers, bounded writers."""

from __future__ import annotations

import pytest

from orderproc import headers as h

pytestmark = pytest.mark.unit


def test_every_provenance_header_is_ours_and_no_lineage_header_is() -> None:
    assert all(name.startswith(h.PREFIX) for name in h.PROVENANCE)
    lineage = (h.REPLAY_ID, h.REPLAY_COUNT, h.REPLAY_DLQ_TOPIC, h.REPLAY_DLQ_PARTITION,
               h.REPLAY_DLQ_OFFSET)  # fmt: skip
    assert not any(name.startswith(h.PREFIX) for name in lineage)
    assert len(set(h.PROVENANCE)) == len(h.PROVENANCE)


def test_normalize_accepts_lists_dicts_and_none_values() -> None:
    assert h.normalize(None) == []
    assert h.normalize([("a", None), ("b", "text"), ("c", b"\x00")]) == [
        ("a", b""),
        ("b", b"text"),
        ("c", b"\x00"),
    ]
    assert h.normalize({"a": b"1"}) == [("a", b"1")]


def test_foreign_drops_only_our_own_headers() -> None:
    headers = [("orderproc.attempts", b"1"), ("trace", b"t"), ("replay.id", b"r")]

    assert h.foreign(headers) == [("trace", b"t"), ("replay.id", b"r")]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(b"42", 42), (b"-3", -3), (b"", None), (b"4.5", None), (b"x", None), (b"\xff", None)],
)
def test_integer_reads_what_is_a_number_and_nothing_else(
    value: bytes, expected: int | None
) -> None:
    assert h.integer([("n", value)], "n") == expected


def test_text_takes_the_first_non_empty_value_and_replaces_bad_utf8() -> None:
    assert h.text([("n", b""), ("n", b"a\xffb"), ("n", b"c")], "n") == "a\ufffdb"
    assert h.text([], "n") is None


def test_first_values_agree_with_text_for_every_name() -> None:
    headers = [("n", b""), ("n", b"a"), ("m", b"7"), ("n", b"b"), ("e", b"")]

    assert h.first_values(headers) == {"n": b"a", "m": b"7"}
    for name in ("n", "m", "e", "x"):
        found = h.first_values(headers).get(name)
        assert (found.decode() if found else None) == h.text(headers, name)
    assert h.parse_int(h.first_values(headers)["m"]) == h.integer(headers, "m") == 7


def test_clip_bounds_bytes_at_a_character_boundary() -> None:
    clipped = h.clip("é" * 400, 101)

    assert len(clipped) <= 101
    assert clipped.endswith(b"...")
    clipped.decode("utf-8")  # still valid UTF-8
    assert h.clip("short") == b"short"


class _Msg:
    def __init__(self, outcome: object) -> None:
        self.outcome, self.calls = outcome, 0

    def headers(self) -> object:
        self.calls += 1
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


UNREADABLE = [
    SystemError("returned a result with an exception set"),
    UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid"),
]


@pytest.mark.parametrize("exc", UNREADABLE)
def test_unreadable_headers_are_read_once_and_reported(exc: BaseException) -> None:
    msg = _Msg(exc)

    headers, problem = h.read(msg)

    assert headers == []
    assert problem == h.UNREADABLE
    assert msg.calls == 1  # a second call could hand out a list holding a NULL name


def test_readable_headers_are_normalised() -> None:
    assert h.read(_Msg([("a", None), ("b", b"1")])) == ([("a", b""), ("b", b"1")], None)
