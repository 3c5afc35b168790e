"""Probe observations (state transitions, per-minute counts) and maintenance windows."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

from sqlalchemy import and_, case, or_, select
from sqlalchemy.orm import Session

from ppo_dr.errors import PermanentError
from ppo_dr.ids import check_id
from ppo_dr.store.base import StoreBase, to_record
from ppo_dr.store.checks import check_count, check_text, utc
from ppo_dr.store.records import (
    MAINTENANCE_SCOPES,
    MaintenanceWindow,
    ProbeMinute,
    ProbeTransition,
)
from ppo_dr.store.schema import TARGET_LEN, MaintenanceRow, ProbeMinuteRow, ProbeTransitionRow

_DETAIL_LEN: Final = 10_000


class ObservationsMixin(StoreBase):
    # -- probe ------------------------------------------------------------------------

    def record_probe_transition(
        self,
        target: str,
        from_state: str,
        to_state: str,
        *,
        at: datetime | None = None,
        detail: str = "",
    ) -> ProbeTransition:
        """Record that *target* went from *from_state* to *to_state* (up, suspect, down, ...)."""
        target = check_text(target, "probe target", TARGET_LEN)
        from_state = check_text(from_state, "from_state", 32)
        to_state = check_text(to_state, "to_state", 32)
        detail = check_text(detail, "detail", _DETAIL_LEN, empty_ok=True)
        when = utc(at, "transition time")
        with self._tx(write=True) as session:
            row = ProbeTransitionRow(
                target=target, from_state=from_state, to_state=to_state, at=when, detail=detail
            )
            return to_record(ProbeTransition, self._added(session, row))

    def probe_transitions(
        self, target: str | None = None, since: datetime | None = None
    ) -> list[ProbeTransition]:
        """Transitions of one target (or all) at or after *since*, in time order."""
        stmt = select(ProbeTransitionRow).order_by(ProbeTransitionRow.at, ProbeTransitionRow.id)
        if target is not None:
            stmt = stmt.where(
                ProbeTransitionRow.target == check_text(target, "probe target", TARGET_LEN)
            )
        if since is not None:
            stmt = stmt.where(ProbeTransitionRow.at >= utc(since, "since"))
        return self._records(ProbeTransition, stmt)

    def record_probe_minute(
        self,
        target: str,
        minute: datetime,
        checks: int,
        failures: int,
        latency_ms_max: float | None = None,
    ) -> ProbeMinute:
        """Add *checks* and *failures* to *target*'s counts for the UTC minute of *minute*.

        An upsert that adds (never overwrites), so several flushes for the same minute,
        from one probe or several, sum up. The maximum latency is kept.
        """
        values = _minute_values(target, minute, checks, failures, latency_ms_max)
        with self._tx(write=True) as session:
            session.connection().execute(self._minute_upsert(session), values)
            row = session.get(
                ProbeMinuteRow, (values["target"], values["minute"]), populate_existing=True
            )
            assert row is not None
            return to_record(ProbeMinute, row)

    def record_probe_minutes(self, counts: Iterable[MinuteCount]) -> int:
        """Add many ``(target, minute, checks, failures, latency_ms_max)`` counts in ONE
        transaction and one statement; the number of rows written.

        This is the probe's per-minute flush: one write per minute for all its
        targets, not one per target. Counts for the same target and minute are merged
        first (PostgreSQL refuses to upsert a row twice in one statement).
        """
        merged: dict[tuple[str, datetime], dict[str, Any]] = {}
        for count in counts:
            values = _minute_values(*count)
            key = (values["target"], values["minute"])
            if key not in merged:
                merged[key] = values
                continue
            into = merged[key]
            into["checks"] += values["checks"]
            into["failures"] += values["failures"]
            if into["latency_ms_max"] is None or (
                values["latency_ms_max"] is not None
                and values["latency_ms_max"] > into["latency_ms_max"]
            ):
                into["latency_ms_max"] = values["latency_ms_max"]
        if not merged:
            return 0
        with self._tx(write=True) as session:
            # Core, not ORM: ORM bulk inserts split the batch where a value is None.
            session.connection().execute(self._minute_upsert(session), list(merged.values()))
        return len(merged)

    def _minute_upsert(self, session: Session) -> Any:
        """INSERT ... ON CONFLICT that adds the counts and keeps the larger latency."""
        table = ProbeMinuteRow.__table__
        insert = self._insert(session)(table)
        old, new = table.c.latency_ms_max, insert.excluded.latency_ms_max
        return insert.on_conflict_do_update(
            index_elements=["target", "minute"],
            set_={
                "checks": table.c.checks + insert.excluded.checks,
                "failures": table.c.failures + insert.excluded.failures,
                # max() that ignores NULL, on both backends
                "latency_ms_max": case(
                    (old.is_(None), new),
                    (new.is_(None), old),
                    (new > old, new),
                    else_=old,
                ),
            },
        )

    def probe_minutes(
        self,
        target: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[ProbeMinute]:
        """Per-minute counts in ``[since, until)``, by target then minute."""
        stmt = select(ProbeMinuteRow).order_by(ProbeMinuteRow.target, ProbeMinuteRow.minute)
        if target is not None:
            stmt = stmt.where(ProbeMinuteRow.target == check_text(target, "probe target", 200))
        if since is not None:
            stmt = stmt.where(ProbeMinuteRow.minute >= utc(since, "since"))
        if until is not None:
            stmt = stmt.where(ProbeMinuteRow.minute < utc(until, "until"))
        return self._records(ProbeMinute, stmt)

    # -- maintenance ------------------------------------------------------------------

    def start_maintenance(
        self,
        scope_kind: str,
        scope_id: str,
        *,
        reason: str = "",
        created_by: str = "",
        starts_at: datetime | None = None,
        ends_at: datetime | None = None,
    ) -> MaintenanceWindow:
        """Open a maintenance window on a server, DC or client (from now unless *starts_at*)."""
        if scope_kind not in MAINTENANCE_SCOPES:
            raise PermanentError(
                f"maintenance scope kind {scope_kind!r} unknown: use one of {MAINTENANCE_SCOPES}"
            )
        scope = check_id(scope_id, f"{scope_kind} id")
        reason = check_text(reason, "reason", _DETAIL_LEN, empty_ok=True)
        created_by = check_text(created_by, "created_by", TARGET_LEN, empty_ok=True)
        start = utc(starts_at, "starts_at")
        end = None if ends_at is None else utc(ends_at, "ends_at")
        if end is not None and end < start:
            raise PermanentError(f"maintenance ends ({end}) before it starts ({start})")
        with self._tx(write=True) as session:
            row = MaintenanceRow(
                scope_kind=scope_kind,
                scope_id=scope,
                starts_at=start,
                ends_at=end,
                reason=reason,
                created_by=created_by,
            )
            return to_record(MaintenanceWindow, self._added(session, row))

    def end_maintenance(self, window_id: int, *, at: datetime | None = None) -> MaintenanceWindow:
        """Close a window now (or at *at*); a window that already ended earlier is unchanged.

        Ending a window that has not started yet cancels it (it ends when it starts).
        """
        if isinstance(window_id, bool) or not isinstance(window_id, int):
            raise PermanentError(f"maintenance window id must be an int, got {window_id!r}")
        when = utc(at, "end time")
        with self._tx(write=True) as session:
            missing = f"no maintenance window with id {window_id}"
            row = self._locked_row(
                session, MaintenanceRow, MaintenanceRow.id == window_id, missing=missing
            )
            if row.ends_at is None or row.ends_at > when:
                row.ends_at = max(when, row.starts_at)
            return to_record(MaintenanceWindow, row)

    def active_maintenance(self, at: datetime | None = None) -> list[MaintenanceWindow]:
        """Windows in force at *at* (default now): started, and not yet ended."""
        when = utc(at, "time")
        stmt = (
            select(MaintenanceRow)
            .where(
                and_(
                    MaintenanceRow.starts_at <= when,
                    or_(MaintenanceRow.ends_at.is_(None), MaintenanceRow.ends_at > when),
                )
            )
            .order_by(MaintenanceRow.starts_at, MaintenanceRow.id)
        )
        return self._records(MaintenanceWindow, stmt)


#: ``(target, minute, checks, failures, latency_ms_max)``: one count for
#: :meth:`ObservationsMixin.record_probe_minutes`.
MinuteCount = tuple[str, datetime, int, int, float | None]


def _minute_values(
    target: str, minute: datetime, checks: int, failures: int, latency_ms_max: float | None
) -> dict[str, Any]:
    """One probe-minute row's values, checked (bad input raises PermanentError)."""
    target = check_text(target, "probe target", TARGET_LEN)
    start = utc(minute, "minute").replace(second=0, microsecond=0)
    checks = check_count(checks, "checks")
    failures = check_count(failures, "failures")
    if failures > checks:
        raise PermanentError(f"failures ({failures}) cannot exceed checks ({checks})")
    if latency_ms_max is not None:
        if isinstance(latency_ms_max, bool) or not isinstance(latency_ms_max, int | float):
            raise PermanentError(f"latency_ms_max must be a number, got {latency_ms_max!r}")
        latency_ms_max = float(latency_ms_max)
    return {
        "target": target,
        "minute": start,
        "checks": checks,
        "failures": failures,
        "latency_ms_max": latency_ms_max,
    }
