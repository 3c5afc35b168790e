"""``ppo-dr failover ...``: plan a failover or planned migration, start it, approve it.

``plan`` reads the fleet file, the placements and the snapshot catalogue from the state
store, runs the pure planner and prints the plan; ``-o`` writes it as JSON, which is
what gets approved and run. ``run`` starts a run of the served ``failover/failover``
deployment (``ppo-dr serve``) and returns at once; the run then pauses for approval
unless ``--approve`` is given or the policy says ``auto_failover``. ``approve`` resumes
every paused failover run of a plan (tag ``plan:<id>``) with the typed input the UI
form shows (:class:`flows.failover.Approval`). Only ``run`` and ``approve`` need the
Prefect API, and import Prefect only when they run.

Exit codes: 0 a plan that moves every client of the scope; 2 the plan refuses some
client (printed, with the reason to escalate), or the request is wrong (one line).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.support import (
    ApproveOption,
    FleetOption,
    command_group,
    fail,
    id_list,
    reports_errors,
    require_api,
    takes_options,
    write_plan,
)
from ppo_dr.errors import PermanentError

if TYPE_CHECKING:
    from ppo_dr.failover.plan import Mode

failover_app = command_group("Failover and planned migration: plan (then approve and run).")

#: The deployment ``ppo-dr serve`` registers for the failover flow.
DEPLOYMENT = "failover/failover"
#: How long ``approve`` waits for a run that has not paused yet (it is still planning).
PAUSE_WAIT_S = 10.0

# The scope, target and mode options, the same for ``plan`` and ``run``.
ClientsOption = Annotated[
    str | None, typer.Option("--clients", "-c", help="Clients to move: a,b,c.")
]
ServerOption = Annotated[
    str | None, typer.Option("--server", "-s", help="Move every client on this server.")
]
DcOption = Annotated[
    str | None, typer.Option("--dc", help="Move every client in this data centre.")
]
ToServerOption = Annotated[str | None, typer.Option("--to-server", help="Only to this server.")]
ToDcOption = Annotated[
    str | None, typer.Option("--to-dc", help="Only to servers in this data centre.")
]
ToCountryOption = Annotated[
    str | None, typer.Option("--to-country", help="Only to this country (e.g. GB).")
]
ModeOption = Annotated[
    str,
    typer.Option(
        "--mode",
        "-m",
        help="emergency: restore from mirrors; planned: freeze, final sync, no loss.",
    ),
]


@dataclass(frozen=True)
class MoveRequest:
    """What ``plan`` and ``run`` are asked to move, where to and how, as typed."""

    clients: ClientsOption = None
    server: ServerOption = None
    dc: DcOption = None
    to_server: ToServerOption = None
    to_dc: ToDcOption = None
    to_country: ToCountryOption = None
    mode: ModeOption = "emergency"


@failover_app.command("plan")
@reports_errors
@takes_options(MoveRequest, "request")
def failover_plan(
    request: MoveRequest,
    fleet: FleetOption = None,
    down: Annotated[
        str | None,
        typer.Option("--down", help="Servers to treat as lost or unreachable: s1,s2."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the plan as JSON here (for approval)."),
    ] = None,
) -> None:
    """Plan moving a scope of clients; print it; exit 2 if any client is refused.

    Name exactly one scope (--clients, --server or --dc) and at most one target
    (--to-server, --to-dc or --to-country; none = automatic). Nothing is changed.
    """
    from ppo_dr.failover.fleet_state import fleet_state
    from ppo_dr.failover.plan import MODES, PlanError, Scope, Target, plan_failover

    r = request
    if r.mode not in MODES:
        raise PlanError(f"--mode {r.mode!r} unknown: use one of {', '.join(MODES)}")
    scopes = (("--clients", r.clients), ("--server", r.server), ("--dc", r.dc))
    named = [o for o, v in scopes if v]
    if len(named) != 1:
        raise PlanError(
            "name exactly one scope: --clients, --server or --dc"
            + (f" (got {', '.join(named)})" if named else "")
        )
    scope = Scope(clients=id_list(r.clients, "--clients"), server=r.server, dc=r.dc)
    target = Target(server=r.to_server, dc=r.to_dc, country=r.to_country)
    state = fleet_state(fleet, id_list(down, "--down"), datetime.now(UTC))
    plan = plan_failover(state, scope, target, _mode(r.mode))
    typer.echo(plan.render())
    if output is not None:
        write_plan(plan, output)
        typer.echo(f"\nplan written to {output}")
    if plan.refusals:
        raise fail(
            f"{len(plan.refusals)} client(s) refused: see above; escalate or change the target"
        )


@failover_app.command("run")
@reports_errors
@takes_options(MoveRequest, "request")
def failover_run(
    plan: Annotated[
        Path | None,
        typer.Option("--plan", "-p", help="Run this plan (from `failover plan -o`) as is."),
    ] = None,
    request: MoveRequest = MoveRequest(),
    incident: Annotated[int | None, typer.Option("--incident", min=1)] = None,
    approve: ApproveOption = False,
    fleet: FleetOption = None,
) -> None:
    """Start a failover run on the served deployment; print its name and id."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    from deployments.prefect_api import use_api
    from ppo_dr.failover.plan import MODES, Plan
    from ppo_dr.failover.runs import failover_run_name

    r = request
    if r.mode not in MODES:
        raise PermanentError(f"--mode {r.mode!r} unknown: use one of {', '.join(MODES)}")
    parameters: dict[str, Any] = {"mode": r.mode, "approve": approve}
    if plan is not None:
        try:
            text = plan.read_text(encoding="utf-8")
        except OSError as exc:
            raise PermanentError(f"cannot read plan {plan}: {exc.strerror}") from None
        parameters["plan_json"] = Plan.from_json(text).to_json()  # refuse a bad one here
    else:
        if len([v for v in (r.clients, r.server, r.dc) if v]) != 1:
            raise PermanentError("name exactly one scope (--clients, --server, --dc) or --plan")
        # The flow's parameters are named as the options (mode is set above, the same).
        parameters.update(asdict(r), clients=list(id_list(r.clients, "--clients")) or None)

    if incident is not None:
        parameters["incident_id"] = incident
    if fleet is not None:
        parameters["fleet_file"] = str(fleet)
    with use_api(require_api()):
        run = run_deployment(DEPLOYMENT, parameters=parameters, timeout=0)
    assert isinstance(run, FlowRun)  # the sync form, not a coroutine
    # The run is created with a random name and renamed when it starts; print the name
    # it will have (the one the pages quote), from the same parameters and id.
    name = failover_run_name(parameters, str(run.id), planned=False)
    typer.echo(f"failover run {name} started (id {run.id})")
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
    from deployments.prefect_api import approve_plan, use_api
    from ppo_dr.store.failovers import check_plan_id

    check_plan_id(plan_id)
    with use_api(require_api()):
        answer = {"approve": not refuse, "by": by, "note": note}
        # Says which state the plan's run ended in when none is waiting any more.
        outcomes = approve_plan(plan_id, answer, wait_s=PAUSE_WAIT_S)
    for name, outcome in outcomes:
        typer.echo(f"failover run {name}: {'refused' if refuse else 'approved'}, resume {outcome}")


def _mode(value: str) -> Mode:
    return "planned" if value == "planned" else "emergency"
