"""The verdict on a replay run's outcomes so far, decided without I/O: go on, wait, or pause,
and the words that say why (the summary, the run page, the failed Airflow run).

* **While a wait is on** (after the canary, and at the end): wait until every published
  copy is decided, then go on, unless at least ``pause_at_percent`` of them failed
  again. It pauses early once the failures already make that certain (however the
  pending ones turn out), and when copies are still pending ``outcome_timeout_s`` after
  the wait began.
* **Between steps** nothing is awaited: it pauses when at least ``pause_at_percent`` of
  the outcomes known so far (the canary's and every step's) failed again, or when a
  copy published ``outcome_timeout_s`` ago is still pending.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from orderproc.dlq.outcomes import Tally, reasons_said
from orderproc.dlq.runs import RowOutcome
from orderproc.models import ReplayOptions


class Call(StrEnum):
    """What a run does next."""

    GO = "go"
    WAIT = "wait"
    PAUSE = "pause"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The call and why, in words."""

    call: Call
    said: str
    bad: bool = False
    """The outcomes are bad: failed again past the threshold, or never arrived."""

    def to_dict(self) -> dict[str, object]:
        return {"call": self.call.value, "said": self.said, "bad": self.bad}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Verdict:
        return cls(Call(str(data["call"])), str(data["said"]), bool(data.get("bad")))


def phase_of(steps: int, canary: int, *, end: bool = False) -> str:
    """``after the canary``, ``after step 3`` or ``at the end``: where a run stands."""
    if end:
        return END
    return "after the canary" if steps == 0 and canary else f"after step {max(steps, 1)}"


def on_wait(
    tally: Tally, options: ReplayOptions, *, waiting_since: datetime, now: datetime, phase: str
) -> Verdict:
    """The verdict while a wait for every published copy is on."""
    pending, decided = tally[RowOutcome.PENDING], tally.decided
    failed = tally[RowOutcome.FAILED_AGAIN]
    if failed and failed * 100 >= options.pause_at_percent * (decided + pending):
        return _bad(phase, _failures(tally))  # certain, however the pending ones turn out
    if pending == 0:
        return Verdict(Call.GO, _good(phase, _fine(tally)))
    if now - waiting_since >= timedelta(seconds=options.outcome_timeout_s):
        return _bad(phase, _late(tally, options))
    return Verdict(Call.WAIT, f"{phase}: waiting for {pending} of {tally.published} outcomes")


def between_steps(tally: Tally, options: ReplayOptions, *, now: datetime, phase: str) -> Verdict:
    """The verdict between two steps: on what is known now, nothing awaited."""
    failed, decided = tally[RowOutcome.FAILED_AGAIN], tally.decided
    if failed and failed * 100 >= options.pause_at_percent * decided:
        return _bad(phase, _failures(tally))
    oldest = tally.oldest_pending_at
    if oldest is not None and now - oldest >= timedelta(seconds=options.outcome_timeout_s):
        return _bad(phase, _late(tally, options))
    return Verdict(Call.GO, _good(phase, _fine(tally)))


END = "at the end"
"""The phase of the last wait: nothing is left to pause, the run finishes either way."""


def _good(phase: str, said: str) -> str:
    return f"finished: {said}" if phase == END else f"{phase}: {said}"


def _bad(phase: str, why: str) -> Verdict:
    said = f"finished, but {why}" if phase == END else f"paused {phase}: {why}"
    return Verdict(Call.PAUSE, said, bad=True)


def _failures(tally: Tally) -> str:
    failed = tally[RowOutcome.FAILED_AGAIN]
    known = tally.decided
    return f"{failed} of {known} replayed orders failed again with {reasons_said(tally.reasons)}"


def _late(tally: Tally, options: ReplayOptions) -> str:
    pending = tally[RowOutcome.PENDING]
    return (
        f"the outcomes of {pending} of {tally.published} replayed orders did not arrive within "
        f"{options.outcome_timeout_s:g} s (is the consumer running?)"
    )


def _fine(tally: Tally) -> str:
    failed = tally[RowOutcome.FAILED_AGAIN]
    said = f"{tally[RowOutcome.PROCESSED]} of {tally.published} replayed orders processed"
    if failed:
        said += f", {failed} failed again"
    pending = tally[RowOutcome.PENDING]
    return said + (f", {pending} pending" if pending else "")


def poll_interval(options: ReplayOptions) -> float:
    """Seconds between two looks while a run waits: about twenty looks within the outcome
    timeout, at most every second and at least every five."""
    return min(5.0, max(1.0, options.outcome_timeout_s / 20))
