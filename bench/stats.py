"""Pure helpers of the benchmark: throughput, medians, ratios, run order and the report.

Nothing here does I/O, so all of it is unit-tested (``tests/unit/test_bench_stats.py``).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

RAW_DECODE = "raw_decode"
CONSUMER_NOOP = "consumer_noop"
CONSUMER_NOOP_FAILING = "consumer_noop_failing"
RAW_COPY = "raw_copy"
CONSUMER_PG = "consumer_pg"
CONSUMER_PG_EOS = "consumer_pg_eos"
CONSUMER_NOOP_REGISTRY = "consumer_noop_registry"
RAW_SHARE = "raw_share"
CONSUMER_SHARE_NOOP = "consumer_share_noop"
PRODUCE = "produce"
RAW_PRODUCE = "raw_produce"
CONSUMER_NOOP_FAILING_MAIN = "consumer_noop_failing_main"
"""Not a run of its own: the failing runs timed to the end of their main topic only."""

KINDS: tuple[str, ...] = (
    RAW_SHARE,
    CONSUMER_SHARE_NOOP,
    CONSUMER_NOOP_REGISTRY,
    RAW_DECODE,
    CONSUMER_NOOP,
    CONSUMER_NOOP_FAILING,
    RAW_COPY,
    CONSUMER_PG,
    CONSUMER_PG_EOS,
    RAW_PRODUCE,
    PRODUCE,
)
"""Every run of one round. Each ratio's two sides are neighbours, so they are interleaved;
consumer_noop is the baseline of four, so registry_ratio's sides are one run apart and
share_ratio's three."""

LABELS: dict[str, str] = {
    RAW_DECODE: "raw consume + decode",
    CONSUMER_NOOP: "OrderConsumer, no-op sink",
    CONSUMER_NOOP_REGISTRY: "OrderConsumer, no-op sink, registry wire",
    CONSUMER_NOOP_FAILING: "OrderConsumer, no-op sink, 10% failing",
    CONSUMER_NOOP_FAILING_MAIN: "  (10% failing, main topic only)",
    RAW_COPY: "raw consume + decode + COPY",
    CONSUMER_PG: "OrderConsumer -> PostgreSQL",
    CONSUMER_PG_EOS: "OrderConsumer -> PostgreSQL, exactly once",
    RAW_SHARE: "raw ShareConsumer + decode + ACCEPT",
    CONSUMER_SHARE_NOOP: "ShareOrderConsumer (queue mode), no-op sink",
    RAW_PRODUCE: "raw fastavro encode + idempotent produce",
    PRODUCE: "OrderProducer, unthrottled",
}


@dataclass(frozen=True, slots=True)
class RatioSpec:
    """A headline figure: median throughput of ``subject`` over that of ``baseline``."""

    name: str
    subject: str
    baseline: str
    target: float | None
    """None: reported for information, no verdict."""


RATIOS: tuple[RatioSpec, ...] = (
    RatioSpec("consume_ratio", CONSUMER_NOOP, RAW_DECODE, 0.70),
    RatioSpec("persist_ratio", CONSUMER_PG, RAW_COPY, 0.60),
    RatioSpec("failure_isolation_ratio", CONSUMER_NOOP_FAILING, CONSUMER_NOOP, 0.85),
    RatioSpec("exactly_once_ratio", CONSUMER_PG_EOS, CONSUMER_PG, 0.90),
    RatioSpec("produce_ratio", PRODUCE, RAW_PRODUCE, 0.80),
    RatioSpec("registry_ratio", CONSUMER_NOOP_REGISTRY, CONSUMER_NOOP, 0.95),
    RatioSpec("share_ratio", CONSUMER_SHARE_NOOP, CONSUMER_NOOP, None),
    RatioSpec("share_ceiling_ratio", CONSUMER_SHARE_NOOP, RAW_SHARE, None),
)


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed run: ``count`` records handled in ``seconds``."""

    count: int
    seconds: float

    @property
    def rate(self) -> float:
        """Records per second."""
        if self.seconds <= 0:
            raise ValueError(f"a timed run must take some time, got {self.seconds}s")
        return self.count / self.seconds


@dataclass(frozen=True, slots=True)
class Summary:
    """Median, min and max of the rates of one kind of run."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, rates: Sequence[float]) -> Summary:
        if not rates:
            raise ValueError("no samples to summarize")
        return cls(statistics.median(rates), min(rates), max(rates), len(rates))


@dataclass(frozen=True, slots=True)
class RatioResult:
    spec: RatioSpec
    value: float
    paired: tuple[float, ...]
    """Per-round ratios of the two interleaved runs: how stable the headline is."""

    @property
    def passed(self) -> bool:
        return self.spec.target is None or self.value >= self.spec.target

    @property
    def verdict(self) -> str:
        if self.spec.target is None:
            return "info"
        return "PASS" if self.passed else "BELOW"


def ratio(subject: float, baseline: float) -> float:
    if baseline <= 0:
        raise ValueError(f"baseline throughput must be positive, got {baseline}")
    return subject / baseline


def run_order(round_index: int, kinds: Sequence[str] = KINDS) -> list[str]:
    """Kinds in the order to run them in round ``round_index``.

    Even rounds run forwards, odd rounds backwards (A B, B A, ...): a slow drift of
    the machine then weighs on baseline and subject alike.
    """
    return list(kinds) if round_index % 2 == 0 else list(reversed(kinds))


def summarize(samples: Mapping[str, Sequence[Sample]]) -> dict[str, Summary]:
    return {kind: Summary.of([s.rate for s in runs]) for kind, runs in samples.items()}


def compute_ratios(
    samples: Mapping[str, Sequence[Sample]], specs: Sequence[RatioSpec] = RATIOS
) -> list[RatioResult]:
    """Ratio of medians for each spec, plus the per-round paired ratios."""
    summaries = summarize(samples)
    results = []
    for spec in specs:
        value = ratio(summaries[spec.subject].median, summaries[spec.baseline].median)
        pairs = zip(samples[spec.subject], samples[spec.baseline], strict=True)
        paired = tuple(ratio(s.rate, b.rate) for s, b in pairs)
        results.append(RatioResult(spec, value, paired))
    return results


def format_table(summaries: Mapping[str, Summary], ratios: Sequence[RatioResult]) -> str:
    """The table printed at the end of a run: kinds in ``LABELS`` order, then the ratios."""
    lines = [
        f"{'measurement':<42}{'median msg/s':>14}{'min':>12}{'max':>12}{'runs':>6}",
    ]
    order = list(LABELS)
    for kind in sorted(summaries, key=lambda k: order.index(k) if k in order else len(order)):
        s = summaries[kind]
        label = LABELS.get(kind, kind)
        lines.append(f"{label:<42}{s.median:>14,.0f}{s.low:>12,.0f}{s.high:>12,.0f}{s.n:>6}")
    lines.append("")
    lines.append(f"{'ratio':<26}{'value':>8}{'target':>10}  {'verdict':<8}{'per-round range':>18}")
    for r in ratios:
        spread = f"{min(r.paired):.2f}..{max(r.paired):.2f}" if r.paired else "-"
        target = "-" if r.spec.target is None else f">= {r.spec.target:.2f}"
        lines.append(f"{r.spec.name:<26}{r.value:>8.2f}{target:>10}  {r.verdict:<8}{spread:>18}")
    return "\n".join(lines)


def build_report(
    *,
    samples: Mapping[str, Sequence[Sample]],
    ratios: Sequence[RatioResult],
    orders: int,
    repeats: int,
    environment: Mapping[str, Any],
    definitions: Mapping[str, str],
) -> dict[str, Any]:
    """The content of ``bench/results/latest.json``."""
    summaries = summarize(samples)
    return {
        "ratios": {r.spec.name: round(r.value, 4) for r in ratios},
        "targets": {r.spec.name: r.spec.target for r in ratios},
        "verdicts": {r.spec.name: r.verdict for r in ratios},
        "paired_ratios": {r.spec.name: [round(v, 4) for v in r.paired] for r in ratios},
        "ratio_definitions": {
            r.spec.name: {"subject": r.spec.subject, "baseline": r.spec.baseline} for r in ratios
        },
        "medians_msgs_per_s": {k: round(s.median, 1) for k, s in summaries.items()},
        "min_msgs_per_s": {k: round(s.low, 1) for k, s in summaries.items()},
        "max_msgs_per_s": {k: round(s.high, 1) for k, s in summaries.items()},
        "samples": {
            kind: [
                {"count": s.count, "seconds": round(s.seconds, 6), "msgs_per_s": round(s.rate, 1)}
                for s in runs
            ]
            for kind, runs in samples.items()
        },
        "orders": orders,
        "repeats": repeats,
        "definitions": dict(definitions),
        "environment": dict(environment),
    }
