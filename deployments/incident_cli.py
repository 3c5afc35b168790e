"""``ppo-dr incident ack``: record an acknowledgement and resume the paused escalation run.

Mounted on :data:`ppo_dr.incident_cli.incident_app` by :mod:`deployments.cli` (it needs
the Prefect API, which the domain package never imports). The ack is written to the
store first, so it counts even when Prefect cannot be reached: the escalation run reads
the store at its next wake-up (at most ``flows.escalation.RECHECK_S``). Then every
paused run tagged ``incident:<id>`` is resumed with the typed input
(:class:`flows.escalation.Ack`), so paging stops at once.

The API is the one ``PREFECT_API_URL`` names, else the one ``ppo-dr serve`` wrote to
``<home>/prefect/serve.json`` while serving.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from ppo_dr import config
from ppo_dr.cli_support import FleetOption, reports_errors
from ppo_dr.incident_cli import IdArgument, incident_app, open_store

#: How long to wait for a run that is between two pauses to pause again.
PAUSE_WAIT_S = 6.0


def api_url() -> str | None:
    """``PREFECT_API_URL``, else the API ``ppo-dr serve`` is serving on, else None."""
    named = os.environ.get("PREFECT_API_URL")
    if named:
        return named
    state = config.home() / "prefect" / "serve.json"
    try:
        data = json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    url = data.get("api_url") if isinstance(data, dict) else None
    return str(url) if url else None


@contextlib.contextmanager
def _api(url: str | None) -> Iterator[None]:
    if url is None or os.environ.get("PREFECT_API_URL"):
        yield
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield


def resume_escalation(incident_id: int, run_input: dict[str, Any]) -> list[tuple[str, str]]:
    """Resume every paused escalation run of the incident with *run_input*.

    Returns ``(run name, outcome)`` pairs; a run between two pauses is waited for
    up to :data:`PAUSE_WAIT_S`. No run found: an empty list.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    wanted = FlowRunFilter(
        tags=FlowRunFilterTags(all_=[f"incident:{incident_id}"]),
        state=FlowRunFilterState(
            type=FlowRunFilterStateType(any_=[StateType.PAUSED, StateType.RUNNING])
        ),
    )
    outcomes: list[tuple[str, str]] = []
    deadline = time.monotonic() + PAUSE_WAIT_S
    done: set[str] = set()
    with get_client(sync_client=True) as client:
        while True:
            runs = [
                r for r in client.read_flow_runs(flow_run_filter=wanted) if str(r.id) not in done
            ]
            paused = [r for r in runs if r.state is not None and r.state.is_paused()]
            for run in paused:
                result = client.resume_flow_run(run.id, run_input=run_input)
                reason = getattr(result.details, "reason", None)
                status = result.status.value.lower()
                outcomes.append((run.name, f"{status}: {reason}" if reason else status))
                done.add(str(run.id))
            waiting = [r for r in runs if r not in paused]
            if not waiting or time.monotonic() > deadline:
                return outcomes
            time.sleep(0.5)


@incident_app.command("ack")
@reports_errors
def incident_ack(
    incident_id: IdArgument,
    by: Annotated[str, typer.Option("--by", help="Who takes the incident.")],
    note: Annotated[str, typer.Option("--note", help="What you are doing about it.")] = "",
    fleet: FleetOption = None,
) -> None:
    """Acknowledge: record it, and resume the paused escalation run (paging stops)."""
    from tasks.escalation import record_ack

    with open_store(fleet) as store:
        recorded = record_ack(store, incident_id, by, note, since=datetime.now(UTC))
    typer.echo(f"incident {incident_id} acknowledged by {by}" + ("" if recorded else " (already)"))
    url = api_url()
    if url is None:
        typer.echo("no Prefect API known: the escalation run will see the ack at its next wake-up")
        return
    try:
        with _api(url):
            outcomes = resume_escalation(incident_id, {"by": by, "note": note})
    except Exception as exc:  # the ack is recorded; the run will see it anyway
        typer.echo(
            f"could not reach the Prefect API ({type(exc).__name__}); the escalation run "
            "will see the ack at its next wake-up"
        )
        return
    if not outcomes:
        typer.echo("no paused escalation run: it will see the ack at its next wake-up")
    for name, outcome in outcomes:
        typer.echo(f"escalation run {name}: resume {outcome}")
