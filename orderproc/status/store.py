"""The store side of ``orderproc status``: the review backlog, and when the drain, the
replay and the report last did something (audit rows; the report's newest files)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from orderproc.config import Settings
from orderproc.dlq.audit import AuditAction, last_run
from orderproc.dlq.watch import review_backlog
from orderproc.report import FOLDER_PREFIX, STAMP_FORMAT
from orderproc.status.model import Finding, LastRun, Review, Status
from orderproc.store.engine import open_engine, store_error


def look_at_store(settings: Settings, status: Status, *, review_slo_hours: float) -> None:
    """Fill in the review and last-run parts of ``status``.

    Raises:
        StoreError: the store cannot be read (unreachable, or not migrated).
    """
    now = datetime.now(UTC)
    with open_engine(settings.effective_database_url) as engine:
        review = review_backlog(engine)
        try:
            drain = last_run(engine, [AuditAction.DRAINED, AuditAction.COPY])
            replay = last_run(engine, [AuditAction.REPLAYED])
        except SQLAlchemyError as exc:
            raise store_error("cannot read the DLQ store's audit rows", exc) from exc
    oldest = review.oldest
    age = None if oldest is None else (now - oldest.failed_at).total_seconds()
    status.review = Review(review.counts, oldest.event_id if oldest else None, age)
    if age is not None and age > review_slo_hours * 3600:
        status.findings.append(
            Finding(
                "review backlog",
                f"failure {oldest.event_id if oldest else '?'} has waited "
                f"{age / 3600:.1f} h, over the {review_slo_hours:g} h SLO",
            )
        )
    status.last["drain"] = _run(drain.at, drain.actor, now) if drain else None
    status.last["replay"] = _run(replay.at, replay.actor, now) if replay else None
    status.last["report"] = last_report(settings.effective_reports_dir, now)


def last_report(folder: Path, now: datetime) -> LastRun | None:
    """The newest report folder under ``folder`` (None when there is none)."""
    newest: tuple[datetime, Path] | None = None
    for path in folder.glob(f"{FOLDER_PREFIX}*") if folder.is_dir() else []:
        try:
            at = datetime.strptime(path.name.removeprefix(FOLDER_PREFIX), STAMP_FORMAT)
        except ValueError:
            continue
        at = at.replace(tzinfo=UTC)
        if newest is None or at > newest[0]:
            newest = (at, path)
    return None if newest is None else _run(newest[0], str(newest[1]), now)


def _run(at: datetime, by: str, now: datetime) -> LastRun:
    return LastRun(at.isoformat(timespec="seconds"), (now - at).total_seconds(), by)
