"""``ppo-dr server ...``: hardware upgrades: drain a server, return it, list drained ones.

``drain`` plans moving every client off the server (residency and capacity honoured),
prints the plan, and refuses with the reason, before anything moves, a drain that
would strand a client; then it starts the served ``drain/drain`` deployment with that
plan, which pauses for approval, opens a maintenance window on the server, marks it
drained (no plan targets it) and migrates the clients. ``return`` clears the mark,
ends the window and offers the rebalance plan that fills the server again.

Exit codes: 0 done; 2 refused or wrong request (one line, or the reason per client).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.rebalance import TargetUtil, start_run
from cli.support import (
    ApproveOption,
    FleetOption,
    command_group,
    fail,
    id_list,
    open_store,
    reports_errors,
    write_plan,
)
from ppo_dr.errors import PermanentError

server_app = command_group("Hardware upgrades: drain a server (its clients move off), return it.")

#: The deployment ``ppo-dr serve`` registers for the drain flow.
DEPLOYMENT = "drain/drain"


@server_app.command("drain")
@reports_errors
def server_drain(
    server: Annotated[str, typer.Argument(help="The app server to empty.")],
    to: Annotated[
        str | None, typer.Option("--to", help="Only to this data centre or server.")
    ] = None,
    by: Annotated[str, typer.Option("--by", help="Who drains it.")] = "operator",
    reason: Annotated[str, typer.Option("--reason", help="Why.")] = "hardware upgrade",
    approve: ApproveOption = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan only; start nothing.")
    ] = False,
    fleet: FleetOption = None,
    down: Annotated[
        str | None, typer.Option("--down", help="Servers to treat as unreachable: s1,s2.")
    ] = None,
) -> None:
    """Move every client off SERVER by planned migrations and keep it drained."""
    from ppo_dr.failover.rebalance import plan_drain
    from ppo_dr.failover.rebalance_facts import rebalance_inputs
    from ppo_dr.ids import check_id

    state, closures = rebalance_inputs(fleet, id_list(down, "--down"), datetime.now(UTC))
    to_dc = to_server = None
    if to is not None:
        to = check_id(to, "--to")
        if any(dc.id == to for dc in state.fleet.data_centres):
            to_dc = to
        elif any(s.id == to for s in state.fleet.servers):
            to_server = to
        else:
            raise PermanentError(f"--to {to!r} is neither a data centre nor a server of the fleet")
    result = plan_drain(state, server, to_dc=to_dc, to_server=to_server, closures=closures)
    typer.echo(result.render())
    if dry_run:
        return
    parameters: dict[str, Any] = {
        "server": server,
        "to_dc": to_dc,
        "to_server": to_server,
        "by": by,
        "reason": reason,
        "plan_json": result.plan.to_json() if result.plan else None,
        "approve": approve,
    }
    if fleet is not None:
        parameters["fleet_file"] = str(fleet)
    start_run(DEPLOYMENT, parameters, "drain")


@server_app.command("return")
@reports_errors
def server_return(
    server: Annotated[str, typer.Argument(help="The drained server, upgraded.")],
    target_util: TargetUtil = 0.8,
    fleet: FleetOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the rebalance plan here.")
    ] = None,
) -> None:
    """End SERVER's drain and maintenance; print the rebalance plan that fills it again."""
    from ppo_dr.failover.plan_checks import known_server
    from ppo_dr.failover.rebalance import plan_rebalance
    from ppo_dr.failover.rebalance_facts import rebalance_inputs

    state, _ = rebalance_inputs(fleet, (), datetime.now(UTC))
    sid = known_server(state.fleet, server, "server")
    with open_store(fleet) as store:
        mark = store.clear_drained(sid)
        if mark is None:
            raise fail(f"error: server {sid} is not drained: nothing to return")
        if mark.maintenance_id is not None:
            store.end_maintenance(mark.maintenance_id)
    since = f"{mark.drained_at:%Y-%m-%d %H:%M} UTC"
    ended = f"; maintenance window {mark.maintenance_id} ended" if mark.maintenance_id else ""
    typer.echo(
        f"server {sid} returned: it takes clients again (drained {since} by "
        f"{mark.drained_by}{ended})"
    )
    state, closures = rebalance_inputs(fleet, (), datetime.now(UTC))
    result = plan_rebalance(state, target_util=target_util, closures=closures)
    typer.echo("\n" + result.render())
    if result.plan is not None and output is not None:
        write_plan(result.plan, output)
        typer.echo(f"\nplan written to {output}: `ppo-dr rebalance run --plan {output}`")


@server_app.command("ls")
@reports_errors
def server_ls(fleet: FleetOption = None) -> None:
    """List drained servers: when, by whom, why."""
    with open_store(fleet) as store:
        drained = store.drained_servers()
    if not drained:
        typer.echo("no server is drained")
    for d in drained:
        typer.echo(f"{d.server_id}  drained {d.drained_at:%Y-%m-%d %H:%M} UTC by {d.drained_by}"
                   f": {d.reason or '-'}")  # fmt: skip
