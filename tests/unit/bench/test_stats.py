"""The benchmark's arithmetic and report: the figures ``make bench`` prints must be right."""

from __future__ import annotations

import json

import pytest

from bench.stats import (
    CONSUMER_NOOP,
    CONSUMER_NOOP_FAILING,
    CONSUMER_NOOP_FAILING_MAIN,
    CONSUMER_NOOP_REGISTRY,
    CONSUMER_PG,
    CONSUMER_PG_EOS,
    CONSUMER_SHARE_NOOP,
    KINDS,
    PRODUCE,
    RATIOS,
    RAW_COPY,
    RAW_DECODE,
    RAW_PRODUCE,
    RAW_SHARE,
    RatioSpec,
    Sample,
    Summary,
    build_report,
    compute_ratios,
    format_table,
    ratio,
    run_order,
    summarize,
)

pytestmark = pytest.mark.unit


def samples_at(*rates: float, count: int = 1000) -> list[Sample]:
    """Samples of ``count`` records that ran at exactly the given rates."""
    return [Sample(count, count / r) for r in rates]


ALL = {
    RAW_DECODE: samples_at(100_000, 90_000, 110_000),
    CONSUMER_NOOP: samples_at(80_000, 70_000, 75_000),
    CONSUMER_NOOP_REGISTRY: samples_at(78_000, 68_000, 72_000),
    CONSUMER_NOOP_FAILING: samples_at(72_000, 60_000, 66_000),
    CONSUMER_NOOP_FAILING_MAIN: samples_at(78_000, 70_000, 74_000),
    RAW_COPY: samples_at(40_000, 50_000, 45_000),
    CONSUMER_PG: samples_at(20_000, 30_000, 25_000),
    CONSUMER_PG_EOS: samples_at(19_000, 27_000, 23_000),
    RAW_SHARE: samples_at(100_000, 120_000, 110_000),
    CONSUMER_SHARE_NOOP: samples_at(60_000, 70_000, 66_000),
    RAW_PRODUCE: samples_at(25_000, 24_000, 26_000),
    PRODUCE: samples_at(19_000, 20_000, 21_000),
}


def test_rate_is_records_per_second() -> None:
    assert Sample(200_000, 4.0).rate == 50_000


def test_a_run_that_took_no_time_is_refused() -> None:
    with pytest.raises(ValueError, match="some time"):
        _ = Sample(10, 0.0).rate


def test_summary_is_median_min_max_of_the_rates() -> None:
    assert Summary.of([3.0, 1.0, 2.0, 10.0]) == Summary(median=2.5, low=1.0, high=10.0, n=4)
    with pytest.raises(ValueError):
        Summary.of([])


def test_ratio_refuses_a_zero_baseline() -> None:
    assert ratio(70.0, 100.0) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="positive"):
        ratio(1.0, 0.0)


def test_rounds_alternate_direction_and_keep_each_ratios_sides_close() -> None:
    assert run_order(0) == list(KINDS)
    assert run_order(1) == list(reversed(KINDS))
    assert run_order(2) == list(KINDS)
    for spec in RATIOS:
        # consumer_noop is the baseline of four ratios: two of them are runs apart.
        apart = {"registry_ratio": 2, "share_ratio": 3}.get(spec.name, 1)
        for round_index in (0, 1):
            order = run_order(round_index)
            assert abs(order.index(spec.subject) - order.index(spec.baseline)) == apart, spec.name


def test_ratios_are_ratios_of_medians_with_per_round_pairs() -> None:
    results = {r.spec.name: r for r in compute_ratios(ALL)}

    consume = results["consume_ratio"]
    assert consume.value == pytest.approx(75_000 / 100_000)
    assert consume.paired == pytest.approx((0.8, 70 / 90, 75 / 110))
    assert consume.verdict == "PASS"  # 0.75 >= 0.70

    assert results["persist_ratio"].value == pytest.approx(25_000 / 45_000)
    assert results["persist_ratio"].verdict == "BELOW"  # 0.56 < 0.60

    isolation = results["failure_isolation_ratio"]
    assert isolation.value == pytest.approx(66_000 / 75_000)  # the full-failure runs, not _main
    assert isolation.passed

    share = results["share_ratio"]  # no target: a figure, no verdict
    assert share.value == pytest.approx(66_000 / 75_000)
    assert share.verdict == "info" and share.passed


def test_a_ratio_exactly_at_target_passes() -> None:
    spec = RatioSpec("r", "s", "b", 0.5)
    (result,) = compute_ratios({"s": samples_at(50.0), "b": samples_at(100.0)}, [spec])
    assert result.verdict == "PASS"


def test_unpaired_samples_are_an_error() -> None:
    bad = {**ALL, CONSUMER_PG: samples_at(20_000)}
    with pytest.raises(ValueError):
        compute_ratios(bad)


def test_table_shows_every_measurement_ratio_target_and_verdict() -> None:
    table = format_table(summarize(ALL), compute_ratios(ALL))
    lines = table.splitlines()

    noop = next(line for line in lines if line.startswith("OrderConsumer, no-op sink "))
    assert noop.split()[-4:] == ["75,000", "70,000", "80,000", "3"]
    consume = next(line for line in lines if line.startswith("consume_ratio"))
    assert consume.split() == ["consume_ratio", "0.75", ">=", "0.70", "PASS", "0.68..0.80"]
    persist = next(line for line in lines if line.startswith("persist_ratio"))
    assert "BELOW" in persist and ">= 0.60" in persist
    assert any(line.startswith("failure_isolation_ratio") for line in lines)
    share = next(line for line in lines if line.startswith("share_ceiling_ratio"))
    assert share.split() == ["share_ceiling_ratio", "0.60", "-", "info", "0.58..0.60"]
    produce = next(line for line in lines if line.startswith("produce_ratio"))
    assert produce.split()[:5] == ["produce_ratio", "0.80", ">=", "0.80", "PASS"]  # 20k / 25k
    eos = next(line for line in lines if line.startswith("exactly_once_ratio"))
    assert eos.split()[:5] == ["exactly_once_ratio", "0.92", ">=", "0.90", "PASS"]
    # The main-topic-only failing figure sits right under the full one.
    failing = next(i for i, line in enumerate(lines) if "10% failing" in line)
    assert "main topic only" in lines[failing + 1]


def test_report_is_json_with_ratios_medians_and_every_sample() -> None:
    report = build_report(
        samples=ALL,
        ratios=compute_ratios(ALL),
        orders=1000,
        repeats=3,
        environment={"cpu_count": 2},
        definitions={"timing": "perf_counter"},
    )
    decoded = json.loads(json.dumps(report))

    assert decoded["ratios"] == {
        "consume_ratio": 0.75,
        "persist_ratio": round(25 / 45, 4),
        "failure_isolation_ratio": 0.88,
        "exactly_once_ratio": 0.92,
        "registry_ratio": 0.96,
        "share_ratio": 0.88,
        "share_ceiling_ratio": 0.6,
        "produce_ratio": 0.8,
    }
    assert decoded["targets"] == {
        "consume_ratio": 0.7,
        "persist_ratio": 0.6,
        "failure_isolation_ratio": 0.85,
        "exactly_once_ratio": 0.9,
        "registry_ratio": 0.95,
        "share_ratio": None,
        "share_ceiling_ratio": None,
        "produce_ratio": 0.8,
    }
    assert decoded["verdicts"]["persist_ratio"] == "BELOW"
    assert decoded["verdicts"]["share_ratio"] == "info"
    assert decoded["medians_msgs_per_s"][RAW_DECODE] == 100_000
    assert [s["msgs_per_s"] for s in decoded["samples"][CONSUMER_PG]] == [20_000, 30_000, 25_000]
    assert decoded["samples"][RAW_DECODE][0] == {"count": 1000, "seconds": 0.01, "msgs_per_s": 1e5}
    assert decoded["orders"] == 1000 and decoded["repeats"] == 3
    assert decoded["environment"] == {"cpu_count": 2}
