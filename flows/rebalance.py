"""The rebalance runbook: load distribution as approved planned migrations.

**rebalance(target_util=0.8, max_moves=None, dc=None, plan_json=None, approve=False)**,
weekly from the ``rebalance`` deployment or by hand (``ppo-dr rebalance run``):

1. see which servers answer SSH (the others keep their clients and take none);
2. plan (:func:`ppo_dr.failover.rebalance.plan_rebalance`: the fewest bytes moved that
   bring every app server under target; drained servers and servers under
   maintenance take no client), or take the approved ``plan_json``; the plan and the
   per-server table are the artifact ``rebalance-plan-<id>``; servers that stay over
   target are named with the reason;
3. **pause for approval** (the failover's :class:`~flows.failover.Approval`, so
   ``ppo-dr failover approve PLAN_ID`` and the UI's Resume form answer it) unless
   ``approve``: nothing moves without it;
4. run the plan as planned migrations: the failover runbook as a subflow, with the
   approved plan. It takes the one failover slot (a rebalance started while a failover
   runs waits for it, and the log says so), freezes, final-syncs and moves at most
   two clients at a time per target server, rolls back a client that fails and
   reports per client, as every failover does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

from flows.failover import failover, wait_for_approval
from ppo_dr import config
from ppo_dr.failover.plan_checks import checked_plan
from ppo_dr.failover.plan_json import Plan
from ppo_dr.ids import is_valid_id
from tasks import label_flow_run
from tasks.failover import observe_reachability
from tasks.inventory import load_fleet_task
from tasks.rebalance import make_rebalance_plan


def approval(plan: Plan, approve: bool, kind: str) -> State[Any] | None:
    """Tag the run with the plan and wait for approval unless given; a refusal's state."""
    log = get_run_logger()
    label_flow_run(tags=[f"plan:{plan.plan_id}", "mode:planned"])
    if approve:
        return None
    log.info("%s plan %s waits for approval (UI or `ppo-dr failover approve`)",
             kind, plan.plan_id)  # fmt: skip
    answer = wait_for_approval(plan)
    if not answer.approve:
        return Completed(message=f"plan {plan.plan_id} refused by {answer.by}: nothing done")
    log.info("plan %s approved by %s", plan.plan_id, answer.by)
    return None


def migrate_plan(plan: Plan, fleet_file: Path) -> dict[str, Any] | State[Any]:
    """Carry out an approved plan: the failover runbook's planned migrations (subflow)."""
    get_run_logger().info(
        "plan %s: the planned migrations wait for any failover that is running (one at a "
        "time), then move at most two clients at a time per target server",
        plan.plan_id,
    )
    state = failover(
        plan_json=plan.to_json(),
        approve=True,
        fleet_file=fleet_file,
        return_state=True,
    )
    assert isinstance(state, State)
    # Completed: the failover's summary is this run's result; otherwise its state (Failed
    # with the per-client message) is this run's state.
    if state.is_completed():
        summary = state.result()
        assert isinstance(summary, dict)
        return summary
    return state


def _run_name() -> str:
    """``rebalance-<dc or fleet>-<short run id>``: what it balances, unique per run."""
    dc = flow_run.parameters.get("dc")
    where = dc if is_valid_id(dc) else "fleet"
    return f"rebalance-{where}-{str(flow_run.id or '')[:8] or 'local'}"


@flow(name="rebalance", flow_run_name=_run_name, timeout_seconds=6 * 3600)
def rebalance(
    target_util: float = 0.8,
    max_moves: int | None = None,
    dc: str | None = None,
    plan_json: str | None = None,
    approve: bool = False,
    fleet_file: Path | None = None,
) -> dict[str, Any] | State[Any]:
    """Bring every app server under target_util of each capacity, moving the fewest bytes.

    Args:
        target_util: the share of each capacity (clients, disk_gb) to stay under, 0-1.
        max_moves: at most this many clients move (none: as many as needed).
        dc: only balance the app servers of this data centre (clients stay in it).
        plan_json: an approved plan (``ppo-dr rebalance plan -o``) to carry out as is.
        approve: run without pausing for approval (the plan is already approved).
        fleet_file: the fleet file; default ``$PPO_DR_FLEET`` or the lab's.
    """
    path = Path(fleet_file or config.fleet_file())
    fleet = load_fleet_task(path)
    if plan_json:
        plan = checked_plan(fleet, Plan.from_json(plan_json))
    else:
        down = observe_reachability(fleet)
        result = make_rebalance_plan(path, sorted(down), target_util, max_moves, dc)
        key = result.plan.plan_id if result.plan else str(flow_run.id or "local")[:8]
        create_markdown_artifact(
            key=f"rebalance-plan-{key}",
            markdown=f"# Rebalance {key}\n\n```\n{result.render()}\n```\n",
            description="Rebalance: per server before and after, what stays over target, moves",
        )
        if result.plan is None and result.overloads:
            over = "; ".join(o.describe() for o in result.overloads)
            return Failed(message=f"nothing can move; target not reachable: {over}")
        if result.plan is None:
            return Completed(message="nothing to move: every server is under target")
        plan = result.plan
    return approval(plan, approve, "rebalance") or migrate_plan(plan, path)
