"""``ppo-dr rebalance ...``: load distribution as approved planned migrations.

``plan`` reads the fleet file, the placements, the snapshot catalogue, the drained
marks and the maintenance windows, runs the pure planner and prints, per app server,
clients and disk now and after, what stays over target and why, then the plan in the
failover plan format; ``-o`` writes it as JSON (the same approval and content-hashed
id as a failover plan). ``run`` starts the served ``rebalance/rebalance`` deployment
(``ppo-dr serve``), which plans (or takes ``--plan``), pauses for approval (``ppo-dr
failover approve PLAN_ID``) and migrates; it says so when a failover is running, since
one acts at a time.

Exit codes: 0 every app server ends under target; 2 some server stays over target
(printed with the reason; the plan is still written), or the request is wrong.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from cli import support
from cli.support import ApproveOption, FleetOption, command_group, reports_errors
from ppo_dr.errors import PermanentError

rebalance_app = command_group(
    "Load distribution: plan, approve and run the planned migrations that bring "
    "every app server under a target utilisation."
)

#: The deployment ``ppo-dr serve`` registers for the rebalance flow.
DEPLOYMENT = "rebalance/rebalance"

TargetUtil = Annotated[
    float,
    typer.Option("--target-util", help="Share of each capacity (clients, disk) to stay under."),
]
MaxMoves = Annotated[
    int | None, typer.Option("--max-moves", help="At most this many clients move.")
]
OnlyDc = Annotated[
    str | None, typer.Option("--dc", help="Only balance this data centre's app servers.")
]


@rebalance_app.command("plan")
@reports_errors
def rebalance_plan(
    target_util: TargetUtil = 0.8,
    max_moves: MaxMoves = None,
    dc: OnlyDc = None,
    fleet: FleetOption = None,
    down: Annotated[
        str | None, typer.Option("--down", help="Servers to treat as unreachable: s1,s2.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the plan as JSON here.")
    ] = None,
) -> None:
    """Plan the migrations that bring every app server under target; nothing changes."""
    from ppo_dr.failover.rebalance import plan_rebalance
    from ppo_dr.failover.rebalance_facts import rebalance_inputs

    state, closures = rebalance_inputs(fleet, support.id_list(down, "--down"), datetime.now(UTC))
    result = plan_rebalance(
        state, target_util=target_util, max_moves=max_moves, dc=dc, closures=closures
    )
    typer.echo(result.render())
    if output is not None and result.plan is not None:
        support.write_plan(result.plan, output)
        typer.echo(f"\nplan written to {output}")
    elif output is not None:
        typer.echo(f"\nnothing to move: no plan written to {output}")
    if result.overloads:
        raise support.fail(f"target not reachable for {len(result.overloads)} server capacity(ies)")


def say_running_failovers(what: str) -> None:
    """Print the failover runs acting now: *what* waits for them (one at a time)."""
    from prefect import get_client
    from prefect.client.schemas import filters
    from prefect.client.schemas.objects import StateType

    running = filters.FlowRunFilterState(
        type=filters.FlowRunFilterStateType(any_=[StateType.RUNNING])
    )
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=filters.FlowFilter(name=filters.FlowFilterName(any_=["failover"])),
            flow_run_filter=filters.FlowRunFilter(state=running),
        )
    for run in runs:
        typer.echo(f"failover run {run.name} is running: {what} waits for it (one at a time)")


def start_run(deployment: str, parameters: dict[str, Any], what: str) -> None:
    """Start a run of *deployment*; say which failover it waits for and how to approve."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    from deployments.prefect_api import use_api

    with use_api(support.require_api()):
        say_running_failovers(f"this {what}")
        run = run_deployment(deployment, parameters=parameters, timeout=0)
    assert isinstance(run, FlowRun)  # the sync form, not a coroutine
    typer.echo(f"{what} run {run.name} started (id {run.id})")
    if not parameters.get("approve"):
        typer.echo("it pauses for approval: `ppo-dr failover approve PLAN_ID --by NAME`")


@rebalance_app.command("run")
@reports_errors
def rebalance_run(
    plan: Annotated[
        Path | None,
        typer.Option("--plan", "-p", help="Run this plan (from `rebalance plan -o`) as is."),
    ] = None,
    target_util: TargetUtil = 0.8,
    max_moves: MaxMoves = None,
    dc: OnlyDc = None,
    approve: ApproveOption = False,
    fleet: FleetOption = None,
) -> None:
    """Start a rebalance run on the served deployment; print its name and id."""
    from ppo_dr.failover.plan_json import Plan

    parameters: dict[str, Any] = {"approve": approve}
    if plan is not None:
        try:
            text = plan.read_text(encoding="utf-8")
        except OSError as exc:
            raise PermanentError(f"cannot read plan {plan}: {exc.strerror}") from None
        loaded = Plan.from_json(text)  # a plan edited after it was made is refused here
        if loaded.mode != "planned":
            raise PermanentError(f"plan {loaded.plan_id} is an emergency failover plan")
        parameters["plan_json"] = loaded.to_json()
    else:
        parameters.update(target_util=target_util, max_moves=max_moves, dc=dc)
    if fleet is not None:
        parameters["fleet_file"] = str(fleet)
    start_run(DEPLOYMENT, parameters, "rebalance")
    if approve:
        return
    if plan is None:
        typer.echo("its plan is the artifact rebalance-plan-<PLAN_ID> (or `rebalance plan`)")
