"""Tasks of the failover runbook: thin wrappers over :mod:`ppo_dr.failover`.

Before the clients: reachability, the plan, the ledger row, provisioning; after them:
seeding the new homes, the timeline, the ledger's end, maintenance windows, release.
The steps of one client are in :mod:`tasks.failover_client`. Networked tasks retry
transient errors only (:func:`tasks.retry_condition_fn`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ppo_dr.channels import build_channels
from ppo_dr.errors import AuthError, PermanentError
from ppo_dr.failover import steps
from ppo_dr.failover.ledger import (
    placement_versions,
    run_step,
    unreachable_servers,
)
from ppo_dr.failover.plan import ClientMove, Plan, ProvisionRequest, Scope, Target
from ppo_dr.fleet_access import FleetAccess
from ppo_dr.inventory import Fleet, load_fleet
from ppo_dr.providers.base import ProvisionedServer
from ppo_dr.store import Failover, Store
from tasks import io_task, secret_from_block

#: Per-step time limits (seconds); steps not named get STEP_TIMEOUT_S.
STEP_TIMEOUTS: dict[str, float] = {"restore": 4 * 3600, "verify": 2 * 3600, "seed": 3600}
STEP_TIMEOUT_S = 300.0


#: What a client's outcome and its result in the ledger both measure, by the same names.
MEASURES: tuple[str, ...] = (
    "source_mirror",
    "snapshot_id",
    "rto_seconds",
    "rpo_seconds",
    "restored_bytes",
    "restored_files",
    "restore_seconds",
)


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
    detail: str = ""
    skipped_steps: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)

    @classmethod
    def not_moved(cls, move: ClientMove, detail: str) -> ClientOutcome:
        """A client whose move did not happen (or did not report), and why."""
        return cls(move.client_id, move.from_server, move.to_server, "failed", detail=detail)


# --------------------------------------------------------------------------- before


@task(name="observe-reachability", cache_policy=NO_CACHE, timeout_seconds=120)
def observe_reachability(fleet: Fleet) -> dict[str, str]:
    """Servers that do not answer SSH now (id -> why): the planner treats them as down."""
    down = unreachable_servers(fleet)
    log = get_run_logger()
    for server, why in down.items():
        log.warning("server %s unreachable: %s", server, why)
    return down


@task(name="plan-failover", **io_task(120))
def make_plan(fleet_file: Path, scope: Scope, target: Target, mode: str, down: list[str]) -> Plan:
    """Plan from the fleet, the store's placements and catalogue, and what is down."""
    from ppo_dr.failover.fleet_state import fleet_state
    from ppo_dr.failover.plan import plan_failover

    state = fleet_state(fleet_file, tuple(down), datetime.now(UTC))
    return plan_failover(state, scope, target, "planned" if mode == "planned" else "emergency")


@task(name="plan-begun-by-run", **io_task(60))
def plan_begun_by_run(url: str, flow_run_id: str, incident_id: int | None) -> Plan | None:
    """The plan this very flow run began before it crashed, or None (a first run).

    A rerun after a crash carries out that plan, not a new one made from a fleet it
    half changed (clients already switched would be planned again)."""
    with Store.open(url) as store:
        begun = [
            f for f in store.failovers(incident_id=incident_id) if f.flow_run_id == flow_run_id
        ]
    if not begun:
        return None
    return Plan.from_json(json.dumps(begun[0].plan))


@task(name="begin-failover", **io_task(60))
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
    **io_task(900),
)
def provision(fleet_file: Path, url: str, request: ProvisionRequest) -> dict[str, Any]:
    """Provision one planned server (idempotent by its id: a rerun finds it)."""
    made = provision_server(fleet_file, url, request)
    return {"server": made.server.id, "provider": made.provider, "created": made.created}


def provision_server(fleet_file: Path, url: str, request: ProvisionRequest) -> ProvisionedServer:
    """*request* from the provider of its DC, logged (a failover's server, a drill's
    scratch server; idempotent by the request's server id)."""
    from ppo_dr.providers import provider_for

    fleet = load_fleet(fleet_file)
    made = provider_for(fleet, request.dc, fleet_file=fleet_file, store_url=url).provision(request)
    get_run_logger().info(
        "%s in %s: %s %s by the %s provider", request.server_id, request.dc,
        "created" if made.created else "found again", made.server.id, made.provider,
    )  # fmt: skip
    return made


@task(
    name="release-server",
    task_run_name="release-{server_id}",
    **io_task(600),
)
def release(fleet_file: Path, url: str, server_id: str, dc: str) -> None:
    """Give a provisioned server back to its provider (gone already is fine): a failover's
    server no client ended up on, a drill's scratch server."""
    from ppo_dr.providers import provider_for

    fleet = load_fleet(fleet_file)
    provider_for(fleet, dc, fleet_file=fleet_file, store_url=url).release(server_id)


# --------------------------------------------------------------------------- access


def open_fleet_access(fleet: Fleet) -> FleetAccess:
    """SSH access to *fleet*, its key and other secrets read from Prefect blocks."""
    ref = fleet.access.key_secret
    key_text = None
    if ref is not None and ref.block is not None:
        try:
            key_text = secret_from_block(ref.block)
        except PermanentError as exc:
            raise AuthError(f"access.key_secret: {exc}") from exc
    return FleetAccess(fleet, key_text=key_text, secret_resolver=secret_from_block)


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
    with open_fleet_access(fleet) as access, Store.open(url) as store:
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


@task(name="note-failover", **io_task(60))
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


@task(name="finish-failover", **io_task(60))
def finish_failover(url: str, plan_id: str, state: str, detail: str) -> None:
    """Close the plan's ledger row: done, partial or failed."""
    with Store.open(url) as store:
        store.finish_failover(plan_id, state, detail)


@task(name="open-maintenance", **io_task(60))
def open_maintenance(url: str, scope_kind: str, scope_id: str, reason: str) -> int:
    """Open a maintenance window on a server or DC (planned work does not page); its id."""
    with Store.open(url) as store:
        return store.start_maintenance(
            scope_kind, scope_id, reason=reason, created_by="failover"
        ).id


@task(name="close-maintenance", **io_task(60))
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
