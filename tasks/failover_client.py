"""The steps of one client's failover, one task each (``<step>-<client>`` in the UI).

The ``fail-over-client`` flow (:mod:`flows.failover_client`) calls them in order. Each
takes the client's :class:`ClientLedger` (where its steps are recorded) and typed
values, builds its action inside, and runs through the ledger
(:func:`ppo_dr.failover.ledger.run_step`): a step done by an earlier run of the same
plan is skipped and its recorded data reused, so a rerun after a crash finishes the
plan without restoring anyone twice. Networked steps retry transient errors only
(:func:`tasks.retry_condition_fn`); a permanent one (a verify mismatch, a placement
conflict, a refused host key) fails the client at once, which is then rolled back.

:func:`client_run_on_pool` is the other way a client's move runs: the orchestrator
starts it on the target DC's pool and waits; its result comes back through the store
(the hand-over point between runs), not through Prefect's result storage, which a
worker in another DC does not share.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ppo_dr.errors import DRError
from ppo_dr.failover import checks, steps
from ppo_dr.failover.ledger import roll_back_steps, run_step
from ppo_dr.failover.plan import ClientMove
from ppo_dr.failover.runs import client_run_verdict
from ppo_dr.fleet_access import FleetAccess
from ppo_dr.inventory import Fleet, load_fleet
from ppo_dr.store import Store
from tasks import io_task
from tasks.failover import (
    MEASURES,
    STEP_TIMEOUT_S,
    STEP_TIMEOUTS,
    ClientOutcome,
    open_fleet_access,
)


@dataclass(frozen=True)
class ClientLedger:
    """Where one client's steps are recorded (the store, the plan, the client, the
    orchestrating run) and the fleet file they read (again at each step: provisioning
    added servers to it)."""

    fleet_file: Path
    url: str
    plan_id: str
    client_id: str
    flow_run_id: str | None


Action = Callable[[Store], Mapping[str, Any] | None]


def _ledgered(ledger: ClientLedger, step: str, action: Action) -> dict[str, Any]:
    """*step* through the ledger; ``_skipped`` says an earlier run did it."""
    with Store.open(ledger.url) as store:
        outcome = run_step(
            store,
            ledger.plan_id,
            ledger.client_id,
            step,
            lambda: action(store),
            flow_run_id=ledger.flow_run_id,
        )
    if outcome.skipped:
        get_run_logger().info("%s of %s: done by an earlier run, skipped", step, ledger.client_id)
    return {**outcome.data, "_skipped": outcome.skipped}


def _over_ssh(
    ledger: ClientLedger,
    step: str,
    action: Callable[[Fleet, FleetAccess], Mapping[str, Any] | None],
) -> dict[str, Any]:
    """*step* through the ledger, with the fleet read now and SSH access to it."""

    def run(_store: Store) -> Mapping[str, Any] | None:
        fleet = load_fleet(ledger.fleet_file)
        with open_fleet_access(fleet) as access:
            return action(fleet, access)

    return _ledgered(ledger, step, run)


def _step_task(step: str) -> Any:
    """The task decorator of one ledger step: its time limit, transient retries only."""
    return task(
        name=f"failover-{step}",
        task_run_name=f"{step}-{{ledger.client_id}}",
        **io_task(STEP_TIMEOUTS.get(step, STEP_TIMEOUT_S)),
    )


@_step_task("freeze")
def freeze_client(ledger: ClientLedger, server_id: str) -> dict[str, Any]:
    """Planned mode: the client's app on *server_id* answers writes with 503."""
    return _over_ssh(
        ledger, "freeze", lambda _f, access: steps.freeze(access, ledger.client_id, server_id)
    )


@_step_task("final-sync")
def final_sync(ledger: ClientLedger, move: ClientMove) -> dict[str, Any]:
    """Planned mode: a last snapshot of the frozen client, catalogued; its id and mirrors."""
    from ppo_dr.mirror.runbook import record_in_catalogue

    def sync(store: Store) -> dict[str, Any]:
        fleet = load_fleet(ledger.fleet_file)
        placements = {p.client_id: p.server_id for p in store.placements()}
        with open_fleet_access(fleet) as access:
            snapshot_id, mirrors, run = steps.final_sync(
                access, move.client_id, move.from_server, placements
            )
        record_in_catalogue(store, run, flow_run_id=ledger.flow_run_id)
        return {"snapshot_id": snapshot_id, "mirrors": mirrors}

    return _ledgered(ledger, "final-sync", sync)


def _from_snapshot(
    ledger: ClientLedger,
    step: str,
    action: Callable[..., steps.Restored | checks.Verified],
    move: ClientMove,
    snapshot_id: str,
    mirrors: list[str] | None,
) -> dict[str, Any]:
    """*step* (restore or verify) of *snapshot_id* on the move's target, over SSH."""
    return _over_ssh(
        ledger,
        step,
        lambda _f, access: action(access, move, snapshot_id, mirrors=mirrors).evidence(),
    )


@_step_task("restore")
def restore_client(
    ledger: ClientLedger, move: ClientMove, snapshot_id: str, mirrors: list[str] | None
) -> dict[str, Any]:
    """Restore *snapshot_id* (else from a fallback mirror) onto the target, swapped in."""
    return _from_snapshot(ledger, "restore", steps.restore_client, move, snapshot_id, mirrors)


@_step_task("verify")
def verify_client(
    ledger: ClientLedger, move: ClientMove, snapshot_id: str, mirrors: list[str] | None
) -> dict[str, Any]:
    """Every restored file against the snapshot's manifest (a mismatch is permanent)."""
    return _from_snapshot(ledger, "verify", checks.verify_restored, move, snapshot_id, mirrors)


@_step_task("unfreeze-target")
def unfreeze_target(ledger: ClientLedger, server_id: str) -> dict[str, Any]:
    """Planned mode: lift the freeze marker the final sync carried to the target."""
    return _over_ssh(
        ledger,
        "unfreeze-target",
        lambda _f, access: steps.unfreeze(access, ledger.client_id, server_id),
    )


def _health(ledger: ClientLedger, server_id: str, *, front_door: bool) -> dict[str, Any]:
    fleet = load_fleet(ledger.fleet_file)
    return checks.app_health(fleet, ledger.client_id, server_id, front_door=front_door).evidence()


@_step_task("health-direct")
def health_direct(ledger: ClientLedger, server_id: str) -> dict[str, Any]:
    """The client's app answers on the target itself, before anyone is routed there."""
    return _ledgered(
        ledger, "health-direct", lambda _s: _health(ledger, server_id, front_door=False)
    )


@_step_task("switch")
def switch_placement(
    ledger: ClientLedger, move: ClientMove, expected_version: int
) -> dict[str, Any]:
    """The placement moves to the target (compare-and-set on *expected_version*)."""

    def switch(store: Store) -> dict[str, Any]:
        placed = steps.switch(
            store, move, expected_version, plan_id=ledger.plan_id, flow_run_id=ledger.flow_run_id
        )
        return {"version": placed.version}

    return _ledgered(ledger, "switch", switch)


@_step_task("route")
def route_client(ledger: ClientLedger, server_id: str) -> dict[str, Any]:
    """The front door (lab) or DNS (Route53) sends the client to *server_id*."""
    from ppo_dr.providers import provider_for

    def route(_store: Store) -> dict[str, Any]:
        fleet = load_fleet(ledger.fleet_file)
        provider = provider_for(
            fleet, fleet.server(server_id).dc, fleet_file=ledger.fleet_file, store_url=ledger.url
        )
        return {"receipt": provider.route(ledger.client_id, server_id)}

    return _ledgered(ledger, "route", route)


@_step_task("health-front-door")
def health_front_door(ledger: ClientLedger, server_id: str) -> dict[str, Any]:
    """The client answers from *server_id* through the front door; when (the RTO's end)."""
    return _ledgered(
        ledger,
        "health-front-door",
        lambda _s: {
            **_health(ledger, server_id, front_door=True),
            "healthy_at": datetime.now(UTC).isoformat(),
        },
    )


@task(
    name="failover-rollback",
    task_run_name="rollback-{ledger.client_id}",
    cache_policy=NO_CACHE,
    timeout_seconds=STEP_TIMEOUT_S,
)
def roll_back_client(
    ledger: ClientLedger, move: ClientMove, planned: bool, detail: str
) -> list[str]:
    """Undo what this plan did to the client (see :func:`ppo_dr.failover.steps.rollback`)
    and mark its ledger steps rolled back; what was undone, or why it could not be."""
    with Store.open(ledger.url) as store:
        try:
            with open_fleet_access(load_fleet(ledger.fleet_file)) as access:
                undone = steps.rollback(
                    access,
                    store,
                    move,
                    plan_id=ledger.plan_id,
                    planned=planned,
                    flow_run_id=ledger.flow_run_id,
                )
        except DRError as exc:  # reported, never masks the failure that caused it
            undone = [f"rollback incomplete: {exc}"]
        roll_back_steps(store, ledger.plan_id, move.client_id, detail)
    return undone


@task(
    name="record-client-result",
    task_run_name="result-{outcome.client_id}",
    **io_task(60),
)
def record_client_result(ledger: ClientLedger, outcome: ClientOutcome) -> None:
    """The client's result in the ledger: RTO, RPO, or why it was rolled back (and what
    the rollback undid), where the orchestrator and the incident report read it."""
    undone = f"rolled back: {', '.join(outcome.rolled_back) or 'nothing to undo'}"
    with Store.open(ledger.url) as store:
        store.record_failover_result(
            ledger.plan_id,
            outcome.client_id,
            from_server=outcome.from_server,
            to_server=outcome.to_server,
            outcome="ok" if outcome.outcome == "ok" else "rolled-back",
            **{name: getattr(outcome, name) for name in MEASURES},
            detail="" if outcome.outcome == "ok" else f"{outcome.detail}; {undone}",
            flow_run_id=ledger.flow_run_id,
        )


# --------------------------------------------------------------------------- on a pool

#: How long a client run may wait for a worker of its target DC before it is cancelled.
CLIENT_START_WITHIN_S = 600.0
#: How often the orchestrator reads the state of a client run it waits for.
CLIENT_POLL_S = 5.0


def client_run_on_pool(
    deployment: str,
    parameters: dict[str, Any],
    idempotency_key: str,
    move: ClientMove,
    ledger: ClientLedger,
    *,
    start_within_s: float = CLIENT_START_WITHIN_S,
    poll_s: float = CLIENT_POLL_S,
) -> ClientOutcome:
    """Start the client's run on *deployment* (the target DC's pool), wait for it, and
    read its result from the store. A run no worker took within *start_within_s* is
    cancelled and the client fails, naming the deployment (no worker on that pool)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment
    from prefect.states import Cancelled
    from pydantic_core import to_jsonable_python

    log = get_run_logger()
    run = run_deployment(  # the move and times as JSON, as the API stores parameters
        deployment,
        parameters=to_jsonable_python(parameters),
        timeout=0,
        idempotency_key=idempotency_key,
    )
    assert isinstance(run, FlowRun)  # the sync form, not a coroutine
    log.info("%s: run %s on %s", move.client_id, run.name, deployment)
    started = time.monotonic()
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(run.id)
            kind = run.state.type.value if run.state else "SCHEDULED"
            verdict = client_run_verdict(kind, time.monotonic() - started, start_within_s)
            if verdict == "finished":
                break
            if verdict == "not-started":
                client.set_flow_run_state(
                    run.id, Cancelled(message="no worker took it"), force=True
                )
                why = f"no worker of {deployment} took run {run.name} in {start_within_s:.0f} s"
                return ClientOutcome.not_moved(move, why)
            time.sleep(poll_s)
    outcome = client_outcome_from_store(ledger, move)
    if outcome is None:  # the run died before it recorded anything
        ended = f"{run.state.name}: {run.state.message}" if run.state else "?"
        return ClientOutcome.not_moved(move, f"run {run.name} on {deployment} ended {ended}")
    return outcome


def client_outcome_from_store(ledger: ClientLedger, move: ClientMove) -> ClientOutcome | None:
    """The client's result as this orchestrating run's client run recorded it in the
    ledger, or None if it did not (a result of an earlier run of the plan is not it)."""
    with Store.open(ledger.url) as store:
        results = store.failover_results(ledger.plan_id)
    result = next((r for r in results if r.client_id == move.client_id), None)
    if result is None or result.flow_run_id != ledger.flow_run_id:
        return None
    return ClientOutcome(
        result.client_id,
        result.from_server,
        result.to_server,
        "ok" if result.outcome == "ok" else "failed",
        detail=result.detail,
        **{name: getattr(result, name) for name in MEASURES},
    )


__all__ = [
    "ClientLedger",
    "client_outcome_from_store",
    "client_run_on_pool",
    "final_sync",
    "freeze_client",
    "health_direct",
    "health_front_door",
    "record_client_result",
    "restore_client",
    "roll_back_client",
    "route_client",
    "switch_placement",
    "unfreeze_target",
    "verify_client",
]
