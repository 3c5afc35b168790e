"""Naming and starting flow runs: one unique name per run, quoted the same everywhere.

- :func:`run_stamp` -- the part of a run's name that makes it unique: its scheduled
  start to the second and the first 8 characters of its id, so two runs in the same
  hour (or second) never share a name, and the name says when it ran.
- :func:`escalation_run_name` -- the one name of an incident's escalation run, given
  when the run is created and kept by the flow (the probe's log, the UI and the
  escalation's own log all say the same).
- :func:`top_level_run` -- ``run_deployment`` options for a runbook started by another
  runbook (the probe starts the escalation, the escalation the failover): a top-level
  run of its own, not a subflow ("Hide subflows" in the UI must not hide it), created
  once per idempotency key, without waiting for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from prefect.runtime import flow_run


def run_stamp() -> str:
    """``2026-11-30T060000Z-1a2b3c4d``: this run's scheduled start (UTC) and short id."""
    start = flow_run.scheduled_start_time or datetime.now(UTC)
    short_id = str(flow_run.id or "")[:8]
    return start.astimezone(UTC).strftime("%Y-%m-%dT%H%M%SZ") + (f"-{short_id}" if short_id else "")


def escalation_run_name(incident_id: int) -> str:
    """``escalation-incident-<id>``: unique, since an incident has one escalation run."""
    return f"escalation-incident-{incident_id}"


def top_level_run(key: str, tags: Iterable[str], name: str | None = None) -> dict[str, Any]:
    """Keyword arguments of ``run_deployment`` for a top-level run started once per *key*."""
    options: dict[str, Any] = {
        "timeout": 0,
        "idempotency_key": key,
        "tags": list(tags),
        "as_subflow": False,
    }
    if name is not None:
        options["flow_run_name"] = name
    return options
