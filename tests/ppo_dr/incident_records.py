"""Store ``Incident`` records for pure tests: a resolved outage, or one still open."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ppo_dr.store import Incident

T0 = datetime(2026, 11, 30, 7, 31, 12, tzinfo=UTC)


def incident(**changes: object) -> Incident:
    """Incident 7, resolved after a PSU failure; *changes* override any field."""
    fields: dict[str, object] = {
        "id": 7,
        "kind": "outage",
        "dedupe_key": "server/app-jhb1-1",
        "state": "resolved",
        "title": "app server app-jhb1-1 down (2 clients)",
        "scope": {"server": "app-jhb1-1", "dc": "jhb1", "clients": ["acme", "karoo"]},
        "severity": "major",
        "paging": True,
        "opened_at": T0,
        "acknowledged_at": T0 + timedelta(seconds=95),
        "acknowledged_by": "anna",
        "recovered_at": T0 + timedelta(seconds=600),
        "resolved_at": T0 + timedelta(seconds=900),
        "resolved_by": "anna",
        "cause": "PSU failed",
        "measures": "moved the clients to the spare",
        "prevention": "dual PSUs",
        "flow_run_id": None,
    }
    fields.update(changes)
    return Incident(**fields)  # type: ignore[arg-type]


def open_incident(**changes: object) -> Incident:
    """The same incident still open: not recovered, resolved nor explained yet."""
    blanks: dict[str, object] = dict.fromkeys(
        ("recovered_at", "resolved_at", "resolved_by", "cause", "measures", "prevention")
    )
    return incident(**{"state": "open", **blanks, **changes})
