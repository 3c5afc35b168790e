"""The probe's per-(target, minute) counts and its heartbeat.

Observations are counted in memory per target and minute and written once the minute
is over, every target's in one transaction (``probe_minutes``): not every observation,
and one write per minute, not per cycle. The pseudo-target :data:`HEARTBEAT_TARGET`
counts the probe's completed cycles; :func:`last_heartbeat` reads it back (the
watchdog, and a restarted probe deciding whether a failure run carries over).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from ppo_dr.probe.state import Observation
from ppo_dr.store import Store

#: Pseudo-target whose per-minute counts are the probe's heartbeat.
HEARTBEAT_TARGET: Final = "probe:heartbeat"


def minute_of(at: datetime) -> datetime:
    """The UTC minute *at* falls in."""
    return at.astimezone(UTC).replace(second=0, microsecond=0)


@dataclass
class _Minute:
    checks: int = 0
    failures: int = 0
    latency_ms_max: float | None = None


@dataclass
class MinuteCounts:
    """Checks, failures and the worst latency per (target, minute), not yet written."""

    _minutes: dict[tuple[str, datetime], _Minute] = field(default_factory=dict)

    def add(self, observations: Iterable[Observation]) -> None:
        for o in observations:
            m = self._minutes.setdefault((o.target_id, minute_of(o.at)), _Minute())
            m.checks += 1
            m.failures += 0 if o.ok else 1
            if m.latency_ms_max is None or o.latency_ms > m.latency_ms_max:
                m.latency_ms_max = o.latency_ms

    def heartbeat(self, at: datetime) -> None:
        """Count one completed cycle for :data:`HEARTBEAT_TARGET`."""
        self._minutes.setdefault((HEARTBEAT_TARGET, minute_of(at)), _Minute()).checks += 1

    def flush(self, store: Store, before: datetime | None = None) -> int:
        """Write the counts of minutes before *before* (all of them if None), every
        target's in one transaction; rows written.

        Counts are dropped from memory only once written: a failed write (store busy)
        is retried at the next flush.
        """
        due = sorted(
            (k for k in self._minutes if before is None or k[1] < before),
            key=lambda k: (k[1], k[0]),
        )
        if not due:
            return 0
        rows = [
            (target, minute, m.checks, m.failures, m.latency_ms_max)
            for target, minute in due
            for m in (self._minutes[(target, minute)],)
        ]
        written = store.record_probe_minutes(rows)
        for key in due:
            del self._minutes[key]
        return written


def last_heartbeat(store: Store, now: datetime, lookback: timedelta) -> datetime | None:
    """The end of the newest minute the probe heartbeated in, within *lookback*."""
    rows = store.probe_minutes(HEARTBEAT_TARGET, since=now - lookback)
    rows = [r for r in rows if r.checks > 0]
    return (max(r.minute for r in rows) + timedelta(minutes=1)) if rows else None
