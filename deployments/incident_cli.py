"""``ppo-dr incident ack``: record an acknowledgement and resume the paused escalation run.

Mounted on :data:`ppo_dr.incident_cli.incident_app` by :mod:`deployments.cli` (it needs
the Prefect API, which the domain package never imports). The ack is written to the
store first, so it counts even when Prefect cannot be reached: the escalation run reads
the store at its next wake-up (at most ``flows.escalation.RECHECK_S``). Then every
paused run tagged ``incident:<id>`` is resumed with the typed input
(:class:`flows.escalation.Ack`), so paging stops at once.

The API is found as :func:`deployments.prefect_api.api_url` says.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from deployments.prefect_api import api_url, resume_paused, use_api
from ppo_dr.cli_support import FleetOption, reports_errors
from ppo_dr.incident_cli import IdArgument, incident_app, open_store

#: How long to wait for a run that is between two pauses to pause again.
PAUSE_WAIT_S = 6.0


def resume_escalation(incident_id: int, run_input: dict[str, Any]) -> list[tuple[str, str]]:
    """Resume every paused escalation run of the incident with *run_input*.

    Returns ``(run name, outcome)`` pairs; a run between two pauses is waited for
    up to :data:`PAUSE_WAIT_S`. No run found: an empty list.
    """
    return resume_paused(f"incident:{incident_id}", run_input, wait_s=PAUSE_WAIT_S, every_run=True)


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
        with use_api(url):
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
