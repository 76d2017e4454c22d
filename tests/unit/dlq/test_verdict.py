"""The verdict on a replay's outcomes (``orderproc.dlq.verdict``): a pure function, one
sentence-named case per line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orderproc.dlq.outcomes import Tally
from orderproc.dlq.verdict import (
    END,
    Call,
    Verdict,
    between_steps,
    on_wait,
    phase_of,
    poll_interval,
)
from orderproc.errors import HIGH_PRICE_REASON
from orderproc.models import ReplayOptions

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OPTIONS = ReplayOptions(outcome_timeout_s=60, pause_at_percent=50)
CANARY = "after the canary"


def tally(processed: int = 0, failed: int = 0, pending: int = 0, **reasons: int) -> Tally:
    counts = {"processed": processed, "failed_again": failed, "pending": pending}
    why = {k.replace("_", " "): v for k, v in reasons.items()} or (
        {HIGH_PRICE_REASON: failed} if failed else {}
    )
    return Tally(counts, why, T0 if pending else None)


WAITING = [
    # (case, tally, seconds since the wait began, call, what it says)
    ("every copy processed: go on", tally(processed=10), 5, Call.GO,
     "after the canary: 10 of 10 replayed orders processed"),
    ("nine of ten failed again: pause, naming the reason", tally(processed=1, failed=9), 5,
     Call.PAUSE, f"paused after the canary: 9 of 10 replayed orders failed again with "
                 f"`{HIGH_PRICE_REASON}`"),
    ("exactly the threshold pauses", tally(processed=5, failed=5), 5, Call.PAUSE,
     f"paused after the canary: 5 of 10 replayed orders failed again with `{HIGH_PRICE_REASON}`"),
    ("under the threshold goes on, saying so", tally(processed=6, failed=4), 5, Call.GO,
     "after the canary: 6 of 10 replayed orders processed, 4 failed again"),
    ("undecided copies within the timeout: wait", tally(processed=3, pending=7), 5, Call.WAIT,
     "after the canary: waiting for 7 of 10 outcomes"),
    ("failures already certain to cross it: pause before the rest arrive",
     tally(failed=5, pending=5), 5, Call.PAUSE,
     f"paused after the canary: 5 of 5 replayed orders failed again with `{HIGH_PRICE_REASON}`"),
    ("still pending at the timeout: pause, asking about the consumer", tally(pending=10), 60,
     Call.PAUSE, "paused after the canary: the outcomes of 10 of 10 replayed orders did not "
                 "arrive within 60 s (is the consumer running?)"),
    ("nothing published: nothing to wait for", tally(), 0, Call.GO,
     "after the canary: 0 of 0 replayed orders processed"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "t", "after", "call", "said"), WAITING, ids=[w[0] for w in WAITING]
)
def test_while_a_wait_is_on(case: str, t: Tally, after: int, call: Call, said: str) -> None:
    verdict = on_wait(t, OPTIONS, waiting_since=T0, now=T0 + timedelta(seconds=after),
                      phase=CANARY)  # fmt: skip

    assert (verdict.call, verdict.said) == (call, said)
    assert verdict.bad is (call is Call.PAUSE)


def test_at_the_end_the_run_finishes_whatever_the_outcomes_and_says_how() -> None:
    fine = on_wait(tally(processed=200), OPTIONS, waiting_since=T0, now=T0, phase=END)
    bad = on_wait(tally(processed=50, failed=150), OPTIONS, waiting_since=T0, now=T0, phase=END)

    assert (fine.call, fine.said, fine.bad) == (
        Call.GO, "finished: 200 of 200 replayed orders processed", False)  # fmt: skip
    assert bad.bad and bad.said.startswith("finished, but 150 of 200 replayed orders failed")


def test_between_steps_what_is_known_decides_and_nothing_is_awaited() -> None:
    now = T0 + timedelta(seconds=10)
    go = between_steps(tally(processed=10, failed=2, pending=50), OPTIONS, now=now,
                       phase="after step 1")  # fmt: skip
    stop = between_steps(tally(processed=2, failed=2, pending=50), OPTIONS, now=now,
                         phase="after step 2")  # fmt: skip
    late = between_steps(tally(processed=9, pending=1), OPTIONS, now=T0 + timedelta(seconds=60),
                         phase="after step 3")  # fmt: skip

    assert go.call is Call.GO
    assert stop.call is Call.PAUSE and stop.said.startswith("paused after step 2: 2 of 4")
    assert late.call is Call.PAUSE and "did not arrive within 60 s" in late.said


def test_several_reasons_are_named_most_frequent_first() -> None:
    t = tally(failed=9, **{"Simulated error: high price": 7, "orderId is empty": 1, "x": 1})

    said = on_wait(t, OPTIONS, waiting_since=T0, now=T0, phase=CANARY).said

    assert "with `Simulated error: high price` (7), `orderId is empty` (1) and 1 other" in said


def test_a_threshold_of_zero_pauses_at_the_first_failure_and_of_100_only_when_all_fail() -> None:
    strict, lenient = ReplayOptions(pause_at_percent=0), ReplayOptions(pause_at_percent=100)
    one = tally(processed=99, failed=1)
    most = tally(processed=1, failed=99)

    assert on_wait(one, strict, waiting_since=T0, now=T0, phase=CANARY).call is Call.PAUSE
    assert on_wait(tally(processed=5), strict, waiting_since=T0, now=T0,
                   phase=CANARY).call is Call.GO  # fmt: skip
    assert on_wait(most, lenient, waiting_since=T0, now=T0, phase=CANARY).call is Call.GO


def test_where_a_run_stands_and_how_often_it_looks() -> None:
    assert phase_of(0, 10) == "after the canary"
    assert phase_of(3, 10) == "after step 3"
    assert phase_of(0, 10, end=True) == END
    assert poll_interval(ReplayOptions(outcome_timeout_s=300)) == 5.0
    assert poll_interval(ReplayOptions(outcome_timeout_s=10)) == 1.0
    assert poll_interval(ReplayOptions(outcome_timeout_s=60)) == 3.0


def test_a_verdict_travels_as_json_and_back() -> None:  # the trigger's event
    verdict = Verdict(Call.PAUSE, "paused after the canary: ...", bad=True)

    assert Verdict.from_dict(verdict.to_dict()) == verdict


@pytest.mark.parametrize(
    ("canary", "selected", "rows"),
    [("10", 200, 10), ("10", 3, 3), ("5%", 200, 10), ("1%", 50, 1), ("0", 50, 0),
     ("100%", 7, 7), (25, 100, 25)],
)  # fmt: skip
def test_a_canary_is_rows_or_a_share_of_the_selection_rounded_up(
    canary: str | int, selected: int, rows: int
) -> None:
    assert ReplayOptions(canary=canary).canary_rows(selected) == rows  # type: ignore[arg-type]
