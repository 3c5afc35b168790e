"""The drain runbook: empty a server for a hardware upgrade, by planned migrations.

**drain(server, to_dc=None, to_server=None, by, reason, plan_json=None, approve=False)**,
from the ``drain`` deployment (the UI, with typed parameters) or ``ppo-dr server drain``:

1. plan (:func:`ppo_dr.failover.rebalance.plan_drain`): every client of the server to
   another app server (of ``to_dc``, or ``to_server``, which may be a spare), honouring
   residency and capacity, fewest bytes crossing DCs and countries. A client that
   could go nowhere (the last server a ZA-only client may live on) refuses the drain
   **before anything moves**: the run fails with the reason;
2. pause for approval (as every failover) unless ``approve``;
3. open a maintenance window on the server (the probe records, nobody is paged) and
   mark it **drained** in the store: no rebalance or drain plans a client onto it;
4. move the clients: the failover runbook's planned migrations, as a subflow.

The server stays drained and under maintenance until ``ppo-dr server return``. A drain
whose migrations fail lifts both at once and fails: clients still on the server must be
probed and paged for, and the drain is simply run again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import Failed, State

from flows.rebalance import approval, migrate_plan
from ppo_dr import config
from ppo_dr.errors import PermanentError
from ppo_dr.failover.plan_checks import checked_plan
from ppo_dr.failover.plan_json import Plan
from ppo_dr.mirror.runbook import store_url
from tasks.failover import observe_reachability, open_maintenance
from tasks.inventory import load_fleet_task
from tasks.rebalance import lift_drain, make_drain_plan, mark_drained


@flow(name="drain", flow_run_name="drain-{server}", timeout_seconds=6 * 3600)
def drain(
    server: str,
    to_dc: str | None = None,
    to_server: str | None = None,
    by: str = "operator",
    reason: str = "hardware upgrade",
    plan_json: str | None = None,
    approve: bool = False,
    fleet_file: Path | None = None,
) -> dict[str, Any] | State[Any]:
    """Move every client off *server* and keep it drained, under maintenance, until returned.

    Args:
        server: the app server to empty.
        to_dc: only to app servers of this data centre (or to_server; none = any).
        to_server: only to this server (an app server, or a spare that serves HTTP).
        by: who drains it (on the drained mark).
        reason: why (on the drained mark and the maintenance window).
        plan_json: the approved drain plan (``ppo-dr server drain`` passes the one it showed).
        approve: run without pausing for approval.
        fleet_file: the fleet file; default ``$PPO_DR_FLEET`` or the lab's.
    """
    path = Path(fleet_file or config.fleet_file())
    fleet = load_fleet_task(path)
    if plan_json:
        plan: Plan | None = checked_plan(fleet, Plan.from_json(plan_json))
        if plan is not None and plan.scope.server != server:
            raise PermanentError(
                f"plan {plan.plan_id} drains {plan.scope.describe()}, not {server}"
            )
    else:
        down = observe_reachability(fleet)
        result = make_drain_plan(path, sorted(down), server, to_dc, to_server)
        create_markdown_artifact(
            key=f"drain-plan-{result.plan.plan_id if result.plan else server}",
            markdown=f"# Drain of {server}\n\n```\n{result.render()}\n```\n",
            description=f"Drain of {server}: per server before and after, the moves",
        )
        plan = result.plan
    refused = None if plan is None else approval(plan, approve, "drain")
    if refused is not None:
        return refused
    url = store_url(fleet)
    window = open_maintenance(url, "server", server, f"drained: {reason}")
    mark_drained(url, server, by, reason, window, str(flow_run.id) if flow_run.id else None)
    if plan is None:
        return {"server": server, "drained": True, "moved": {}}
    moved = migrate_plan(plan, path)
    if isinstance(moved, State):  # failed: some clients may still live on the server
        lift_drain(url, server, window)
        return Failed(
            message=f"drain of {server} failed: {moved.message}; it is no longer drained "
            "nor under maintenance (clients still on it are paged for): run the drain again"
        )
    return moved
