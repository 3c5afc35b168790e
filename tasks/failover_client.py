"""The steps of one client's failover, one task each (``<step>-<client>`` in the UI).

Each has typed parameters, builds its action inside, and runs through the ledger
(:func:`ppo_dr.failover.ledger.run_step`): a step done by an earlier run of the same
plan is skipped and its recorded data reused, so a rerun after a crash finishes the
plan without restoring anyone twice. Networked steps retry transient errors only
(:func:`tasks.retry_condition_fn`); a permanent one (a verify mismatch, a placement
conflict, a refused host key) fails the client at once, which is then rolled back.
:func:`fail_over_client` (``client-<client>``, mapped over the plan's moves by the
failover flow) calls them in order, holds the target's restore slot and rolls the
client back on a failure.

Restores onto one target are limited to :data:`tasks.failover.TARGET_SLOTS` at a time,
from restore to the direct health check, by a semaphore of this process
(:func:`target_slot`), not a Prefect global concurrency limit: every client of a run is
a mapped task in a thread of the run's process, and one failover acts at a time (the
``failover`` global limit), so the process is the whole scope; and a killed run's
global-limit slots would stay taken until their leases run out, stalling the rerun
that must finish the crashed plan.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ppo_dr.errors import DRError, PermanentError
from ppo_dr.failover import checks, steps
from ppo_dr.failover.ledger import roll_back_steps, run_step
from ppo_dr.failover.plan import ClientMove
from ppo_dr.fleet_access import FleetAccess
from ppo_dr.inventory import Fleet, load_fleet
from ppo_dr.store import Store
from tasks import IO_RETRIES
from tasks.failover import (
    STEP_TIMEOUT_S,
    STEP_TIMEOUTS,
    TARGET_SLOT_WAIT_S,
    TARGET_SLOTS,
    ClientOutcome,
    open_fleet_access,
)


def _ledgered(
    url: str,
    plan_id: str,
    client_id: str,
    step: str,
    flow_run_id: str | None,
    action: Callable[[Store], Mapping[str, Any] | None],
) -> dict[str, Any]:
    """*step* of *client_id* through the ledger; ``_skipped`` says an earlier run did it."""
    with Store.open(url) as store:
        outcome = run_step(
            store, plan_id, client_id, step, lambda: action(store), flow_run_id=flow_run_id
        )
    if outcome.skipped:
        get_run_logger().info("%s of %s: done by an earlier run, skipped", step, client_id)
    return {**outcome.data, "_skipped": outcome.skipped}


def _with_access(
    fleet_file: Path, action: Callable[[Fleet, FleetAccess], Mapping[str, Any] | None]
) -> Callable[[Store], Mapping[str, Any] | None]:
    """An action that needs the fleet (read now: provisioning added servers) and SSH."""

    def run(_store: Store) -> Mapping[str, Any] | None:
        fleet = load_fleet(fleet_file)
        with open_fleet_access(fleet) as access:
            return action(fleet, access)

    return run


def _step_task(step: str, run_name: str) -> Any:
    """The task decorator of one ledger step: its time limit, transient retries only."""
    return task(
        name=f"failover-{step}",
        task_run_name=f"{step}-{run_name}",
        cache_policy=NO_CACHE,
        timeout_seconds=STEP_TIMEOUTS.get(step, STEP_TIMEOUT_S),
        **IO_RETRIES,
    )


@_step_task("freeze", "{client_id}")
def freeze_client(
    fleet_file: Path,
    url: str,
    plan_id: str,
    client_id: str,
    server_id: str,
    flow_run_id: str | None,
) -> dict[str, Any]:
    """Planned mode: the client's app on *server_id* answers writes with 503."""
    return _ledgered(
        url,
        plan_id,
        client_id,
        "freeze",
        flow_run_id,
        _with_access(fleet_file, lambda _f, access: steps.freeze(access, client_id, server_id)),
    )


@_step_task("final-sync", "{move.client_id}")
def final_sync(
    fleet_file: Path, url: str, plan_id: str, move: ClientMove, flow_run_id: str | None
) -> dict[str, Any]:
    """Planned mode: a last snapshot of the frozen client, catalogued; its id and mirrors."""
    from ppo_dr.mirror.runbook import record_in_catalogue

    def sync(store: Store) -> dict[str, Any]:
        fleet = load_fleet(fleet_file)
        placements = {p.client_id: p.server_id for p in store.placements()}
        with open_fleet_access(fleet) as access:
            snapshot_id, mirrors, run = steps.final_sync(
                access, move.client_id, move.from_server, placements
            )
        record_in_catalogue(store, run, flow_run_id=flow_run_id)
        return {"snapshot_id": snapshot_id, "mirrors": mirrors}

    return _ledgered(url, plan_id, move.client_id, "final-sync", flow_run_id, sync)


@_step_task("restore", "{move.client_id}")
def restore_client(
    fleet_file: Path,
    url: str,
    plan_id: str,
    move: ClientMove,
    snapshot_id: str,
    mirrors: list[str] | None,
    flow_run_id: str | None,
) -> dict[str, Any]:
    """Restore *snapshot_id* (else from a fallback mirror) onto the target, swapped in."""

    def restore(_fleet: Fleet, access: FleetAccess) -> dict[str, Any]:
        result = steps.restore_client(access, move, snapshot_id, mirrors=mirrors)
        return {
            "snapshot_id": result.snapshot_id,
            "files": result.files,
            "bytes": result.bytes,
            "seconds": round(result.duration_s, 3),
            "source_mirror": result.source_mirror,
            "served_by": result.served_by,
        }

    return _ledgered(
        url,
        plan_id,
        move.client_id,
        "restore",
        flow_run_id,
        _with_access(fleet_file, restore),
    )


@_step_task("verify", "{move.client_id}")
def verify_client(
    fleet_file: Path,
    url: str,
    plan_id: str,
    move: ClientMove,
    snapshot_id: str,
    mirrors: list[str] | None,
    flow_run_id: str | None,
) -> dict[str, Any]:
    """Every restored file against the snapshot's manifest (a mismatch is permanent)."""

    def verify(_fleet: Fleet, access: FleetAccess) -> dict[str, Any]:
        result = checks.verify_restored(access, move, snapshot_id, mirrors=mirrors)
        return {"entries": result.entries, "files": result.files, "bytes": result.bytes}

    return _ledgered(
        url,
        plan_id,
        move.client_id,
        "verify",
        flow_run_id,
        _with_access(fleet_file, verify),
    )


@_step_task("unfreeze-target", "{client_id}")
def unfreeze_target(
    fleet_file: Path,
    url: str,
    plan_id: str,
    client_id: str,
    server_id: str,
    flow_run_id: str | None,
) -> dict[str, Any]:
    """Planned mode: lift the freeze marker the final sync carried to the target."""
    return _ledgered(
        url,
        plan_id,
        client_id,
        "unfreeze-target",
        flow_run_id,
        _with_access(fleet_file, lambda _f, access: steps.unfreeze(access, client_id, server_id)),
    )


def _health(result: checks.Health) -> dict[str, Any]:
    return {"url": result.url, "server": result.server, "seconds": round(result.seconds, 3)}


@_step_task("health-direct", "{client_id}")
def health_direct(
    fleet_file: Path,
    url: str,
    plan_id: str,
    client_id: str,
    server_id: str,
    flow_run_id: str | None,
) -> dict[str, Any]:
    """The client's app answers on the target itself, before anyone is routed there."""
    return _ledgered(
        url,
        plan_id,
        client_id,
        "health-direct",
        flow_run_id,
        lambda _s: _health(checks.app_health(load_fleet(fleet_file), client_id, server_id)),
    )


@_step_task("switch", "{move.client_id}")
def switch_placement(
    url: str, plan_id: str, move: ClientMove, expected_version: int, flow_run_id: str | None
) -> dict[str, Any]:
    """The placement moves to the target (compare-and-set on *expected_version*)."""

    def switch(store: Store) -> dict[str, Any]:
        placed = steps.switch(
            store, move, expected_version, plan_id=plan_id, flow_run_id=flow_run_id
        )
        return {"version": placed.version}

    return _ledgered(url, plan_id, move.client_id, "switch", flow_run_id, switch)


@_step_task("route", "{client_id}")
def route_client(
    fleet_file: Path,
    url: str,
    plan_id: str,
    client_id: str,
    server_id: str,
    flow_run_id: str | None,
) -> dict[str, Any]:
    """The front door (lab) or DNS (Route53) sends the client to *server_id*."""
    from ppo_dr.providers import provider_for

    def route(_store: Store) -> dict[str, Any]:
        fleet = load_fleet(fleet_file)
        provider = provider_for(
            fleet, fleet.server(server_id).dc, fleet_file=fleet_file, store_url=url
        )
        return {"receipt": provider.route(client_id, server_id)}

    return _ledgered(url, plan_id, client_id, "route", flow_run_id, route)


@_step_task("health-front-door", "{client_id}")
def health_front_door(
    fleet_file: Path,
    url: str,
    plan_id: str,
    client_id: str,
    server_id: str,
    flow_run_id: str | None,
) -> dict[str, Any]:
    """The client answers from *server_id* through the front door; when (the RTO's end)."""
    return _ledgered(
        url,
        plan_id,
        client_id,
        "health-front-door",
        flow_run_id,
        lambda _s: {
            **_health(
                checks.app_health(load_fleet(fleet_file), client_id, server_id, front_door=True)
            ),
            "healthy_at": datetime.now(UTC).isoformat(),
        },
    )


@_step_task("lost-writes", "{client_id}")
def count_lost_writes(
    fleet_file: Path,
    url: str,
    plan_id: str,
    client_id: str,
    server_id: str,
    acks_path: Path,
    flow_run_id: str | None,
) -> dict[str, Any]:
    """Acknowledged writes (the workload's log *acks_path*) missing on the new home."""
    from ppo_dr.lab.lost_writes import lost_on_new_home  # the lab's own measure

    return _ledgered(
        url,
        plan_id,
        client_id,
        "lost-writes",
        flow_run_id,
        _with_access(
            fleet_file,
            lambda _f, access: {"lost": lost_on_new_home(access, client_id, server_id, acks_path)},
        ),
    )


@task(
    name="failover-rollback",
    task_run_name="rollback-{move.client_id}",
    cache_policy=NO_CACHE,
    timeout_seconds=STEP_TIMEOUT_S,
)
def roll_back_client(
    fleet_file: Path,
    url: str,
    plan_id: str,
    move: ClientMove,
    planned: bool,
    detail: str,
    flow_run_id: str | None,
) -> list[str]:
    """Undo what this plan did to the client (see :func:`ppo_dr.failover.steps.rollback`)
    and mark its ledger steps rolled back; what was undone, or why it could not be."""
    with Store.open(url) as store:
        try:
            with open_fleet_access(load_fleet(fleet_file)) as access:
                undone = steps.rollback(
                    access, store, move, plan_id=plan_id, planned=planned, flow_run_id=flow_run_id
                )
        except DRError as exc:  # reported, never masks the failure that caused it
            undone = [f"rollback incomplete: {exc}"]
        roll_back_steps(store, plan_id, move.client_id, detail)
    return undone


@task(
    name="record-client-result",
    task_run_name="result-{outcome.client_id}",
    cache_policy=NO_CACHE,
    timeout_seconds=60,
    **IO_RETRIES,
)
def record_client_result(
    url: str, plan_id: str, outcome: ClientOutcome, flow_run_id: str | None
) -> None:
    """The client's result in the ledger: RTO, RPO, writes lost, or why it was rolled back."""
    with Store.open(url) as store:
        store.record_failover_result(
            plan_id,
            outcome.client_id,
            from_server=outcome.from_server,
            to_server=outcome.to_server,
            outcome="ok" if outcome.outcome == "ok" else "rolled-back",
            source_mirror=outcome.source_mirror,
            snapshot_id=outcome.snapshot_id,
            rto_seconds=outcome.rto_seconds,
            rpo_seconds=outcome.rpo_seconds,
            lost_writes=outcome.lost_writes,
            restored_bytes=outcome.restored_bytes,
            restored_files=outcome.restored_files,
            restore_seconds=outcome.restore_seconds,
            detail=outcome.detail or "; ".join(outcome.rolled_back),
            flow_run_id=flow_run_id,
        )


# --------------------------------------------------------------------------- the client

_target_slots: dict[str, threading.BoundedSemaphore] = {}
_target_slots_guard = threading.Lock()


def target_slot(server_id: str) -> threading.BoundedSemaphore:
    """The slots of restores onto *server_id* in this process (:data:`TARGET_SLOTS`)."""
    with _target_slots_guard:
        return _target_slots.setdefault(server_id, threading.BoundedSemaphore(TARGET_SLOTS))


@task(
    name="fail-over-client",
    task_run_name="client-{move.client_id}",
    cache_policy=NO_CACHE,
)
def fail_over_client(
    fleet_file: Path,
    url: str,
    plan_id: str,
    move: ClientMove,
    mode: str,
    expected_version: int,
    declared_at: datetime,
    flow_run_id: str | None,
    acks_path: Path | None = None,
) -> ClientOutcome:
    """Every step of one client, in order; on a failure the client is rolled back and
    the failure reported in its outcome (never raised: the other clients go on).

    Args:
        fleet_file: the fleet file (read by each step: provisioning added servers).
        url: the state store.
        plan_id: the plan whose ledger the steps go through.
        move: the client's planned move (from, to, snapshot, mirrors).
        mode: emergency or planned (freeze and final sync first).
        expected_version: the placement version the switch compares and sets.
        declared_at: the failover's declaration (RTO and RPO are counted from it).
        flow_run_id: the parent failover run, recorded with every step.
        acks_path: a workload's log of acknowledged writes, to count writes lost.
    """
    log = get_run_logger()
    client, source, target = move.client_id, move.from_server, move.to_server
    planned = mode == "planned"
    out = ClientOutcome(client, source, target, "failed")
    base = (fleet_file, url, plan_id)

    def done(data: dict[str, Any], step: str) -> dict[str, Any]:
        if data.pop("_skipped", False):
            out.skipped_steps.append(step)
        return data

    try:
        snapshot_id, mirrors = move.snapshot_id, None
        if planned:
            done(freeze_client(*base, client, source, flow_run_id), "freeze")
            synced = done(final_sync(*base, move, flow_run_id), "final-sync")
            snapshot_id, mirrors = synced["snapshot_id"], synced["mirrors"]
        if not snapshot_id:
            raise PermanentError(f"the plan names no snapshot to restore {client} from")
        slot = target_slot(target)
        if not slot.acquire(timeout=TARGET_SLOT_WAIT_S):
            raise PermanentError(f"no restore slot on {target} within {TARGET_SLOT_WAIT_S} s")
        try:
            restored = done(
                restore_client(*base, move, snapshot_id, mirrors, flow_run_id), "restore"
            )
            out.snapshot_id = snapshot_id
            out.source_mirror = restored.get("source_mirror")
            out.restored_bytes = restored.get("bytes")
            out.restore_seconds = restored.get("seconds")
            out.restored_files = restored.get("files")
            done(verify_client(*base, move, snapshot_id, mirrors, flow_run_id), "verify")
            if planned:  # the final sync captured the freeze marker; lift it there
                done(unfreeze_target(*base, client, target, flow_run_id), "unfreeze-target")
            done(health_direct(*base, client, target, flow_run_id), "health-direct")
        finally:
            slot.release()
        placed = done(switch_placement(url, plan_id, move, expected_version, flow_run_id), "switch")
        log.info("%s now placed on %s (version %s)", client, target, placed["version"])
        done(route_client(*base, client, target, flow_run_id), "route")
        healthy = done(health_front_door(*base, client, target, flow_run_id), "health-front-door")
        healthy_at = datetime.fromisoformat(healthy["healthy_at"])
        out.rto_seconds = max(0.0, (healthy_at - declared_at).total_seconds())
        out.rpo_seconds = steps.rpo_seconds(snapshot_id, declared_at)
        if acks_path is not None and acks_path.exists():
            lost = done(
                count_lost_writes(*base, client, target, acks_path, flow_run_id), "lost-writes"
            )
            out.lost_writes = len(lost["lost"])
            if lost["lost"]:
                log.warning("%s: %d acknowledged write(s) lost", client, len(lost["lost"]))
        out.outcome = "ok"
    except Exception as exc:
        out.detail = f"{type(exc).__name__}: {exc}"
        log.error("failover of %s failed, rolling back: %s", client, out.detail)
        undone = roll_back_client(*base, move, planned, out.detail, flow_run_id, return_state=True)
        out.rolled_back = (
            undone.result() if undone.is_completed() else [f"rollback failed: {undone.message}"]
        )
    record_client_result(url, plan_id, out, flow_run_id)
    return out
