"""Tasks of the failover runbook: thin wrappers over :mod:`ppo_dr.failover`.

Every step of a client runs as its own task run (``<step>-<client>``) through the
ledger (:func:`ppo_dr.failover.ledger.run_step`): a step done by an earlier run of the
same plan is skipped and its recorded data reused, so a rerun after a crash finishes
the plan without restoring anyone twice. Networked steps retry transient errors only
(:func:`tasks.retry_condition_fn`); a permanent one (a verify mismatch, a placement
conflict, a refused host key) fails the client at once, which is then rolled back.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ppo_dr.channels import build_channels
from ppo_dr.errors import AuthError, DRError, PermanentError
from ppo_dr.failover import checks, steps
from ppo_dr.failover.ledger import (
    placement_versions,
    roll_back_steps,
    run_step,
    unreachable_servers,
)
from ppo_dr.failover.plan import ClientMove, Plan, ProvisionRequest, Scope, Target
from ppo_dr.fleet_access import FleetAccess
from ppo_dr.inventory import Fleet, load_fleet
from ppo_dr.store import Failover, Store
from tasks import RETRY_DELAYS, RETRY_JITTER, retry_condition_fn, secret_from_block

_RETRIES: dict[str, Any] = {
    "retries": len(RETRY_DELAYS),
    "retry_delay_seconds": RETRY_DELAYS,
    "retry_jitter_factor": RETRY_JITTER,
    "retry_condition_fn": retry_condition_fn,
}

#: Clients restored onto one target server at once.
TARGET_SLOTS = 2
#: Longest a client waits for a slot of its target before it fails.
TARGET_SLOT_WAIT_S = 3600.0

# Per-target slots are semaphores of this process, not Prefect global concurrency
# limits: every client of a run is a mapped task of that run, so one process holds them
# all, and a global limit's slot leaks when the orchestrator is killed (it is freed only
# when its lease expires, by a server service), which would stall exactly the rerun that
# must finish a crashed failover. One failover at a time is the deployment's limit.
_target_slots: dict[str, threading.BoundedSemaphore] = {}
_target_slots_guard = threading.Lock()
#: Per-step time limits (seconds); steps not named get STEP_TIMEOUT_S.
STEP_TIMEOUTS: dict[str, float] = {"restore": 4 * 3600, "verify": 2 * 3600, "seed": 3600}
STEP_TIMEOUT_S = 300.0


def target_slot(server_id: str) -> threading.BoundedSemaphore:
    """The slots of restores onto *server_id* in this process (:data:`TARGET_SLOTS`)."""
    with _target_slots_guard:
        return _target_slots.setdefault(server_id, threading.BoundedSemaphore(TARGET_SLOTS))


@dataclass
class ClientOutcome:
    """One client's result in this run, for the artifacts and the summary."""

    client_id: str
    from_server: str
    to_server: str
    outcome: str  # ok | failed
    source_mirror: str | None = None
    snapshot_id: str | None = None
    rpo_seconds: float | None = None
    rto_seconds: float | None = None
    restore_seconds: float | None = None
    restored_bytes: int | None = None
    restored_files: int | None = None
    lost_writes: int | None = None
    detail: str = ""
    skipped_steps: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- before


@task(name="observe-reachability", cache_policy=NO_CACHE, timeout_seconds=120)
def observe_reachability(fleet: Fleet) -> dict[str, str]:
    """Servers that do not answer SSH now (id -> why): the planner treats them as down."""
    down = unreachable_servers(fleet)
    log = get_run_logger()
    for server, why in down.items():
        log.warning("server %s unreachable: %s", server, why)
    return down


@task(name="plan-failover", cache_policy=NO_CACHE, timeout_seconds=120, **_RETRIES)
def make_plan(fleet_file: Path, scope: Scope, target: Target, mode: str, down: list[str]) -> Plan:
    """Plan from the fleet, the store's placements and catalogue, and what is down."""
    from ppo_dr.failover.fleet_state import fleet_state
    from ppo_dr.failover.plan import plan_failover

    state = fleet_state(fleet_file, tuple(down), datetime.now(UTC))
    return plan_failover(state, scope, target, "planned" if mode == "planned" else "emergency")


@task(name="begin-failover", cache_policy=NO_CACHE, timeout_seconds=60, **_RETRIES)
def begin_failover(
    url: str, fleet: Fleet, plan: Plan, incident_id: int | None, flow_run_id: str | None
) -> Failover:
    """Open (or find again) the plan's ledger row, with the placement versions to CAS."""
    with Store.open(url) as store:
        declared = None
        if incident_id is not None:
            incident = store.incident(incident_id)
            if incident is None:
                raise PermanentError(f"no incident {incident_id}")
            declared = incident.opened_at
        versions = placement_versions(store, fleet, [m.client_id for m in plan.moves])
        record, created = store.begin_failover(
            plan.plan_id,
            plan.mode,
            json.loads(plan.to_json()),
            placement_versions=versions,
            incident_id=incident_id,
            declared_at=declared,
            flow_run_id=flow_run_id,
        )
    get_run_logger().info(
        "failover %s %s", plan.plan_id, "begins" if created else "resumes (rerun of the plan)"
    )
    return record


@task(
    name="provision-server",
    task_run_name="provision-{request.server_id}",
    cache_policy=NO_CACHE,
    timeout_seconds=900,
    **_RETRIES,
)
def provision(fleet_file: Path, url: str, request: ProvisionRequest) -> dict[str, Any]:
    """Provision one planned server (idempotent by its id: a rerun finds it)."""
    from ppo_dr.providers import provider_for

    fleet = load_fleet(fleet_file)
    made = provider_for(fleet, request.dc, fleet_file=fleet_file, store_url=url).provision(request)
    get_run_logger().info(
        "%s %s by %s provider", request.server_id, "created" if made.created else "exists",
        made.provider,
    )  # fmt: skip
    return {"server": made.server.id, "provider": made.provider, "created": made.created}


@task(
    name="release-server",
    task_run_name="release-{server_id}",
    cache_policy=NO_CACHE,
    timeout_seconds=600,
    **_RETRIES,
)
def release(fleet_file: Path, url: str, server_id: str, dc: str) -> None:
    """Give a provisioned server back to its provider (gone already is fine): a failover's
    server no client ended up on, a drill's scratch server."""
    from ppo_dr.providers import provider_for

    fleet = load_fleet(fleet_file)
    provider_for(fleet, dc, fleet_file=fleet_file, store_url=url).release(server_id)


# --------------------------------------------------------------------------- one client


@task(
    name="failover-step",
    task_run_name="{step}-{client_id}",
    cache_policy=NO_CACHE,
    timeout_seconds=STEP_TIMEOUT_S,
    **_RETRIES,
)
def ledger_step(
    url: str,
    plan_id: str,
    client_id: str,
    step: str,
    action: Callable[[], Mapping[str, Any] | None],
    flow_run_id: str | None,
) -> dict[str, Any]:
    """One step of one client, through the ledger: skipped if an earlier run did it."""
    with Store.open(url) as store:
        outcome = run_step(store, plan_id, client_id, step, action, flow_run_id=flow_run_id)
    if outcome.skipped:
        get_run_logger().info("%s of %s: done by an earlier run, skipped", step, client_id)
    return {**outcome.data, "_skipped": outcome.skipped}


def _step(
    url: str,
    plan_id: str,
    client: str,
    name: str,
    action: Callable[[], Mapping[str, Any] | None],
    run_id: str | None,
) -> dict[str, Any]:
    timeout = STEP_TIMEOUTS.get(name, STEP_TIMEOUT_S)
    return ledger_step.with_options(timeout_seconds=timeout)(
        url, plan_id, client, name, action, run_id
    )


def _access(fleet: Fleet) -> FleetAccess:
    ref = fleet.access.key_secret
    key_text = None
    if ref is not None and ref.block is not None:
        try:
            key_text = secret_from_block(ref.block)
        except PermanentError as exc:
            raise AuthError(f"access.key_secret: {exc}") from exc
    return FleetAccess(fleet, key_text=key_text, secret_resolver=secret_from_block)


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
    """Every step of one client, each a task run through the ledger; on a failure the
    client is rolled back and the failure reported (the other clients go on)."""
    log = get_run_logger()
    fleet = load_fleet(fleet_file)  # read now: provisioning added servers to it
    client, source, target = move.client_id, move.from_server, move.to_server
    planned = mode == "planned"
    out = ClientOutcome(client, source, target, "failed")

    def step(name: str, action: Callable[[], Mapping[str, Any] | None]) -> dict[str, Any]:
        data = _step(url, plan_id, client, name, action, flow_run_id)
        if data.pop("_skipped", False):
            out.skipped_steps.append(name)
        return data

    with _access(fleet) as access, Store.open(url) as store:
        slot = target_slot(target)
        try:
            if not slot.acquire(timeout=TARGET_SLOT_WAIT_S):
                raise PermanentError(f"no restore slot on {target} within {TARGET_SLOT_WAIT_S} s")
            try:
                snapshot_id, mirrors = move.snapshot_id, None
                if planned:
                    step("freeze", lambda: _then_nothing(steps.freeze, access, client, source))
                    synced = step(
                        "final-sync", lambda: _final_sync(access, store, move, flow_run_id)
                    )
                    snapshot_id, mirrors = synced["snapshot_id"], synced["mirrors"]
                if not snapshot_id:
                    raise PermanentError(f"the plan names no snapshot to restore {client} from")
                restored = step(
                    "restore",
                    lambda: _restored(
                        steps.restore_client(access, move, snapshot_id, mirrors=mirrors)
                    ),
                )
                out.snapshot_id = snapshot_id
                out.source_mirror = restored.get("source_mirror")
                out.restored_bytes = restored.get("bytes")
                out.restore_seconds = restored.get("seconds")
                out.restored_files = restored.get("files")
                step(
                    "verify",
                    lambda: _verified(
                        checks.verify_restored(access, move, snapshot_id, mirrors=mirrors)
                    ),
                )
                if planned:  # the final sync captured the freeze marker; lift it there
                    step(
                        "unfreeze-target",
                        lambda: _then_nothing(steps.unfreeze, access, client, target),
                    )
                step("health-direct", lambda: _health(checks.app_health(fleet, client, target)))
            finally:
                slot.release()
            placed = step(
                "switch",
                lambda: {
                    "version": steps.switch(
                        store, move, expected_version, plan_id=plan_id, flow_run_id=flow_run_id
                    ).version
                },
            )
            log.info("%s now placed on %s (version %s)", client, target, placed["version"])
            step("route", lambda: {"receipt": _route(fleet_file, url, fleet, client, target)})
            healthy = step(
                "health-front-door",
                lambda: {
                    **_health(checks.app_health(fleet, client, target, front_door=True)),
                    "healthy_at": datetime.now(UTC).isoformat(),
                },
            )
            healthy_at = datetime.fromisoformat(healthy["healthy_at"])
            out.rto_seconds = max(0.0, (healthy_at - declared_at).total_seconds())
            out.rpo_seconds = steps.rpo_seconds(snapshot_id, declared_at)
            if acks_path is not None and acks_path.exists():
                from ppo_dr.lab.lost_writes import lost_on_new_home  # the lab's own measure

                lost = step(
                    "lost-writes",
                    lambda: {"lost": lost_on_new_home(access, client, target, acks_path)},
                )
                out.lost_writes = len(lost["lost"])
                if lost["lost"]:
                    log.warning("%s: %d acknowledged write(s) lost", client, len(lost["lost"]))
            out.outcome = "ok"
        except Exception as exc:
            out.detail = f"{type(exc).__name__}: {exc}"
            log.error("failover of %s failed, rolling back: %s", client, out.detail)
            out.rolled_back = _roll_back(access, store, move, plan_id, planned, flow_run_id)
            roll_back_steps(store, plan_id, client, out.detail)
        store.record_failover_result(
            plan_id,
            client,
            from_server=source,
            to_server=target,
            outcome="ok" if out.outcome == "ok" else "rolled-back",
            source_mirror=out.source_mirror,
            snapshot_id=out.snapshot_id,
            rto_seconds=out.rto_seconds,
            rpo_seconds=out.rpo_seconds,
            lost_writes=out.lost_writes,
            restored_bytes=out.restored_bytes,
            restored_files=out.restored_files,
            restore_seconds=out.restore_seconds,
            detail=out.detail or "; ".join(out.rolled_back),
            flow_run_id=flow_run_id,
        )
    return out


def _then_nothing(action: Callable[..., None], *args: Any) -> dict[str, Any]:
    action(*args)
    return {}


def _final_sync(
    access: FleetAccess, store: Store, move: ClientMove, flow_run_id: str | None
) -> dict[str, Any]:
    from ppo_dr.mirror.runbook import record_in_catalogue

    placements = {p.client_id: p.server_id for p in store.placements()}
    snapshot_id, mirrors, run = steps.final_sync(
        access, move.client_id, move.from_server, placements
    )
    record_in_catalogue(store, run, flow_run_id=flow_run_id)
    return {"snapshot_id": snapshot_id, "mirrors": mirrors}


def _restored(result: steps.Restored) -> dict[str, Any]:
    return {
        "snapshot_id": result.snapshot_id,
        "files": result.files,
        "bytes": result.bytes,
        "seconds": round(result.duration_s, 3),
        "source_mirror": result.source_mirror,
        "served_by": result.served_by,
    }


def _verified(result: checks.Verified) -> dict[str, Any]:
    return {"entries": result.entries, "files": result.files, "bytes": result.bytes}


def _health(result: checks.Health) -> dict[str, Any]:
    return {"url": result.url, "server": result.server, "seconds": round(result.seconds, 3)}


def _route(fleet_file: Path, url: str, fleet: Fleet, client: str, server_id: str) -> str:
    from ppo_dr.providers import provider_for

    dc = fleet.server(server_id).dc
    return provider_for(fleet, dc, fleet_file=fleet_file, store_url=url).route(client, server_id)


def _roll_back(
    access: FleetAccess,
    store: Store,
    move: ClientMove,
    plan_id: str,
    planned: bool,
    flow_run_id: str | None,
) -> list[str]:
    try:
        return steps.rollback(
            access, store, move, plan_id=plan_id, planned=planned, flow_run_id=flow_run_id
        )
    except DRError as exc:  # reported, never masks the failure that caused it
        return [f"rollback incomplete: {exc}"]


# --------------------------------------------------------------------------- after


#: Waits between seed attempts while the new home's repository is locked (a mirror
#: run of the new home, e.g. the every-minute schedule, holds it): about 3 minutes in
#: all, then the seed fails and the run says so.
SEED_LOCK_WAITS_S: list[float] = [5, 10, 15, 30, 30, 30, 60]


def _locked(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a seed only while a repository lock is held by someone else."""
    from ppo_dr.mirror.errors import RepositoryLocked

    try:
        state.result()
    except RepositoryLocked:
        return True
    except BaseException:
        return False
    return False


@task(
    name="seed-new-home",
    task_run_name="seed-{move.client_id}",
    cache_policy=NO_CACHE,
    timeout_seconds=3600,
    retries=len(SEED_LOCK_WAITS_S),
    retry_delay_seconds=SEED_LOCK_WAITS_S,
    retry_condition_fn=_locked,
)
def seed_new_home(
    fleet_file: Path, url: str, plan_id: str, move: ClientMove, flow_run_id: str | None
) -> dict[str, Any]:
    """Copy the restored snapshot into the new home's repositories (ledger step ``seed``)."""
    fleet = load_fleet(fleet_file)
    with _access(fleet) as access, Store.open(url) as store:
        restored = next(
            (s for s in store.failover_steps(plan_id, move.client_id) if s.step == "restore"),
            None,
        )
        if restored is None or not restored.done:
            raise PermanentError(f"{move.client_id} was not restored by plan {plan_id}")
        snapshot_id = str(restored.data["snapshot_id"])
        synced = next(
            (s for s in store.failover_steps(plan_id, move.client_id) if s.step == "final-sync"),
            None,
        )
        mirrors = synced.data.get("mirrors") if synced is not None else None

        def copy() -> dict[str, Any]:
            copies = steps.seed_new_home(access, move, snapshot_id, source_mirrors=mirrors)
            return {
                "copies": [
                    {"mirror": c.dest_mirror, "bytes": c.bytes_sent, "blobs": c.blobs_copied}
                    for c in copies
                ]
            }

        outcome = run_step(store, plan_id, move.client_id, "seed", copy, flow_run_id=flow_run_id)
    return outcome.data


@task(name="note-failover", cache_policy=NO_CACHE, timeout_seconds=60, **_RETRIES)
def note_timeline(
    url: str,
    incident_id: int,
    kind: str,
    message: str,
    flow_run_id: str | None,
    data: Mapping[str, Any] | None = None,
) -> None:
    """An entry on the incident's timeline, with this flow run's id."""
    with Store.open(url) as store:
        store.add_timeline(incident_id, kind, message, flow_run_id=flow_run_id, data=data)


@task(name="finish-failover", cache_policy=NO_CACHE, timeout_seconds=60, **_RETRIES)
def finish_failover(url: str, plan_id: str, state: str, detail: str) -> None:
    """Close the plan's ledger row: done, partial or failed."""
    with Store.open(url) as store:
        store.finish_failover(plan_id, state, detail)


@task(name="open-maintenance", cache_policy=NO_CACHE, timeout_seconds=60, **_RETRIES)
def open_maintenance(url: str, scope_kind: str, scope_id: str, reason: str) -> int:
    """Open a maintenance window on a server or DC (planned work does not page); its id."""
    with Store.open(url) as store:
        return store.start_maintenance(
            scope_kind, scope_id, reason=reason, created_by="failover"
        ).id


@task(name="close-maintenance", cache_policy=NO_CACHE, timeout_seconds=60, **_RETRIES)
def close_maintenance(url: str, window_id: int) -> None:
    """Close the maintenance window *window_id* now."""
    with Store.open(url) as store:
        store.end_maintenance(window_id)


def report_run_death(
    fleet_file: Path, incident_id: int, run_id: str, run_name: str, state: str, message: str
) -> int:
    """A dead failover run on its incident: timeline entry and page; the notices sent.

    Called from the flow's state hooks (not a task: the run is over); the hook logs
    whatever this raises, and the run's own state stays the record.
    """
    from ppo_dr.failover.death import record_failover_death
    from ppo_dr.mirror.runbook import store_url
    from tasks.escalation import incident_view

    fleet = load_fleet(fleet_file)
    with Store.open(store_url(fleet)) as store:
        _, view = incident_view(store, fleet, incident_id)
        results = record_failover_death(
            store,
            fleet,
            view,
            build_channels(fleet, secret_from_block),
            run_name=run_name,
            run_id=run_id,
            state=state,
            message=message,
        )
    return sum(1 for r in results if r.delivered)
