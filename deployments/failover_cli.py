"""``ppo-dr failover run`` and ``ppo-dr failover approve``: start the failover deployment,
and answer a failover run that waits for approval.

Mounted on :data:`ppo_dr.failover.cli.failover_app` by :mod:`deployments.cli` (they need
the Prefect API, which the domain package never imports). ``run`` starts a run of the
served ``failover/failover`` deployment (``ppo-dr serve``) and returns at once; the run
then pauses for approval unless ``--approve`` is given or the policy says
``auto_failover``. ``approve`` resumes every paused failover run of a plan (tag
``plan:<id>``) with the typed input the UI form shows (:class:`flows.failover.Approval`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from deployments.prefect_api import api_url, approve_plan, use_api
from ppo_dr.cli_support import FleetOption, reports_errors
from ppo_dr.errors import PermanentError
from ppo_dr.failover.cli import _ids, failover_app

#: The deployment ``ppo-dr serve`` registers for the failover flow.
DEPLOYMENT = "failover/failover"
#: How long ``approve`` waits for a run that has not paused yet (it is still planning).
PAUSE_WAIT_S = 10.0


def _require_api() -> str:
    url = api_url()
    if url is None:
        raise PermanentError(
            "no Prefect API known: set PREFECT_API_URL or start `ppo-dr serve` first"
        )
    return url


@failover_app.command("run")
@reports_errors
def failover_run(
    plan: Annotated[
        Path | None,
        typer.Option("--plan", "-p", help="Run this plan (from `failover plan -o`) as is."),
    ] = None,
    clients: Annotated[str | None, typer.Option("--clients", "-c", help="a,b,c")] = None,
    server: Annotated[str | None, typer.Option("--server", "-s")] = None,
    dc: Annotated[str | None, typer.Option("--dc")] = None,
    to_server: Annotated[str | None, typer.Option("--to-server")] = None,
    to_dc: Annotated[str | None, typer.Option("--to-dc")] = None,
    to_country: Annotated[str | None, typer.Option("--to-country")] = None,
    mode: Annotated[str, typer.Option("--mode", "-m", help="emergency or planned")] = "emergency",
    incident: Annotated[int | None, typer.Option("--incident", min=1)] = None,
    approve: Annotated[
        bool, typer.Option("--approve", help="Do not pause for approval: it is approved.")
    ] = False,
    fleet: FleetOption = None,
) -> None:
    """Start a failover run on the served deployment; print its name and id."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    from ppo_dr.failover.plan import MODES, Plan

    if mode not in MODES:
        raise PermanentError(f"--mode {mode!r} unknown: use one of {', '.join(MODES)}")
    parameters: dict[str, Any] = {"mode": mode, "approve": approve}
    if plan is not None:
        try:
            text = plan.read_text(encoding="utf-8")
        except OSError as exc:
            raise PermanentError(f"cannot read plan {plan}: {exc.strerror}") from None
        parameters["plan_json"] = Plan.from_json(text).to_json()  # refuse a bad one here
    else:
        named = [v for v in (clients, server, dc) if v]
        if len(named) != 1:
            raise PermanentError("name exactly one scope (--clients, --server, --dc) or --plan")
        parameters.update(
            clients=list(_ids(clients, "--clients")) or None,
            server=server,
            dc=dc,
            to_server=to_server,
            to_dc=to_dc,
            to_country=to_country,
        )
    if incident is not None:
        parameters["incident_id"] = incident
    if fleet is not None:
        parameters["fleet_file"] = str(fleet)
    with use_api(_require_api()):
        run = run_deployment(DEPLOYMENT, parameters=parameters, timeout=0)
    assert isinstance(run, FlowRun)  # the sync form, not a coroutine
    typer.echo(f"failover run {run.name} started (id {run.id})")
    if not approve:
        typer.echo("it pauses for approval: `ppo-dr failover approve PLAN_ID --by NAME`")


@failover_app.command("approve")
@reports_errors
def failover_approve(
    plan_id: Annotated[str, typer.Argument(help="The plan id the paused run shows.")],
    by: Annotated[str, typer.Option("--by", help="Who approves.")],
    note: Annotated[str, typer.Option("--note", help="Why, or anything to add.")] = "",
    refuse: Annotated[
        bool, typer.Option("--refuse", help="Refuse the plan instead: the run does nothing.")
    ] = False,
) -> None:
    """Approve (or --refuse) the plan a failover run is waiting on; it resumes at once."""
    from ppo_dr.store.failovers import check_plan_id

    check_plan_id(plan_id)
    with use_api(_require_api()):
        answer = {"approve": not refuse, "by": by, "note": note}
        outcomes = approve_plan(plan_id, answer, wait_s=PAUSE_WAIT_S)
    for name, outcome in outcomes:
        typer.echo(f"failover run {name}: {'refused' if refuse else 'approved'}, resume {outcome}")
