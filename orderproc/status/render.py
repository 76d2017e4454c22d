"""``orderproc status`` on one screen: what is wrong first, then each part."""

from __future__ import annotations

from tabulate import tabulate

from orderproc.status.model import LastRun, Status, Topic


def ago(seconds: float | None) -> str:
    """``42s``, ``12m``, ``3.5h``, ``2.0d`` (``-`` for none)."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def render(status: Status) -> str:
    verdict = {0: "OK", 1: f"NEEDS ATTENTION ({len(status.findings)})", 2: "CANNOT LOOK"}
    lines = [f"orderproc status at {status.checked_at}: {verdict[status.exit_code]}"]
    lines += [f"  ! cannot look: {e}" for e in status.errors]
    lines += [f"  ! {f}" for f in status.findings]
    lines += ["", *_kafka(status), "", *_dlq_side(status)]
    if status.workers:
        lines += ["", *_workers(status)]
    return "\n".join(lines)


def _kafka(status: Status) -> list[str]:
    b = status.broker
    if not b.reachable:
        return [f"broker   {b.bootstrap}: not reachable"]
    out = [
        f"broker   {b.bootstrap}: up, cluster {b.cluster_id}, controller {b.controller}, "
        f"nodes {', '.join(b.nodes)}",
        f"         {b.version}",
        "topics   " + "; ".join(_topic(t) for t in status.topics),
    ]
    rows = []
    for g in status.groups:
        change = "" if g.lag_change is None else f"{g.lag_change:+d}"
        rows.append([g.group, g.role, g.state, g.members, "", "", "", g.lag, change])
        for p in g.partitions:
            committed = "-" if p.committed is None else p.committed
            rows.append(["", "", "", "", f"{p.topic}[{p.partition}]", committed, p.end, p.lag, ""])
    headers = ["group", "role", "state", "members", "partition", "committed", "end", "lag", "Δ"]
    return [*out, "", tabulate(rows, headers=headers, tablefmt="simple")]


def _topic(t: Topic) -> str:
    if not t.exists:
        return f"{t.name} MISSING"
    lagging = f" ({t.under_replicated} under-replicated)" if t.under_replicated else ""
    return f"{t.name} {t.partitions}p x{t.replication}{lagging} end {sum(t.end_offsets.values())}"


def _dlq_side(status: Status) -> list[str]:
    out = []
    if status.dlq is not None:
        d = status.dlq
        out.append(
            f"dlq      {d.undrained} not drained yet, oldest {ago(d.oldest_undrained_age_s)}"
        )
    if status.review is not None:
        r = status.review
        counts = ", ".join(f"{k} {v}" for k, v in r.counts.items())
        oldest = (
            f"oldest unresolved: #{r.oldest_unresolved_id}, {ago(r.oldest_unresolved_age_s)}"
            if r.oldest_unresolved_id is not None
            else "nothing unresolved"
        )
        out.append(f"review   {counts}; {oldest}")
    if status.last:
        out.append("last     " + "; ".join(_last(k, v) for k, v in status.last.items()))
    return out


def _last(name: str, run: LastRun | None) -> str:
    if run is None:
        return f"{name} never"
    return f"{name} {ago(run.age_s)} ago ({run.by})"


def _workers(status: Status) -> list[str]:
    rows: list[list[object]] = []
    for w in status.workers:
        if not w.reachable:
            rows.append([w.url, w.role or "?", "NOT REACHABLE", "", "", "", w.detail])
            continue
        breaker = {None: "", True: "OPEN", False: "closed"}[w.flood_breaker_open]
        health = "healthy" if w.healthy else "UNHEALTHY"
        paused = "" if w.paused_partitions is None else w.paused_partitions
        lag = "" if w.lag is None else w.lag
        rows.append([w.url, w.role or "?", health, breaker, paused, lag, w.detail])
    headers = ["worker", "role", "health", "breaker", "paused", "lag", "detail"]
    return [tabulate(rows, headers=headers, tablefmt="simple")]
