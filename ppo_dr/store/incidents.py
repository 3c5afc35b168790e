"""Incidents and their timelines: opened once per dedupe key, moved through legal states.

States and transitions (anything else is refused or a no-op, never a silent rewrite)::

    open ──acknowledge──► acknowledged ──mark_recovered──► recovered ──resolve──► resolved
      └────────────mark_recovered─────────────────────────►┘    (resolve from any state)

* ``acknowledge`` on a recovered incident records who acknowledged (late ack); on an
  acknowledged one it is a no-op; on a resolved one it raises :class:`PermanentError`.
* ``mark_recovered`` and ``resolve`` are no-ops when the incident is already there or past.
* ``annotate`` (cause, measures, prevention) works in every state, resolved included.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import literal_column, select
from sqlalchemy.orm import Session

from ppo_dr.errors import PermanentError
from ppo_dr.ids import check_id
from ppo_dr.store.base import StoreBase, to_record
from ppo_dr.store.checks import check_incident_id, check_json, check_run_id, check_text, utc
from ppo_dr.store.records import INCIDENT_STATES, Incident, TimelineEntry
from ppo_dr.store.schema import KEY_LEN, TARGET_LEN, IncidentRow, TimelineRow

_TEXT_LEN: Final = 100_000
_OPEN_ATTEMPTS: Final = 5
#: The predicate of the partial unique index: one unresolved incident per dedupe key.
_UNRESOLVED: Final = IncidentRow.state != literal_column(
    "'resolved'"
)  # literal: PG infers the index from it


#: What each act's time is called in an error about it.
_ACT_TIMES: Final = {"acknowledged": "acknowledgement time", "resolved": "resolution time"}


@dataclass(frozen=True)
class _Act:
    """A person's act on an incident, checked before the store is touched."""

    event: str
    who: str
    note: str
    run_id: str | None
    when: datetime

    @classmethod
    def checked(
        cls,
        event: str,
        by: str,
        note: str,
        flow_run_id: str | None,
        at: datetime | None,
        *,
        anonymous: bool,
    ) -> _Act:
        """Raise on bad input; *anonymous* allows an empty *by*."""
        return cls(
            event,
            check_text(by, f"{event} by", TARGET_LEN, empty_ok=anonymous),
            check_text(note, "note", _TEXT_LEN, empty_ok=True),
            check_run_id(flow_run_id),
            utc(at, _ACT_TIMES[event]),
        )


class IncidentsMixin(StoreBase):
    def open_incident(
        self,
        kind: str,
        dedupe_key: str,
        title: str,
        scope: Mapping[str, Any],
        *,
        severity: str = "major",
        paging: bool = True,
        flow_run_id: str | None = None,
        at: datetime | None = None,
    ) -> tuple[Incident, bool]:
        """Open an incident unless one with *dedupe_key* is still unresolved.

        Returns ``(incident, created)``. Race-safe across processes: a partial unique
        index allows one unresolved incident per key, and the loser of a race re-reads
        the winner's incident. Once resolved, the same key opens a new incident.
        """
        kind = check_id(kind, "incident kind")
        key = check_text(dedupe_key, "dedupe key", KEY_LEN)
        title = check_text(title, "title", _TEXT_LEN)
        scope_data = check_json(scope, "scope")
        severity = check_text(severity, "severity", 32)
        if not isinstance(paging, bool):
            raise PermanentError(f"paging must be a bool, got {paging!r}")
        run_id = check_run_id(flow_run_id)
        when = utc(at, "opening time")
        for _attempt in range(_OPEN_ATTEMPTS):
            with self._tx(write=True) as session:
                row, created = self._insert_or_find(
                    session,
                    IncidentRow,
                    {
                        "kind": kind,
                        "dedupe_key": key,
                        "state": "open",
                        "title": title,
                        "scope": scope_data,
                        "severity": severity,
                        "paging": paging,
                        "opened_at": when,
                        "flow_run_id": run_id,
                    },
                    ["dedupe_key"],
                    where=_UNRESOLVED,
                )
                if row is None:
                    continue  # the one we collided with was resolved meanwhile: try again
                if not created:
                    return to_record(Incident, row), False
                self._timeline_row(
                    session,
                    row.id,
                    "opened",
                    f"{kind} opened: {title}",
                    run_id,
                    when,
                    {
                        "dedupe_key": key,
                        "severity": severity,
                        "paging": paging,
                        "scope": scope_data,
                    },
                )
                return to_record(Incident, row), True
        raise PermanentError(  # pragma: no cover - needs a key opened and resolved in a loop
            f"could not open or find an incident for dedupe key {key!r} after "
            f"{_OPEN_ATTEMPTS} attempts; the key is being opened and resolved concurrently"
        )

    def incident(self, incident_id: int) -> Incident | None:
        """The incident with id *incident_id*, or None."""
        incident_id = check_incident_id(incident_id)
        with self._tx(write=False) as session:
            row = session.get(IncidentRow, incident_id)
            return None if row is None else to_record(Incident, row)

    def incidents(
        self, states: Iterable[str] | None = None, kind: str | None = None
    ) -> list[Incident]:
        """Incidents in any of *states* (default: all) and of *kind*, oldest first."""
        wanted: list[str] | None = None
        if states is not None:
            wanted = [states] if isinstance(states, str) else list(states)
            unknown = sorted(set(wanted) - set(INCIDENT_STATES))
            if unknown:
                raise PermanentError(f"unknown incident state(s) {unknown}: use {INCIDENT_STATES}")
        stmt = select(IncidentRow).order_by(IncidentRow.opened_at, IncidentRow.id)
        if wanted is not None:
            stmt = stmt.where(IncidentRow.state.in_(wanted))
        if kind is not None:
            stmt = stmt.where(IncidentRow.kind == check_id(kind, "incident kind"))
        return self._records(Incident, stmt)

    def acknowledge(
        self,
        incident_id: int,
        by: str,
        note: str = "",
        flow_run_id: str | None = None,
        *,
        at: datetime | None = None,
    ) -> Incident:
        """Record that *by* has taken the incident; paging for it stops escalating."""
        incident_id = check_incident_id(incident_id)
        act = _Act.checked("acknowledged", by, note, flow_run_id, at, anonymous=False)
        with self._tx(write=True) as session:
            row = self._locked(session, incident_id)
            if row.state == "resolved":
                raise PermanentError(
                    f"incident {row.id} is already resolved; it cannot be acknowledged"
                )
            if row.acknowledged_at is not None:
                return to_record(Incident, row)
            if row.state == "open":
                row.state = "acknowledged"
            row.acknowledged_at = act.when
            row.acknowledged_by = act.who
            return self._acted(session, row, act)

    def mark_recovered(
        self, incident_id: int, at: datetime | None = None, flow_run_id: str | None = None
    ) -> Incident:
        """Record that service is back (the probe sees the scope up again)."""
        incident_id = check_incident_id(incident_id)
        run_id = check_run_id(flow_run_id)
        when = utc(at, "recovery time")
        with self._tx(write=True) as session:
            row = self._locked(session, incident_id)
            if row.state in ("recovered", "resolved"):
                return to_record(Incident, row)
            row.state = "recovered"
            row.recovered_at = when
            self._timeline_row(session, row.id, "recovered", "service recovered", run_id, when, {})
            return to_record(Incident, row)

    def resolve(
        self,
        incident_id: int,
        by: str = "",
        note: str = "",
        flow_run_id: str | None = None,
        *,
        at: datetime | None = None,
    ) -> Incident:
        """Close the incident; resolving a resolved incident returns it unchanged."""
        incident_id = check_incident_id(incident_id)
        act = _Act.checked("resolved", by, note, flow_run_id, at, anonymous=True)
        with self._tx(write=True) as session:
            row = self._locked(session, incident_id)
            if row.state == "resolved":
                return to_record(Incident, row)
            row.state = "resolved"
            row.resolved_at = act.when
            row.resolved_by = act.who or None
            return self._acted(session, row, act)

    def _acted(self, session: Session, row: IncidentRow, act: _Act) -> Incident:
        """Put a person's act (acknowledged, resolved) on the timeline; the record."""
        message = f"{act.event} by {act.who}" if act.who else act.event
        self._timeline_row(
            session,
            row.id,
            act.event,
            _with_note(message, act.note),
            act.run_id,
            act.when,
            {"by": act.who, "note": act.note},
        )
        return to_record(Incident, row)

    def annotate(
        self,
        incident_id: int,
        cause: str | None = None,
        measures: str | None = None,
        prevention: str | None = None,
        *,
        flow_run_id: str | None = None,
        at: datetime | None = None,
    ) -> Incident:
        """Set the post-mortem fields given (None leaves a field as it is), in any state."""
        incident_id = check_incident_id(incident_id)
        given = {
            name: check_text(value, name, _TEXT_LEN, empty_ok=True)
            for name, value in (
                ("cause", cause),
                ("measures", measures),
                ("prevention", prevention),
            )
            if value is not None
        }
        run_id = check_run_id(flow_run_id)
        when = utc(at, "annotation time")
        with self._tx(write=True) as session:
            row = self._locked(session, incident_id)
            changed = {name: value for name, value in given.items() if getattr(row, name) != value}
            if not changed:
                return to_record(Incident, row)
            for name, value in changed.items():
                setattr(row, name, value)
            self._timeline_row(
                session,
                row.id,
                "annotated",
                f"annotated: {', '.join(changed)}",
                run_id,
                when,
                changed,
            )
            return to_record(Incident, row)

    # -- timeline ---------------------------------------------------------------------

    def add_timeline(
        self,
        incident_id: int,
        kind: str,
        message: str,
        *,
        flow_run_id: str | None = None,
        data: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> TimelineEntry:
        """Append an entry to an incident's timeline (e.g. ``first-failure``, ``notice-sent``)."""
        incident_id = check_incident_id(incident_id)
        kind = check_text(kind, "timeline kind", 64)
        message = check_text(message, "timeline message", _TEXT_LEN, empty_ok=True)
        payload = check_json(data, "timeline data")
        run_id = check_run_id(flow_run_id)
        when = utc(at, "timeline time")
        with self._tx(write=True) as session:
            row = self._get(session, incident_id)
            entry = self._timeline_row(session, row.id, kind, message, run_id, when, payload)
            return to_record(TimelineEntry, entry)

    def timeline(self, incident_id: int) -> list[TimelineEntry]:
        """An incident's timeline, in time order (ties in insertion order)."""
        incident_id = check_incident_id(incident_id)
        with self._tx(write=False) as session:
            self._get(session, incident_id)
            rows = session.scalars(
                select(TimelineRow)
                .where(TimelineRow.incident_id == incident_id)
                .order_by(TimelineRow.at, TimelineRow.id)
            )
            return [to_record(TimelineEntry, row) for row in rows]

    # -- helpers ----------------------------------------------------------------------

    @staticmethod
    def _get(session: Session, incident_id: int) -> IncidentRow:
        row = session.get(IncidentRow, check_incident_id(incident_id))
        if row is None:
            raise PermanentError(f"no incident with id {incident_id}")
        return row

    @staticmethod
    def _locked(session: Session, incident_id: int) -> IncidentRow:
        """The incident row, locked for this transaction (PostgreSQL: FOR UPDATE)."""
        return StoreBase._locked_row(
            session,
            IncidentRow,
            IncidentRow.id == check_incident_id(incident_id),
            missing=f"no incident with id {incident_id}",
        )

    @staticmethod
    def _timeline_row(
        session: Session,
        incident_id: int,
        kind: str,
        message: str,
        run_id: str | None,
        at: datetime,
        data: dict[str, Any],
    ) -> TimelineRow:
        return StoreBase._added(
            session,
            TimelineRow(
                incident_id=incident_id,
                at=at,
                kind=kind,
                message=message,
                flow_run_id=run_id,
                data=data,
            ),
        )


def _with_note(message: str, note: str) -> str:
    return f"{message}: {note}" if note else message
