"""The steps of one client's failover, one task each (``<step>-<client>`` in the UI).

The ``fail-over-clients`` flow (:mod:`flows.failover_client`) calls them in order, per
client. Each
takes the client's :class:`ClientLedger` (where its steps are recorded) and typed
values, builds its action inside, and runs through the ledger
(:func:`ppo_dr.failover.ledger.run_step`): a step done by an earlier run of the same
plan is skipped and its recorded data reused, so a rerun after a crash finishes the
plan without restoring anyone twice. Networked steps retry transient errors only
(:func:`tasks.retry_condition_fn`); a permanent one (a verify mismatch, a placement
conflict, a refused host key) fails the client at once, which is then rolled back.

:func:`batch_run_on_pool` is the other way a batch of clients moves: the orchestrator
starts its run on the target DC's pool and waits; the clients' results come back
through the store (the hand-over point between runs), not through Prefect's result
storage, which a worker in another DC does not share.
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
from ppo_dr.failover.plan_checks import still_in_fleet
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
    #: (id, identity) of the servers the client's steps reach, as the batch began
    #: (:func:`ppo_dr.failover.plan_checks.identities`).
    servers: tuple[tuple[str, str], ...] = ()

    def fleet(self) -> Fleet:
        """The fleet file read now, refused (permanently) if it lost or changed a server
        the steps reach: it may only grow under a run."""
        return still_in_fleet(
            load_fleet(self.fleet_file),
            self.servers,
            self.fleet_file,
            f"the move of {self.client_id}",
        )


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
        fleet = ledger.fleet()
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
        fleet = ledger.fleet()
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
    fleet = ledger.fleet()
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
        fleet = ledger.fleet()
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
            with open_fleet_access(ledger.fleet()) as access:
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

#: How long a batch's run may wait for a worker of its target DC before it is cancelled.
CLIENT_START_WITHIN_S = 600.0
#: How often the orchestrator reads the state of a batch's run it waits for.
CLIENT_POLL_S = 5.0


@dataclass(frozen=True)
class PoolRun:
    """A batch's run to start on a pool: the deployment, its parameters (the moves and
    times as JSON, as the API stores them) and its idempotency key."""

    deployment: str
    parameters: dict[str, Any]
    idempotency_key: str


def batch_run_on_pool(
    run: PoolRun,
    url: str,
    plan_id: str,
    failover_run_id: str | None,
    moves: list[ClientMove],
    *,
    start_within_s: float = CLIENT_START_WITHIN_S,
    poll_s: float = CLIENT_POLL_S,
) -> list[ClientOutcome]:
    """Start the batch's run on its deployment (the target DC's pool), wait for it, and
    read each client's result from the store. A run no worker took within
    *start_within_s* is cancelled and its clients fail, naming the deployment."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment
    from prefect.states import Cancelled
    from pydantic_core import to_jsonable_python

    log = get_run_logger()
    started_run = run_deployment(
        run.deployment,
        parameters=to_jsonable_python(run.parameters),
        timeout=0,
        idempotency_key=run.idempotency_key,
    )
    assert isinstance(started_run, FlowRun)  # the sync form, not a coroutine
    flow_run = started_run
    log.info("%d client(s): run %s on %s", len(moves), flow_run.name, run.deployment)
    started = time.monotonic()
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(flow_run.id)
            kind = flow_run.state.type.value if flow_run.state else "SCHEDULED"
            verdict = client_run_verdict(kind, time.monotonic() - started, start_within_s)
            if verdict == "finished":
                break
            if verdict == "not-started":
                client.set_flow_run_state(
                    flow_run.id, Cancelled(message="no worker took it"), force=True
                )
                why = (
                    f"no worker of {run.deployment} took run {flow_run.name} "
                    f"in {start_within_s:.0f} s"
                )
                return [ClientOutcome.not_moved(move, why) for move in moves]
            time.sleep(poll_s)
    ended = f"{flow_run.state.name}: {flow_run.state.message}" if flow_run.state else "?"
    recorded = client_outcomes_from_store(url, plan_id, failover_run_id)
    return [  # a client without a result: the run died before it recorded one
        recorded.get(move.client_id)
        or ClientOutcome.not_moved(move, f"run {flow_run.name} on {run.deployment} ended {ended}")
        for move in moves
    ]


def client_outcomes_from_store(
    url: str, plan_id: str, failover_run_id: str | None
) -> dict[str, ClientOutcome]:
    """The clients' results as this orchestrating run's batch runs recorded them in the
    ledger (a result of an earlier run of the plan is not one of them), by client."""
    with Store.open(url) as store:
        results = store.failover_results(plan_id)
    return {
        result.client_id: ClientOutcome(
            result.client_id,
            result.from_server,
            result.to_server,
            "ok" if result.outcome == "ok" else "failed",
            detail=result.detail,
            **{name: getattr(result, name) for name in MEASURES},
        )
        for result in results
        if result.flow_run_id == failover_run_id
    }


__all__ = [
    "ClientLedger",
    "PoolRun",
    "batch_run_on_pool",
    "client_outcomes_from_store",
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
