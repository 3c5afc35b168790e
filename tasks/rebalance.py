"""Tasks of the rebalance and drain runbooks: plan from the store's facts, mark drained.

The moves themselves are the failover runbook's planned migrations
(:func:`flows.failover.failover` with the approved plan), so they share its ledger,
rollback, per-target limit and report.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ppo_dr.failover.rebalance import Rebalance, plan_drain, plan_rebalance
from ppo_dr.failover.rebalance_facts import rebalance_inputs
from ppo_dr.store import Store
from tasks import io_task


@task(name="plan-rebalance", **io_task(300))
def make_rebalance_plan(
    fleet_file: Path,
    down: list[str],
    target_util: float,
    max_moves: int | None,
    dc: str | None,
) -> Rebalance:
    """The planned migrations that bring the fleet under target, from the store's facts."""
    state, closures = rebalance_inputs(fleet_file, tuple(down), datetime.now(UTC))
    result = plan_rebalance(
        state, target_util=target_util, max_moves=max_moves, dc=dc, closures=closures
    )
    for over in result.overloads:
        get_run_logger().warning("%s", over.describe())
    return result


@task(name="plan-drain", cache_policy=NO_CACHE, timeout_seconds=300)
def make_drain_plan(
    fleet_file: Path, down: list[str], server: str, to_dc: str | None, to_server: str | None
) -> Rebalance:
    """The planned migrations that empty *server*; a stranded client refuses the drain."""
    state, closures = rebalance_inputs(fleet_file, tuple(down), datetime.now(UTC))
    return plan_drain(state, server, to_dc=to_dc, to_server=to_server, closures=closures)


@task(name="mark-drained", cache_policy=NO_CACHE, timeout_seconds=60)
def mark_drained(
    url: str, server: str, by: str, reason: str, window_id: int, run_id: str | None
) -> None:
    """Mark *server* drained (no plan targets it any more), with its maintenance window."""
    with Store.open(url) as store:
        store.mark_drained(
            server, by=by, reason=reason, maintenance_id=window_id, flow_run_id=run_id
        )


@task(name="lift-drain", cache_policy=NO_CACHE, timeout_seconds=60)
def lift_drain(url: str, server: str, window_id: int) -> None:
    """Clear *server*'s drained mark and close its maintenance window (a drain that
    failed with clients still on it must not keep them unpaged)."""
    with Store.open(url) as store:
        store.clear_drained(server)
        store.end_maintenance(window_id)
